"""Server reflection, v1alpha and v1, so that grpcurl and other tools can list the services."""

from __future__ import annotations

import grpc
from grpc import aio
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection, reflection_pb2

from woolly_grpc.api import SERVICE_NAME

_REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def add_reflection(server: aio.Server) -> None:
    """Describe our service, health and reflection itself, on reflection v1alpha and v1."""
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    # grpcio-reflection ships only v1alpha; v1 has the same messages on another path, and
    # current grpcurl asks v1 first.
    v1 = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        v1.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_REFLECTION_V1, {"ServerReflectionInfo": handler}),)
    )
