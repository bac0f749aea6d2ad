"""The server's log lines: text for a terminal, or one JSON object a line
(python-json-logger) with millisecond timestamps, tracebacks and the call's request id.
Database passwords never reach either."""

import logging
import sys
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

from server.storage.database import without_secrets

# Envoy's x-request-id of the call being served, set by ObserveLayer for the call's
# duration: every line logged meanwhile (an unexpected error's traceback, say) carries it.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Keys of the JSON lines, as before the formatter came from python-json-logger.
_JSON_NAMES = {"asctime": "time", "levelname": "severity", "name": "logger",
               "exc_info": "traceback"}


class _CallRequestId(logging.Filter):
    """Adds `request_id` to a line logged while a call is served, unless it has one."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class _HideSecrets(logging.Filter):
    """Hides the passwords of `urls` in a line's message and traceback: a driver's error
    may quote the whole database URL."""

    def __init__(self, urls: Sequence[str]):
        super().__init__()
        self._urls = tuple(urls)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # arguments that do not fit: the handler reports it, as without us
        hidden = without_secrets(message, *self._urls)
        if hidden != message:
            record.msg, record.args = hidden, None
        if record.exc_info:
            # Formatted once here; both formatters print exc_text when exc_info is gone.
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = without_secrets(text, *self._urls), None
        return True


class _Json(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 in UTC, to the millisecond: calls a few ms apart stay in order."""
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def setup_logging(log_format: str, secret_urls: Sequence[str] = ()) -> None:
    """Log INFO and up to standard error, as "text" or "json"; the passwords of
    `secret_urls` are hidden in every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CallRequestId())
    handler.addFilter(_HideSecrets(secret_urls))
    if log_format == "json":
        handler.setFormatter(_Json(_TEXT, rename_fields=_JSON_NAMES))
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
