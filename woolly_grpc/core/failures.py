"""pydantic-ai's and the model provider's errors → the core's tree, with readable messages.

A caller reads the message in a gRPC status, so it says what failed and whether to retry, in
one short line: never a provider's raw error body (which can quote the server's own provider
key, partly masked), and never pydantic-ai's advice to developers.
"""

from __future__ import annotations

import httpx2
from pydantic_ai import exceptions as ai_errors

from .exceptions import InvalidInput, LimitExceeded, ModelFailed, Unavailable, WoollyError
from .types import Limits

_RETRYABLE_MODEL_ERRORS = (
    ai_errors.ModelRateLimitError,
    ai_errors.ModelOverloadedError,
    ai_errors.ModelUnavailableError,
    ai_errors.ModelServerError,
    ai_errors.ModelConnectionError,
    ai_errors.ModelRequestTimeout,
)
_RETRYABLE_HTTP = frozenset({408, 409, 425, 429})
_CREDENTIALS_HTTP = frozenset({401, 403})
_MCP_CONNECT_FAILED = "Client failed to connect"
_MAX_DETAIL_CHARS = 200


def core_error(exc: Exception, limits: Limits) -> WoollyError | Exception:
    """Translate an exception out of a pydantic-ai run; unknown ones are returned as they are."""
    if isinstance(exc, ai_errors.UsageLimitExceeded):
        return LimitExceeded(_limit_message(str(exc), limits))
    if isinstance(exc, ai_errors.ModelContextWindowExceededError):
        return InvalidInput.one("user_query", "with its context, too long for the model's window")
    if isinstance(exc, ai_errors.ModelAPIError):
        return _provider_error(exc)
    if isinstance(exc, ai_errors.UnexpectedModelBehavior):
        return ModelFailed(f"the model's answer could not be used: {exc.message}")
    if isinstance(exc, RuntimeError) and str(exc).startswith(_MCP_CONNECT_FAILED):
        # fastmcp has no exception class of its own for this; its message is stable.
        return Unavailable(f"the MCP server is unreachable: {exc}", retryable=True)
    if isinstance(exc, httpx2.TransportError):
        # pydantic-ai wraps the model's transport errors (ModelConnectionError), so a bare one
        # comes from the tools: the MCP server went away during the run.
        detail = _clip(f"{type(exc).__name__}: {exc}")
        return Unavailable(f"the MCP server failed during the run: {detail}", retryable=True)
    return exc


def _limit_message(said: str, limits: Limits) -> str:
    if "tool_calls_limit" in said:
        what = f"more than {limits.max_tool_calls} tool calls"
    elif "request_limit" in said:
        what = f"more than {limits.max_model_requests} model requests"
    else:
        what = "more than its usage limit allows"
    return f"the run was stopped: it would have made {what} (a per-run limit of the server)"


def _provider_error(exc: ai_errors.ModelAPIError) -> Unavailable:
    status = exc.status_code if isinstance(exc, ai_errors.ModelHTTPError) else None
    origin = f"model {exc.model_name}" + (f", HTTP {status}" if status else "")
    if isinstance(exc, ai_errors.ModelAuthenticationError) or status in _CREDENTIALS_HTTP:
        return Unavailable(
            f"the model provider rejected this server's credentials ({origin}); "
            "the operator must fix the provider's API key",
            retryable=False,
        )
    retryable = isinstance(exc, _RETRYABLE_MODEL_ERRORS) or (
        status is not None and (status in _RETRYABLE_HTTP or status >= 500)
    )
    verb = "failed; retry later" if retryable else "refused the call"
    return Unavailable(f"the model provider {verb} ({origin}): {_detail(exc)}", retryable=retryable)


def _detail(exc: ai_errors.ModelAPIError) -> str:
    """The provider's own short explanation, from an error body if there is one."""
    if not isinstance(exc, ai_errors.ModelHTTPError):
        return _clip(exc.message)
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return _clip(message)
    if isinstance(body, str) and body.strip():
        return _clip(body)
    return "no explanation given"


def _clip(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_DETAIL_CHARS else line[: _MAX_DETAIL_CHARS - 1] + "…"
