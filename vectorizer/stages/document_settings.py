"""Limits and locations for document loading and parsing, read from VECTORIZER_* variables.

They are read when a vectorizer's pipeline is built (not at import), so a worker started with
a new environment, or a test that sets one, sees the value without reloading anything. A
malformed value is a VectorizerError: every document row of the vectorizer would meet it.
"""

from __future__ import annotations

import re
from pathlib import Path

from vectorizer import env
from vectorizer.errors import VectorizerError

MAX_DOCUMENT_BYTES_ENV = "VECTORIZER_MAX_DOCUMENT_BYTES"
LOAD_TIMEOUT_ENV = "VECTORIZER_LOAD_TIMEOUT"
PARSE_TIMEOUT_ENV = "VECTORIZER_PARSE_TIMEOUT"
PARSE_WORKERS_ENV = "VECTORIZER_PARSE_WORKERS"
DOCLING_CACHE_DIR_ENV = "VECTORIZER_DOCLING_CACHE_DIR"

DEFAULT_MAX_DOCUMENT_BYTES = 100 * 1024 * 1024
DEFAULT_LOAD_TIMEOUT = 300.0
DEFAULT_PARSE_TIMEOUT = 300.0
# Each parser process may hold docling's models (~1 GB); two keep both cores busy.
DEFAULT_PARSE_WORKERS = 2
DEFAULT_DOCLING_CACHE_DIR = "~/.cache/docling/models"

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def max_document_bytes() -> int:
    """Largest document the loader reads; bytes, or with a unit (`50MiB`, `1GB`)."""
    raw = env.raw(MAX_DOCUMENT_BYTES_ENV)
    if raw is None:
        return DEFAULT_MAX_DOCUMENT_BYTES
    match = _SIZE.match(raw)
    if match is None or int(match.group(1)) < 1:
        raise _invalid(
            MAX_DOCUMENT_BYTES_ENV, raw, "a positive size such as 104857600 or 100MiB", "loading"
        )
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]


def load_timeout() -> float:
    """Seconds one URI may take to read before the row fails."""
    return _seconds(LOAD_TIMEOUT_ENV, DEFAULT_LOAD_TIMEOUT, "loading")


def parse_timeout() -> float:
    """Seconds one document may take to parse before its parser process is replaced."""
    return _seconds(PARSE_TIMEOUT_ENV, DEFAULT_PARSE_TIMEOUT, "parsing")


def parse_workers() -> int:
    """How many parser processes may run at once."""
    raw = env.raw(PARSE_WORKERS_ENV)
    if raw is None:
        return DEFAULT_PARSE_WORKERS
    if not raw.isdigit() or int(raw) < 1:
        raise _invalid(PARSE_WORKERS_ENV, raw, "a whole number of at least 1", "parsing")
    return int(raw)


def docling_cache_dir() -> Path:
    """Where docling's models live (filled by `vectorizer download-models`)."""
    return Path(env.raw(DOCLING_CACHE_DIR_ENV) or DEFAULT_DOCLING_CACHE_DIR).expanduser()


def describe_size(size: int) -> str:
    """`104857600` → `100 MiB`, for messages that quote a limit."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def _seconds(name: str, default: float, step: str) -> float:
    raw = env.raw(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise _invalid(name, raw, "a positive number of seconds", step)
    return value


def _invalid(name: str, raw: str, expected: str, step: str) -> VectorizerError:
    return VectorizerError(f"{name}={raw!r} is invalid: expected {expected}", step=step)
