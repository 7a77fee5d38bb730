"""The core's exceptions; `woolly_grpc.errors` maps them to gRPC status codes.

WoollyError
├── InvalidInput        a request field is wrong; carries one FieldViolation per field
├── NotFound            an unknown repository, run, saved agent, or a cache-only miss
├── AlreadyExists       a saved agent with that name exists
├── FailedPrecondition  the request is valid but cannot run now (an inactive saved agent)
├── Overloaded          more concurrent runs than allowed; retry later
├── LimitExceeded       a run used more model requests or tool calls than allowed
├── ModelFailed         the model answered with something unusable
└── Unavailable         a dependency (model provider, MCP server) failed; retryable or not
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One offending request field."""

    field: str
    """The field path as the API names it, e.g. `user_query` or `steps[2].agent_id`."""
    description: str
    """What is wrong with it and what is allowed."""


class WoollyError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidInput(WoollyError):
    """The request has one or more bad fields."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def one(cls, field: str, description: str) -> InvalidInput:
        """Build the error for a single bad field."""
        return cls([FieldViolation(field, description)])


class NotFound(WoollyError):
    """Something the request names does not exist."""

    def __init__(self, kind: str, name: str, hint: str = "") -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} not found" + (f": {hint}" if hint else ""))


class OutOfRange(WoollyError):
    """A position the caller asked for is outside what is kept (e.g. expired run events)."""


class AlreadyExists(WoollyError):
    """Something with that name already exists."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} already exists")


class FailedPrecondition(WoollyError):
    """The request is valid but the system is not in a state to run it."""


class Overloaded(WoollyError):
    """The server is at its limit; the caller should retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class LimitExceeded(WoollyError):
    """A run went over a per-run limit (model requests, tool calls, tokens)."""


class ModelFailed(WoollyError):
    """The model's answer could not be used (malformed output, retries exhausted)."""


class Unavailable(WoollyError):
    """A dependency failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)
