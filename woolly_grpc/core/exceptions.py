"""The core's exceptions; `woolly_grpc.errors` maps them to gRPC status codes.

WoollyError
├── InvalidInput        a request field is wrong; carries one FieldViolation per field
├── NotFound            an unknown repository, run, saved agent, or a cache-only miss
├── OutOfRange          a position outside what is kept (expired run events)
├── AlreadyExists       a saved agent with that name exists
├── FailedPrecondition  valid, but cannot run now or as configured (an inactive saved agent;
│                       the model provider refused: bad key, unknown model or endpoint)
├── Overloaded          more concurrent runs than allowed; retry after `retry_after_s`
├── LimitExceeded       a run used more model requests or tool calls than allowed
├── QuotaExhausted      the model provider's quota or billing is exhausted: waiting won't help
└── Unavailable         a dependency (model provider, MCP server, database) failed in a way
    │                   that may pass; `retry_after_s` when the provider said how long
    └── ModelFailed     the model answered with something unusable (another try may do)
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


class QuotaExhausted(WoollyError):
    """The model provider's quota or billing is exhausted; retrying later will not help."""


class Unavailable(WoollyError):
    """A dependency failed in a way that may pass; `retry_after_s` if it said when to retry."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class ModelFailed(Unavailable):
    """The model's answer could not be used (malformed output, its own retries exhausted)."""
