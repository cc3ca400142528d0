"""Logging set-up: JSON lines (or the human text format), secret redaction, the request id (no I/O
beyond writing log lines to the stream it is given).

Every line goes through :func:`redact`, which masks what looks like a credential: our API keys
(the key id stays, it is not a secret), ``Bearer`` tokens, AWS secret keys and session tokens, and
passwords in URLs. Redaction is a safety net, not a licence: code must still not log secrets.

``request_id`` is the id of the API request being served (set by ``api.middleware``); the JSON
formatter adds it to every line logged while that request runs, including from sync routes, which
run in a worker thread with a copy of the request's context.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import IO, Any

request_id: ContextVar[str | None] = ContextVar("gpubroker_request_id", default=None)

# SDK and HTTP-client debug logs print request headers: botocore's include the access key id and
# session token. These loggers stay at WARNING whatever our level.
SECRET_BEARING_LOGGERS = (
    "botocore",
    "boto3",
    "urllib3",
    "httpx",
    "httpcore",
    "azure",
    "google.auth",
    "google.api_core",
    "kubernetes",
)
# Alembic logs two INFO lines each time /readyz reads the schema revision; bootstrap logs upgrades itself.
QUIET_LOGGERS = ("alembic.runtime.migration",)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "[REDACTED]"

# (substrings of the lower-cased text that must be there for the rule to apply, pattern, replacement).
# The cheap substring test keeps redaction nearly free for the lines that hold nothing secret-like.
_RULES: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    # A whole bearer token, whatever it is (an already masked one is left alone: possessive match).
    (("bearer",), re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/-]++=*+(?!\[)"), rf"\g<1>{MASK}"),
    (("gpb_",), re.compile(r"(gpb_[0-9a-f]{16}_)[A-Za-z0-9_-]+"), rf"\g<1>{MASK}"),
    (
        ("secret_access_key", "session_token"),
        re.compile(r"(?i)((?:aws_)?(?:secret_access_key|session_token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}]+"),
        rf"\g<1>{MASK}",
    ),
    (("://",), re.compile(r"(://[^:/@\s\"']*:)[^@\s/\"']+@"), rf"\g<1>{MASK}@"),
    (
        ("password=", "passwd=", "pwd="),
        re.compile(r"(?i)((?:password|passwd|pwd)=)[^&\s\"',;]+"),
        rf"\g<1>{MASK}",
    ),
)


_TRIGGERS = tuple((trigger, n) for n, (triggers, _, _) in enumerate(_RULES) for trigger in triggers)


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential masked."""
    lowered = text.lower()
    applied = -1
    for trigger, n in _TRIGGERS:  # in rule order; a rule runs once, however many triggers it has
        if n > applied and trigger in lowered:
            _, pattern, replacement = _RULES[n]
            text = pattern.sub(replacement, text)
            applied = n
    return text


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message and arguments before any formatter sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it to the formatter to report
            return True
        record.msg, record.args = redact(message), None  # formatted once, here
        return True


# Attributes every LogRecord has: anything else on a record came from ``extra=``.
# uvicorn's color_message is its message again, with terminal colour codes: not for JSON.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, msg, request_id, exc_info, extras."""

    _second: tuple[int, str] = (-1, "")  # the last second formatted (one tuple: swapped atomically)

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        line: dict[str, Any] = {
            "ts": f"{cached[1]}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            line["request_id"] = current
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        for name, value in record.__dict__.items():
            if name not in _RECORD_FIELDS and name not in line:
                line[name] = value
        return redact(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """The human format (``time LEVEL logger: message``), redacted, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str, fmt: str = "json", *, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as JSON lines or text.

    Calling it again replaces the handler it installed before (other handlers are left alone).
    Returns the handler."""
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be `json` or `text`, not {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "gpubroker", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    handler.gpubroker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in (*QUIET_LOGGERS, *SECRET_BEARING_LOGGERS):
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


__all__ = [
    "MASK",
    "SECRET_BEARING_LOGGERS",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "redact",
    "request_id",
]
