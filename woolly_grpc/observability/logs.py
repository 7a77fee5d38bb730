"""Logging setup: level and text or JSON lines on stderr, data loggers quieted, URLs redacted.

Standard library only (Settings is imported for type checking alone), so that a process which
only logs, like the workers' supervisor, imports neither the agent core nor prometheus-client.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

if TYPE_CHECKING:
    from woolly_grpc.config import Settings

_TEXT_FORMAT = "%(asctime)s %(levelname)s {worker}%(name)s: %(message)s"
_DATA_LOGGERS = (
    *("httpx", "httpx2", "httpcore", "httpcore2", "openai", "mcp", "fastmcp"),
    *("sqlalchemy", "aiosqlite", "asyncpg", "alembic"),
)
"""Libraries whose INFO and DEBUG lines carry data: request URLs (a URL may hold a token),
request bodies (prompts), SQL statements with their parameters (saved system prompts)."""
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)
"""A URL in running text, up to a space, quote or angle bracket (`redact_urls`)."""


def redact_urls(text: str) -> str:
    """`text` with every URL in it redacted (`redacted_url`)."""
    return _URL.sub(lambda m: redacted_url(m.group()), text) if "://" in text else text


def redacted_url(url: str) -> str:
    """`url` as logs may show it: its user, password and query values replaced by `***`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<url>"
    netloc = ("***@" if "@" in parts.netloc else "") + (f"[{host}]" if ":" in host else host)
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc + port, parts.path, query, ""))


def quiet_data_loggers() -> None:
    """Keep the libraries that log data to WARNING and above, whatever the log level.

    Called by `server.build` too, so a server embedded under someone else's logging setup
    holds to it as well.
    """
    for name in _DATA_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class RedactingFilter(logging.Filter):
    """Replaces the credentials of any URL in a line (message and traceback) with `***`.

    A last line of defence on the handler: an exception's text may quote a URL with a token.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact `record` in place; never drops it."""
        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = redact_urls(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's `fields`."""

    _second = -1
    _stamp = ""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker
        """The worker number this process is (`WOOLLY_WORKERS` > 1), written on every line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a line
            self._second, self._stamp = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        entry: dict[str, Any] = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings, *, worker: int | None = None) -> None:
    """Set up the root logger once for the process: level and text or JSON lines on stderr.

    A worker process (`WOOLLY_WORKERS` > 1) gives its number, which every line then carries
    (`worker-2` in text, `"worker": 2` in JSON): the workers share one stderr.
    """
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = "" if worker is None else f"worker-{worker} "
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT.format(worker=tag)))
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    # No format here prints them, and looking them up costs on every record (logging HOWTO).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    quiet_data_loggers()
