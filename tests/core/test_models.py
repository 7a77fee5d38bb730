"""Models by spec, without a server: what is built once, and what runs may name."""

from __future__ import annotations

from pydantic_ai.providers.openai import OpenAIProvider

from woolly_grpc.core import LOCAL, AgentType, Models


def nowhere(_name: str) -> OpenAIProvider:
    return OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key="unused")


def test_a_spec_in_two_roles_is_one_model_with_one_health() -> None:
    models = Models(
        "openai-chat:a",
        allowed=["openai-chat:b", LOCAL],
        fallbacks=["openai-chat:b"],
        provider_factory=nowhere,
    )

    assert models.specs == ("openai-chat:a", "openai-chat:b", LOCAL)
    assert len(models._providers) == 2, "b serves as a fallback and as a saved agent's model"
    assert set(models.health) == {"openai-chat:a", "openai-chat:b", LOCAL}
    assert models.get(LOCAL, AgentType.SUMMARIZER).model_name == "local"


def test_the_offline_engine_by_default_builds_no_provider() -> None:
    models = Models()

    assert models.specs == (LOCAL,) and models._providers == []
