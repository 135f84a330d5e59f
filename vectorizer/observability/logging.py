"""Log setup: readable text or JSON lines, with secrets masked in every record.

Facts about an event go in fields, not in the message: `log.info("running vectorizer",
extra={"vectorizer_id": 3})`. JSON lines carry them as keys of their own; text lines show them
after the message as `key=value`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_secrets: set[str] = set()

# Credentials that may reach a message through a URL or an echoed provider error.
_PATTERNS = (
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),
    (re.compile(r"(password=)\S+", re.IGNORECASE), r"\1***"),
    (re.compile(r"\b(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]{8,}"), r"\1***"),
    (re.compile(r"(Bearer\s+)\S+", re.IGNORECASE), r"\1***"),
)


def register_secret(value: str | None) -> None:
    """Masks `value` in every log record from now on."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def fields(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields a log call passed with `extra=`, in the order given."""
    return {
        name: value
        for name, value in vars(record).items()
        if name not in _RECORD_ATTRIBUTES and not name.startswith("_")
    }


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        for name, value in fields(record).items():
            if isinstance(value, str):
                setattr(record, name, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in fields(record).items():
            document.setdefault(name, value)  # a field never hides the record's own keys
        if record.exc_text or record.exc_info:
            document["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, then the record's fields as ` key=value`."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = " ".join(f"{name}={value}" for name, value in fields(record).items())
        return f"{line} {extra}" if extra else line


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    name = level.upper()
    root.setLevel({"WARN": "WARNING", "FATAL": "CRITICAL"}.get(name, name))
    # third-party chatter at INFO would drown the worker's own lines
    for noisy in (
        "httpx",
        "httpcore",
        "openai",
        "LiteLLM",
        "urllib3",
        "botocore",
        "voyage",
        "huggingface_hub",
        "sentence_transformers",
    ):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
