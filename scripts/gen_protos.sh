#!/usr/bin/env bash
# Generate woolly_grpc/_gen from protos/ (messages, async gRPC stubs, .pyi types).
# protoc names imports after the .proto path (`from woolly.v1 import ...`); the sed rewrites them
# into our package. With --check, generate into a temp dir and fail if the committed code differs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=woolly_grpc/_gen
if [[ "${1:-}" == "--check" ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
find "$out" \( -name '*_pb2*.py' -o -name '*_pb2*.pyi' \) -delete 2>/dev/null || true
python -m grpc_tools.protoc -I protos \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out=quiet:"$out" --mypy_grpc_out=only_async,quiet:"$out" \
  $(find protos -name '*.proto' | sort)
find "$out" -type d -exec touch {}/__init__.py \;
find "$out" \( -name '*.py' -o -name '*.pyi' \) -exec \
  sed -i -E 's/^(from|import) woolly\./\1 woolly_grpc._gen.woolly./' {} +
if [[ "${1:-}" == "--check" ]]; then
  if ! diff -r -q -x __pycache__ "$out" woolly_grpc/_gen; then
    echo "woolly_grpc/_gen is stale: run 'make proto' and commit the result" >&2
    exit 1
  fi
fi
