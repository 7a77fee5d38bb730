"""The models runs use, by spec: the offline engine, or a provider's, retried by the service.

A spec is `local` or a pydantic-ai model name (`openai-chat:NAME`, `openai:NAME`, …). Provider
models are built once at start-up (a missing key or SDK stops start-up, not the first call).
Each is served as `RetryingModel(FallbackModel(model, *fallbacks))`: a model that fails hands
over to the next at once, and the service retries (with backoff) only once every one failed.
The SDKs' own retries are turned off: they would wait unseen and uncounted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from pydantic_ai import RunContext
from pydantic_ai import exceptions as ai
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse, infer_model
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.providers import Provider, infer_provider
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from .exceptions import Unavailable
from .failures import falls_back, retry_reason
from .local import local_model
from .types import AgentType

_log = logging.getLogger(__name__)

LOCAL = "local"
"""The spec of the offline engine."""
BACKOFF_S = 0.5
"""The first wait before retrying a provider that gave no Retry-After; it doubles each time."""

RetryObserver = Callable[[str], None]
"""Told the reason of every retry (`rate_limited`, `server_error`, …), e.g. to count it."""
ProviderFactory = Callable[[str], Provider[Any]]
"""Builds a provider from its name (`openai`, …); pydantic-ai's reads `OPENAI_BASE_URL` etc."""


@dataclass(frozen=True)
class RetryPolicy:
    """How the service retries a model request that failed in a way that may pass."""

    retries: int = 2
    """Retries after the first attempt (0 = none)."""
    max_wait_s: float = 10.0
    """Longest wait before one retry; a provider asking for longer gets no retry."""
    observe: RetryObserver | None = None


class RetryingModel(WrapperModel):
    """Retries a failed request with backoff, honouring Retry-After, within the run's deadline.

    Only a request that failed before its response was handed over is retried: once a stream
    has started, whatever it produced may have reached callers, so its failure stands.
    """

    def __init__(self, wrapped: Model, policy: RetryPolicy) -> None:
        super().__init__(wrapped)
        self.policy = policy

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """One response, after as many retries as the policy allows."""
        settings = _without_sdk_retries(model_settings)
        attempt = 0
        while True:
            try:
                return await self.wrapped.request(messages, settings, model_request_parameters)
            except (ai.ModelAPIError, ai.FallbackExceptionGroup) as exc:
                if not await self._pause(exc, attempt, None):
                    raise
            attempt += 1

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        """The response stream, once a request opened one (retrying those that could not)."""
        settings = _without_sdk_retries(model_settings)
        deadline = getattr(run_context.deps, "deadline", None) if run_context else None
        async with AsyncExitStack() as stack:
            attempt = 0
            while True:
                opened = self.wrapped.request_stream(
                    messages, settings, model_request_parameters, run_context
                )
                try:
                    stream = await stack.enter_async_context(opened)
                    break
                except (ai.ModelAPIError, ai.FallbackExceptionGroup) as exc:
                    if not await self._pause(exc, attempt, deadline):
                        raise
                attempt += 1
            yield stream

    async def _pause(
        self,
        exc: ai.ModelAPIError | ai.FallbackExceptionGroup,
        attempt: int,
        deadline: float | None,
    ) -> bool:
        """Wait before the next attempt and return True, or return False: give up now."""
        reason, retry_after = _retryable(exc)
        if reason is None or attempt >= self.policy.retries:
            return False
        if retry_after is not None:
            wait = retry_after
        else:  # full jitter keeps many runs that failed together from retrying together
            wait = random.uniform(0.5, 1.0) * min(BACKOFF_S * 2**attempt, self.policy.max_wait_s)
        if wait > self.policy.max_wait_s:
            return False  # the caller learns the provider's wait (RetryInfo) instead
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() + wait >= deadline:
            return False
        _log.warning(
            "model %s failed (%s); retry %d of %d in %.2f s",
            self.model_name,
            reason,
            attempt + 1,
            self.policy.retries,
            wait,
        )
        if self.policy.observe is not None:
            self.policy.observe(reason)
        await asyncio.sleep(wait)
        return True


