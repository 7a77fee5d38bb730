"""The container and Kubernetes files: what can be checked without a Docker engine or a cluster.

There is no Docker engine here, so the image is never built in the tests. `make lint` runs
hadolint on the Dockerfile and kubernetes-validate (offline schemas) on deploy/k8s; these tests
check that the commands the image runs work with the package as installed, and that the
manifests agree with the code (every setting they set exists, the grace periods add up).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import free_port
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer

ROOT = Path(__file__).parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
K8S = ROOT / "deploy" / "k8s"
VENV_BIN = Path(sys.executable).parent


def instruction(name: str) -> list[str]:
    """The JSON (exec-form) arguments of the Dockerfile's last `name` instruction."""
    joined = DOCKERFILE.replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(.*)$", joined, flags=re.MULTILINE)
    assert found, f"no {name} in the Dockerfile"
    text = found[-1]
    if name == "HEALTHCHECK":
        text = text[text.index("CMD") + 3 :]
    args = json.loads(text)
    assert isinstance(args, list), f"{name} must be exec form"
    return [str(a) for a in args]


async def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


async def test_the_image_healthcheck_asks_the_grpc_health_service(server: RunningServer) -> None:
    probe = instruction("HEALTHCHECK")
    assert probe[0] == "python"
    argv = [sys.executable, *probe[1:]]

    assert await run(argv, env={"WOOLLY_PORT": str(server.app.port)}) == 0
    assert await run(argv, env={"WOOLLY_PORT": str(free_port())}) != 0


async def test_the_entrypoint_is_the_console_script_in_exec_form() -> None:
    entrypoint = instruction("ENTRYPOINT")
    assert entrypoint == ["woolly-grpc", "serve"]
    assert await run([str(VENV_BIN / entrypoint[0]), *entrypoint[1:], "--help"]) == 0
    final_stage = DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]
    assert re.search(r"^USER 10001", final_stage, flags=re.MULTILINE), "non-root"
    assert "pip install" not in final_stage and "apt-get" not in final_stage


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_every_setting_the_manifests_give_exists() -> None:
    docs = manifests()
    given = {
        **docs["ConfigMap", "woolly-grpc"]["data"],
        **docs["Secret", "woolly-grpc"]["stringData"],
    }
    settings = {k.removeprefix("WOOLLY_").lower() for k in given if k.startswith("WOOLLY_")}
    assert settings and settings <= set(Settings.model_fields), settings - set(
        Settings.model_fields
    )


def test_grace_periods_add_up_and_probes_ask_grpc_health() -> None:
    docs = manifests()
    pod = docs["Deployment", "woolly-grpc"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    shutdown_grace = float(docs["ConfigMap", "woolly-grpc"]["data"]["WOOLLY_SHUTDOWN_GRACE_S"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]

    assert pod["terminationGracePeriodSeconds"] >= pre_stop + shutdown_grace + 5
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == 50051
    assert container["readinessProbe"]["grpc"]["service"] == "woolly.v1.AgentService"
    assert docs["PodDisruptionBudget", "woolly-grpc"]["spec"]["minAvailable"] >= 1
    assert docs["HorizontalPodAutoscaler", "woolly-grpc"]["spec"]["minReplicas"] >= 2
    redis_url = docs["ConfigMap", "woolly-grpc"]["data"]["WOOLLY_CACHE_URL"]
    assert redis_url.startswith(f"redis://{docs['Service', 'woolly-redis']['metadata']['name']}:")
