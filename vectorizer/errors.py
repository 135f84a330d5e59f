"""The three kinds of failure the worker tells apart (DESIGN §1, §5).

* RowError: this key's input is bad (a document that will not parse, a template that fails for
  this row, an input the provider rejects). Charged to the key: backoff, then the failed queue.
* VectorizerError: every row would fail (bad API key, unknown model, invalid parameter, dimension
  mismatch, provider down for longer than we retry in place). No key is charged; the vectorizer
  backs off and is probed again later.
* TransientError: worth retrying in place (429, 5xx, timeouts, resets). Never charged.

Messages must never contain secrets: build them from provider error bodies and config fields,
never from headers or API keys.
"""

from __future__ import annotations

STEPS = ("loading", "parsing", "chunking", "formatting", "embedding", "writing")

# pgai's texts for the two steps it names; tools and users grep for them.
_PGAI_MESSAGES = {"loading": "loading failed", "embedding": "embedding provider failed"}


def failure_message(step: str) -> str:
    """The error row's `message` for a failure at `step`: 'parsing failed', 'loading failed'..."""
    return _PGAI_MESSAGES.get(step, f"{step} failed")


class RowError(Exception):
    """A failure that belongs to one source row (one primary key)."""

    def __init__(self, step: str, message: str, *, retryable: bool = True) -> None:
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
        super().__init__(message)
        self.step = step
        self.message = message
        self.retryable = retryable


class VectorizerError(Exception):
    """A failure that every row of the vectorizer would hit; charges no row."""

    def __init__(self, message: str, *, step: str = "embedding", reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.reason = reason or message


class TransientError(Exception):
    """A failure worth retrying in place after `retry_after` seconds (None: our own backoff)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
