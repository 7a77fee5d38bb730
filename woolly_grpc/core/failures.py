"""pydantic-ai's and the model provider's errors → the core's tree, with readable messages.

A caller reads the message in a gRPC status, so it says what failed and whether to retry, in one
or two sentences naming the provider, the model and the cause: never a provider's raw error body
(it can quote the server's own key, partly masked), a URL, or pydantic-ai's advice to developers.

`retry_reason` is the one answer to "may trying again help?": the retrying model, the fallback
model and the error mapping all ask it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import httpx2
from pydantic_ai import exceptions as ai

from .exceptions import (
    FailedPrecondition,
    InvalidInput,
    LimitExceeded,
    ModelFailed,
    QuotaExhausted,
    Unavailable,
    WoollyError,
)
from .types import Limits

_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (ai.ModelRateLimitError, "rate_limited"),
    (ai.ModelOverloadedError, "overloaded"),
    (ai.ModelUnavailableError, "unavailable"),
    (ai.ModelServerError, "server_error"),
    (ai.ModelTimeoutError, "timeout"),
    (ai.ModelRequestTimeout, "timeout"),
    (ai.ModelConnectionError, "connection"),
)
"""Retryable provider failures, most specific first, with their `agent_model_retries_total`
reason. Anything else is retryable only as a bare HTTP 408/409/425/429/5xx, or as a response
that could not be read (`malformed`)."""
_RETRYABLE_HTTP = frozenset({408, 409, 425, 429})
_NOT_RETRYABLE = (ai.ModelQuotaExceededError, ai.ModelRequestRejectedError)
_MCP_CONNECT_FAILED = "Client failed to connect"
_SCRUBBED = (
    (re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE), "<url>"),
    (re.compile(r"\b(?:sk|pk|rk|key)-[\w*.-]{3,}"), "<key>"),
    (re.compile(r"\borg-[A-Za-z0-9]+"), "<organization>"),
    (re.compile(r"\[[0-9a-fA-F:]+\](?::\d+)?"), "<address>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<address>"),
    (re.compile(r"\b[a-zA-Z][\w.-]*\.[a-zA-Z][\w-]*:\d{2,5}\b"), "<address>"),
)
"""What providers' and proxies' messages may carry that callers must not see: URLs, addresses
(IPv4, IPv6, host:port), organisation ids, keys (OpenAI's messages quote a masked one)."""
_MAX_DETAIL_CHARS = 160


def retry_reason(exc: BaseException) -> str | None:
    """Why trying the model again may help (a short label), or None when it will not."""
    if not isinstance(exc, ai.ModelAPIError) or isinstance(exc, _NOT_RETRYABLE):
        return None
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, ai.ModelHTTPError):
        status = exc.status_code
        if status in _RETRYABLE_HTTP:
            return "rate_limited" if status == 429 else "server_error"
        return "server_error" if status >= 500 else None
    return "malformed"  # a bare ModelAPIError: the response could not be read


def falls_back(exc: BaseException) -> bool:
    """Whether a fallback model should take over.

    It should when the model failed in a way that may pass, and when its provider's quota is
    exhausted (waiting will not help there, another provider will).
    """
    return retry_reason(exc) is not None or isinstance(exc, ai.ModelQuotaExceededError)


def core_error(
    exc: Exception, limits: Limits, models: Mapping[str, str]
) -> WoollyError | Exception:
    """Translate an exception out of a pydantic-ai run; unknown ones are returned as they are.

    Args:
        exc: What the run raised.
        limits: The per-run limits (named when one was hit).
        models: Configured model specs (`openai-chat:NAME`) by the name providers report.
    """
    if isinstance(exc, ai.UsageLimitExceeded):
        return LimitExceeded(_limit_message(exc.message, limits))
    if isinstance(exc, ai.FallbackExceptionGroup):
        return _all_models_failed(exc, limits, models)
    if isinstance(exc, ai.ModelContextWindowExceededError):
        return InvalidInput.one("user_query", "with its context, too long for the model's window")
    if isinstance(exc, ai.ModelAPIError):
        return _provider_error(exc, models)
    if isinstance(exc, ai.UnexpectedModelBehavior):
        return ModelFailed(f"the model's answer could not be used ({_first_sentence(exc)})")
    if isinstance(exc, RuntimeError) and str(exc).startswith(_MCP_CONNECT_FAILED):
        # fastmcp has no exception class of its own for this; its message is stable.
        return Unavailable("the MCP server is unreachable")
    if isinstance(exc, httpx2.TransportError):
        # pydantic-ai wraps the model's transport errors (ModelConnectionError), so a bare one
        # comes from the tools: the MCP server went away during the run.
        return Unavailable(f"the MCP server failed during the run ({type(exc).__name__})")
    return exc


