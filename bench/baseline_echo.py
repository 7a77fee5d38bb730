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

import grpc
from grpc import aio

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


async def _serve(port: int) -> None:
    server = aio.server()
    server.add_generic_rpc_handlers((_handler(),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(bound, flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    asyncio.run(_serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
