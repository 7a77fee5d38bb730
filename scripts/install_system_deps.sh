#!/usr/bin/env bash
# System packages the project needs that pip cannot provide. Installs only what is missing.
set -euo pipefail
missing=()
command -v npm >/dev/null || missing+=(nodejs npm)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
command -v redis-server >/dev/null || missing+=(redis-server)  # the tests start their own
command -v redis-cli >/dev/null || missing+=(redis-tools)  # it joins the tests' Redis Cluster
command -v promtool >/dev/null || missing+=(prometheus)  # promtool checks deploy/prometheus rules
# PostgreSQL for the saved-agent tests, which initdb and start their own server. Debian keeps
# initdb and pg_ctl off PATH, in /usr/lib/postgresql/<version>/bin.
command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null \
  || missing+=(postgresql)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing system packages: ${missing[*]} (install them, or run this as root)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