def _limit_message(said: str, limits: Limits) -> str:
    if "tool_calls_limit" in said:
        what = f"more than {limits.max_tool_calls} tool calls"
    elif "request_limit" in said:
        what = f"more than {limits.max_model_requests} model requests"
    else:
        what = "more than its usage limit allows"
    return f"the run was stopped: it would have made {what} (a per-run limit of the server)"


def _all_models_failed(
    group: ai.FallbackExceptionGroup, limits: Limits, models: Mapping[str, str]
) -> WoollyError | Exception:
    """The last model's error, saying that the ones before it failed too."""
    errors = [e for e in group.exceptions if isinstance(e, Exception)]
    if not errors:
        return Unavailable("every configured model failed")
    last = core_error(errors[-1], limits, models)
    if len(errors) == 1 or not isinstance(last, WoollyError):
        return last
    before = ", ".join(_spec(e, models) for e in errors[:-1])
    last.args = (f"{last} (tried first: {before})",)
    return last


def _provider_error(exc: ai.ModelAPIError, models: Mapping[str, str]) -> WoollyError:
    spec = _spec(exc, models)
    status = exc.status_code if isinstance(exc, ai.ModelHTTPError) else None
    origin = f"model {spec}" + (f", HTTP {status}" if status else "")
    if isinstance(exc, ai.ModelQuotaExceededError):
        return QuotaExhausted(
            f"the model provider says this server's quota or billing is exhausted ({origin}); "
            "waiting will not help: the operator must add credit or raise the quota"
        )
    if isinstance(exc, ai.ModelAuthenticationError) or status in (401, 403):
        return FailedPrecondition(
            f"the model provider rejected this server's credentials ({origin}); "
            "the operator must fix the provider's API key"
        )
    if isinstance(exc, ai.ModelNotFoundError) or status == 404:
        hint = "check the model name and the provider's base URL"
        if spec.startswith("openai:"):
            name = spec.removeprefix("openai:")
            hint = (
                "`openai:` is OpenAI's Responses API; for a Chat Completions server (vLLM, "
                f"Ollama, llama.cpp) name the model `openai-chat:{name}`"
            )
        return FailedPrecondition(
            f"the model provider has no such model or endpoint ({origin}); {hint}"
        )
    reason = retry_reason(exc)
    if reason is None:
        return FailedPrecondition(
            f"the model provider refused the request as configured ({origin}): {_detail(exc)}"
        )
    if reason == "malformed":
        return Unavailable(f"the model provider sent a response that could not be read ({origin})")
    if reason == "connection":
        return Unavailable(f"the model provider could not be reached ({origin})")
    if reason == "timeout":
        return Unavailable(f"the model provider did not answer in time ({origin})")
    wait = f"; it asks to wait {exc.retry_after:g} s" if exc.retry_after else ""
    return Unavailable(
        f"the model provider failed ({origin}): {_detail(exc)}{wait}",
        retry_after_s=exc.retry_after,
    )


def _spec(exc: BaseException, models: Mapping[str, str]) -> str:
    """The configured spec of the model that failed (`openai-chat:NAME`), else its bare name."""
    name = getattr(exc, "model_name", "") or "?"
    return models.get(name, name)


def _detail(exc: ai.ModelAPIError) -> str:
    """The provider's own short explanation, from its JSON error body, scrubbed.

    A body that is not JSON (a proxy's HTML page, a load balancer's text) is not quoted: it says
    more about the network in between than about the model.
    """
    body = exc.body if isinstance(exc, ai.ModelHTTPError) else None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return _clip(scrub(message))
    return "no explanation given"


def scrub(text: str) -> str:
    """`text` without URLs, network addresses, organisation ids or keys (even masked ones)."""
    for pattern, replacement in _SCRUBBED:
        text = pattern.sub(replacement, text)
    return text


def _first_sentence(exc: ai.AgentRunError) -> str:
    """pydantic-ai's message without its advice to developers (which follows the first sentence)."""
    return _clip(exc.message.split(". ")[0].rstrip("."))


def _clip(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_DETAIL_CHARS else line[: _MAX_DETAIL_CHARS - 1] + "…"
