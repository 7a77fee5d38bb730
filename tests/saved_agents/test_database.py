"""The saved-agents database: definitions outlive the server; a bad one stops start-up."""

from __future__ import annotations

import pytest

from tests.helpers import free_port
from tests.saved_agents.helpers import create, get
from tests.support.cli import run_cli
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.config import Settings
from woolly_grpc.server import StartupError, build
from woolly_grpc.testing import running_server


async def test_definitions_survive_a_restart(agent_settings: Settings) -> None:
    async with running_server(agent_settings) as first:
        created = await create(first, system_prompt="Remember me.", tools=["list_files"])

    async with running_server(agent_settings) as second:
        assert await get(second, created.id) == created
        request = agent_service_pb2.ExecuteRequest(
            repository_name="calculator", agent_id=created.id, user_query="what is it?"
        )
        response = await second.stub.Execute(request, timeout=30)
        assert response.result.agent_id == created.id


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://woolly@db/woolly", "WOOLLY_DATABASE_URL (--database-url): Value error"),
        ("sqlite:////no/such/directory/woolly.db", "unable to open database file"),
        (
            f"postgresql://woolly:s3cret@127.0.0.1:{free_port()}/woolly",
            "cannot open the saved-agents database: postgresql+asyncpg://woolly:***@127.0.0.1",
        ),
    ],
    ids=["unsupported", "sqlite-missing-directory", "postgresql-unreachable"],
)
async def test_a_bad_database_stops_start_up_with_one_line(url: str, said: str) -> None:
    code, _, err = await run_cli(
        *("serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"),
        *("--database-url", url),
    )

    assert code == 2
    assert err.strip().count("\n") == 0, err
    assert said in err
    assert "s3cret" not in err


def test_an_unparsable_url_is_a_startup_error(settings: Settings) -> None:
    with pytest.raises(StartupError, match="WOOLLY_DATABASE_URL: not a database URL"):
        build(settings.model_copy(update={"database_url": "sqlite:garbage"}))