def _public_url(model: Model) -> str:
    """The provider's base URL without credentials or query (they may carry a key)."""
    url = getattr(model, "base_url", None) or ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) if url else ""


def _retryable(exc: BaseException) -> tuple[str | None, float | None]:
    """Why a retry may help (None: it will not), and how long the provider asked to wait.

    A fallback group is retried if any of its models failed in a way that may pass, after the
    longest wait any of them asked for.
    """
    errors = list(exc.exceptions) if isinstance(exc, ai.FallbackExceptionGroup) else [exc]
    retryable = [e for e in errors if retry_reason(e) is not None]
    if not retryable:
        return None, None
    waits = [w for e in retryable if (w := getattr(e, "retry_after", None)) is not None]
    return retry_reason(retryable[-1]), max(waits) if waits else None


def _without_sdk_retries(settings: ModelSettings | None) -> ModelSettings:
    # The provider SDK's own retries would wait unseen and uncounted (the OpenAI SDK honours
    # Retry-After up to two minutes): this model owns retrying.
    return {**(settings or {}), "max_retries": 0}


@dataclass
class ModelHealth:
    """What the calls this server made say about one model (for the status report)."""

    spec: str
    base_url: str = ""
    """Where its provider is, without credentials or query; empty for the offline engine."""
    last_success: float | None = None
    """Wall-clock time of the last request that succeeded."""
    last_failure: float | None = None
    last_failure_kind: str = ""
    """`rate_limited`, `server_error`, `connection`, … (see `failures.retry_reason`), `quota` or
    `refused`."""


class WatchedModel(WrapperModel):
    """Notes the outcome of every request to one provider model in its `ModelHealth`."""

    def __init__(self, wrapped: Model, health: ModelHealth) -> None:
        super().__init__(wrapped)
        self.health = health

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """The wrapped model's response, its outcome noted."""
        try:
            response = await self.wrapped.request(
                messages, model_settings, model_request_parameters
            )
        except ai.ModelAPIError as exc:
            self._failed(exc)
            raise
        self.health.last_success = time.time()
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        """The wrapped model's stream, its outcome (once read to its end) noted."""
        try:
            async with self.wrapped.request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as stream:
                yield stream
        except ai.ModelAPIError as exc:
            self._failed(exc)
            raise
        self.health.last_success = time.time()

    def _failed(self, exc: ai.ModelAPIError) -> None:
        self.health.last_failure = time.time()
        if (reason := retry_reason(exc)) is not None:
            self.health.last_failure_kind = reason
        elif isinstance(exc, ai.ModelQuotaExceededError):
            self.health.last_failure_kind = "quota"
        else:
            self.health.last_failure_kind = "refused"


