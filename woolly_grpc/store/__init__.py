"""Stores: where the result cache, run event logs and cross-replica notifications live."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from .base import Store, StoreError
from .memory import DEFAULT_MAX_BYTES, MemoryStore
from .redis import CLUSTER_SCHEMES, DEFAULT_COOLDOWN_S, DEFAULT_OP_TIMEOUT_S, RedisStore

__all__ = ["MemoryStore", "RedisStore", "Store", "StoreError", "open_store"]

_USAGE = "use memory://, redis://host:port/db or redis+cluster://host:port,host:port"
_T = TypeVar("_T", int, float)


def open_store(url: str) -> Store:
    """The Store `url` names; nothing is connected until the first operation.

    - `memory://`, optionally `?max_bytes=N`: a MemoryStore (one replica).
    - `redis://[[user]:password@]host:port/db` or `rediss://…`, optionally `?op_timeout_s=S`
      and `&cooldown_s=S`: a RedisStore; other query options go to redis-py.
    - `redis+cluster://[[user]:password@]host:port[,host:port…]` or `rediss+cluster://…`, the
      same options: a RedisStore on a Redis Cluster.

    Raises:
        ValueError: Another scheme, or an option that is unknown or not a number.
    """
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.scheme == "memory":
        max_bytes = _pop(options, "max_bytes", int, DEFAULT_MAX_BYTES)
        if options:
            raise ValueError(f"unknown memory:// option(s) {', '.join(sorted(options))}; {_USAGE}")
        return MemoryStore(max_bytes=max_bytes)
    if parts.scheme in ("redis", "rediss", *CLUSTER_SCHEMES):
        op_timeout_s = _pop(options, "op_timeout_s", float, DEFAULT_OP_TIMEOUT_S)
        cooldown_s = _pop(options, "cooldown_s", float, DEFAULT_COOLDOWN_S)
        return RedisStore(
            parts._replace(query=urlencode(options)).geturl(),
            op_timeout_s=op_timeout_s,
            cooldown_s=cooldown_s,
        )
    raise ValueError(f"unsupported cache URL scheme {parts.scheme + '://'!r}; {_USAGE}")


def _pop(options: dict[str, str], name: str, convert: Callable[[str], _T], default: _T) -> _T:
    if name not in options:
        return default
    value = options.pop(name)
    try:
        return convert(value)
    except ValueError:
        kind = "an integer" if convert is int else "a number"
        raise ValueError(f"{name} must be {kind}, not {value!r}") from None
