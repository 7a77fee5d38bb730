"""A bare grpc.aio echo server, no woolly code and no codegen: the floor the woolly numbers sit on.

Run as its own process (`python -m bench.baseline_echo --port 0`); it prints its bound port on
stdout, then serves until killed. Messages are raw bytes (identity serializers):

- `/bench.Echo/Unary` returns the request unchanged;
- `/bench.Echo/Stream` takes `stream_request(count, size)`, sends `count` messages of `size` bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc import aio

from bench._common import profile_until_sigterm

SERVICE = "bench.Echo"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"
_STREAM_REQUEST = struct.Struct("!II")


def stream_request(count: int, size: int) -> bytes:
    """The request of `Stream`: send `count` messages of `size` bytes each."""
    return _STREAM_REQUEST.pack(count, size)


async def _unary(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _stream(
    request: bytes, context: aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    count, size = _STREAM_REQUEST.unpack(request)
    payload = b"x" * size
    for _ in range(count):
        yield payload


def _handler() -> grpc.GenericRpcHandler:
    # No (de)serializers: grpc passes bytes through unchanged.
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        },
    )


async def _serve(port: int, profile: Path | None) -> None:
    server = aio.server()
    server.add_generic_rpc_handlers((_handler(),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(bound, flush=True)
    if profile is None:
        await server.wait_for_termination()
    else:
        await profile_until_sigterm(profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--profile", type=Path, help="cProfile until SIGTERM, stats to this file")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.profile))


if __name__ == "__main__":
    main()