class Models:
    """Every model this server may run, built once, by spec.

    Args:
        default: The server's model (`WOOLLY_MODEL`), or a Model instance (tests).
        allowed: Further specs runs may name (`WOOLLY_MODELS`; saved agents' models).
        fallbacks: Specs tried in order when a provider model fails in a way that may pass.
        retry: How provider models are retried.
        provider_factory: Builds providers by name (pydantic-ai's by default, from the
            environment); tests point it at a server of their own.

    Raises:
        ValueError: a spec cannot be used (an unknown provider, a missing key or SDK); the
            message names it.
    """

    def __init__(
        self,
        default: str | Model = LOCAL,
        *,
        allowed: Iterable[str] = (),
        fallbacks: Iterable[str] = (),
        retry: RetryPolicy | None = None,
        provider_factory: ProviderFactory = infer_provider,
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._factory = provider_factory
        self._local = {t: local_model(t) for t in AgentType}
        self.names: dict[str, str] = {}
        """Each provider model's own name (what errors and responses report) → its spec."""
        self._providers: list[Model] = []
        self._local_allowed = False
        self._open = AsyncExitStack()
        self.health: dict[str, ModelHealth] = {}
        """Every spec runs may use (fallbacks included) → what calls said of it."""
        self._watched: dict[str, WatchedModel] = {}
        """Each provider spec's one model, whatever role (served, fallback) it plays."""
        self._fallbacks = [self._provider_model(spec) for spec in dict.fromkeys(fallbacks)]
        if isinstance(default, Model):
            self.default = default.model_name
            self.health[self.default] = ModelHealth(self.default)
            self._built: dict[str, Model] = {self.default: self._served(default)}
        else:
            self.default = default
            self._built = {}
        if self.default == LOCAL:
            self.health[LOCAL] = ModelHealth(LOCAL)
        for spec in dict.fromkeys([self.default, *allowed]):
            self._build(spec)

    @property
    def specs(self) -> tuple[str, ...]:
        """Every spec runs may name (the default first)."""
        others = [s for s in self._built if s != self.default]
        if self._local_allowed and self.default != LOCAL:
            others.append(LOCAL)
        return (self.default, *others)

    def get(self, spec: str, agent_type: AgentType) -> Model:
        """The model for `spec` (`""` = the default), as an agent of `agent_type` uses it.

        Raises:
            KeyError: `spec` is not one this server was configured with.
        """
        spec = spec or self.default
        if spec == LOCAL:
            return self._local[agent_type]
        return self._built[spec]

    async def open(self) -> None:
        """Enter every provider model: one HTTP connection pool each, for the server's life."""
        for model in self._providers:
            await self._open.enter_async_context(model)

    async def close(self) -> None:
        """Close the providers' HTTP clients."""
        await self._open.aclose()

    async def probe(self, spec: str) -> float | None:
        """Ask the model's provider for its model list; seconds it took, None if it cannot be.

        Only OpenAI-compatible providers have such a cheap question (`GET /models`).

        Raises:
            Unavailable: the provider answered with an error (`HTTP 401`…) or not at all; the
                message is that short label (a provider's own words may quote a key).
        """
        health = self.health.get(spec)
        model = next((m for m in self._providers if self.names[m.model_name] == spec), None)
        if health is None or model is None or not isinstance(model.provider, OpenAIProvider):
            return None
        began = time.perf_counter()
        try:
            await model.provider.client.models.list()
        except openai.APIStatusError as exc:
            raise Unavailable(f"HTTP {exc.status_code}") from None
        except openai.APIError as exc:  # connection refused, timed out, unreadable answer
            raise Unavailable(type(exc).__name__) from None
        return time.perf_counter() - began

    def spec_of(self, model_name: str) -> str:
        """The spec of a provider model by the name it reports (itself when unknown)."""
        return self.names.get(model_name, model_name)

    def _build(self, spec: str) -> None:
        if spec == LOCAL:
            self._local_allowed = True
            self.health.setdefault(LOCAL, ModelHealth(LOCAL))
        elif spec not in self._built:
            self._built[spec] = self._served(self._provider_model(spec))

    def _provider_model(self, spec: str) -> WatchedModel:
        if (built := self._watched.get(spec)) is not None:
            return built
        try:
            model = infer_model(spec, provider_factory=self._factory)
        except (ai.UserError, ImportError, ValueError) as exc:
            # pydantic-ai's first sentence says what is missing; the rest is advice to developers.
            said = str(exc).strip().split(". ")[0].rstrip(".")
            raise ValueError(f"cannot use model {spec!r}: {said}") from exc
        self.names[model.model_name] = spec
        self._providers.append(model)
        health = self.health[spec] = ModelHealth(spec, _public_url(model))
        watched = self._watched[spec] = WatchedModel(model, health)
        return watched

    def _served(self, model: Model) -> Model:
        others = [m for m in self._fallbacks if m is not model and m.model_name != model.model_name]
        chain = FallbackModel(model, *others, fallback_on=falls_back) if others else model
        return RetryingModel(chain, self._retry)
