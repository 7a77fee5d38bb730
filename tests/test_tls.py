"""TLS and mutual TLS on the one port, with certificates the test makes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import grpc
import pytest
from grpc import aio
from pydantic import SecretStr

from tests.support.certs import Certificates, make_certificates
from tests.support.cli import CLI, run_cli
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.client import WoollyClient
from woolly_grpc.config import Settings
from woolly_grpc.server import StartupError, build
from woolly_grpc.testing import running_server

LIST = agent_service_pb2.ListAgentTypesRequest()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def tls_settings(settings: Settings, certs: Certificates, **more) -> Settings:
    update = {"tls_cert": certs.server_cert, "tls_key": certs.server_key, **more}
    return settings.model_copy(update=update)


async def test_tls_clients_with_the_ca_get_in_plaintext_ones_do_not(
    settings: Settings, certs: Certificates
) -> None:
    async with running_server(tls_settings(settings, certs)) as srv:
        async with WoollyClient(srv.target, tls_ca=certs.ca) as client:
            types = await client.agent_types()
        async with aio.insecure_channel(srv.target) as plaintext:
            with pytest.raises(aio.AioRpcError) as caught:
                await AgentServiceStub(plaintext).ListAgentTypes(LIST, timeout=5)

    assert len(types) == 6
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate(
    settings: Settings, certs: Certificates
) -> None:
    mutual = tls_settings(
        settings, certs, tls_client_ca=certs.ca, api_keys=SecretStr("ops:k-ops-51f0e2")
    )
    async with running_server(mutual) as srv:
        async with WoollyClient(srv.target, tls_ca=certs.ca, api_key="k-ops-51f0e2") as anonymous:
            with pytest.raises(aio.AioRpcError) as caught:
                await anonymous.agent_types()
        async with WoollyClient(
            srv.target,
            tls_ca=certs.ca,
            tls_cert=certs.client_cert,
            tls_key=certs.client_key,
            api_key="k-ops-51f0e2",
        ) as client:
            types = await client.agent_types()
            events = [m async for m in client.stream("calculator", "summarizer", "what is it?")]
        tls = [f"--tls-ca={certs.ca}", f"--tls-cert={certs.client_cert}"]
        tls.append(f"--tls-key={certs.client_key}")
        code, out, err = await run_cli(
            "--target", srv.target, *tls, "--api-key", "k-ops-51f0e2", "types"
        )

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(types) == 6
    assert events[-1].WhichOneof("event") == "completed"
    assert code == 0 and out.startswith("simplifier"), err


def test_a_key_that_does_not_match_its_certificate_stops_start_up(
    settings: Settings, certs: Certificates
) -> None:
    mismatched = settings.model_copy(
        update={"tls_cert": certs.server_cert, "tls_key": certs.other_key}
    )
    with pytest.raises(StartupError, match="cannot use the TLS certificate and key") as caught:
        build(mismatched)
    assert "\n" not in str(caught.value)

    missing = settings.model_copy(update={"tls_cert": Path("/nope.pem"), "tls_key": Path("/k")})
    with pytest.raises(StartupError, match="No such file"):
        build(missing)


async def test_serve_refuses_half_a_pair_in_one_line(certs: Certificates) -> None:
    code, _, err = await run_cli("serve", "--tls-cert", str(certs.server_cert))

    assert code == 2
    assert err.strip().count("\n") == 0
    assert "WOOLLY_TLS_CERT and WOOLLY_TLS_KEY must be given together" in err


async def test_serve_takes_its_certificate_from_the_environment(
    certs: Certificates, repos_root: Path, tmp_path: Path
) -> None:
    """`woolly-grpc serve` with WOOLLY_TLS_CERT/KEY in its environment speaks TLS; the CLI's own
    TLS flags (client side) never override them."""
    env = {
        **os.environ,
        "WOOLLY_TLS_CERT": str(certs.server_cert),
        "WOOLLY_TLS_KEY": str(certs.server_key),
    }
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *("serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"),
        *("--repos-root", str(repos_root), "--database-url", f"sqlite:///{tmp_path / 'a.db'}"),
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stderr is not None
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
            assert line, "serve exited before it was serving"
            if found := re.search(r"serving .* on 127\.0\.0\.1:(\d+)", line):
                port = int(found.group(1))
        target = ("--target", f"127.0.0.1:{port}")
        secure = await run_cli("types", *target, "--tls-ca", str(certs.ca))
        plain = await run_cli("types", *target)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)

    assert secure[0] == 0 and "summarizer" in secure[1], secure[2]
    assert plain[0] == 1 and "UNAVAILABLE" in plain[2]
