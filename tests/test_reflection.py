"""Server reflection (v1alpha and v1) lets grpcurl list and describe with no .proto at hand."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from woolly_grpc.testing import RunningServer

PATHS = {
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
}


async def reflect(
    server: RunningServer, path: str, request
) -> reflection_pb2.ServerReflectionResponse:
    # v1 and v1alpha messages are the same on the wire, so v1alpha's classes serve both paths.
    call = server.channel.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )(iter([request]), timeout=5)
    responses = [r async for r in call]
    assert len(responses) == 1
    return responses[0]


@pytest.mark.parametrize("version", PATHS)
async def test_list_services(server: RunningServer, version: str) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    response = await reflect(server, PATHS[version], request)

    names = {s.name for s in response.list_services_response.service}
    assert {"woolly.v1.AgentService", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize("version", PATHS)
async def test_describe_the_service(server: RunningServer, version: str) -> None:
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="woolly.v1.AgentService"
    )

    response = await reflect(server, PATHS[version], request)

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    service = next(s for f in files for s in f.service if s.name == "AgentService")
    assert {m.name for m in service.method} >= {
        "Execute",
        "StreamExecute",
        "ExecuteChain",
        "WatchRun",
    }
