"""Where a failure is told, once: the error-row builder, and the one path that reports a batch's
outcome (logs, metrics, progress bar, heartbeat counts, progress rows) or a vectorizer's failure.

A failed row's error row is written by the executor inside the batch's transaction (it commits
with the row's charge or not at all); everything else about it is said here, after the commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from vectorizer.errors import RowError, VectorizerError, failure_message
from vectorizer.observability.progress import Progress
from vectorizer.observability.telemetry import telemetry
from vectorizer.reuse_counts import ReuseCounts
from vectorizer.tracking import WorkerTracking

if TYPE_CHECKING:
    from vectorizer.config import Vectorizer

log = logging.getLogger(__name__)

UNEXPECTED = "vectorizer failed with unexpected error"
# failures of steps outside the row pipeline, with their own message
_STEP_MESSAGES = {"indexing": "vector index build failed"}


@dataclass(frozen=True)
class FailedRow:
    """A key charged by a batch: requeued with backoff, or moved to the failed queue."""

    key: tuple[Any, ...]
    error: RowError
    attempts: int  # counting this one
    gave_up: bool  # moved to the failed queue


@dataclass
class BatchResult:
    claimed: int = 0
    requested: int = 0  # the claim's size: `claimed` is less when the queue ran short
    rows_done: int = 0
    chunks: int = 0
    empty: int = 0  # rows with nothing to embed (no chunk, no error)
    failed: list[FailedRow] = field(default_factory=list)
    reuse: ReuseCounts = field(default_factory=ReuseCounts)
    # read with the batch's last statement: True or False after a claim, None when unknown
    disabled: bool | None = None


def error_row(
    vectorizer: Vectorizer | None,
    step: str | None,
    reason: str,
    *,
    pk: dict[str, Any] | None = None,
    **context: Any,
) -> tuple[str, str]:
    """An `ai._vectorizer_errors` row's message and details (JSON): pgai's message and keys
    (`error_reason`, the provider of an embedding failure, the loader of a row's loading
    failure), then the step, the row's key and `context` (attempts, retry delay...)."""
    config = vectorizer.config if vectorizer else None
    row_level = pk is not None
    if step in _STEP_MESSAGES:
        message = _STEP_MESSAGES[step]
    elif step and (row_level or step == "embedding"):
        message = failure_message(step)
    else:
        message = UNEXPECTED
    details: dict[str, Any] = {"error_reason": reason}
    if step == "embedding":
        details["provider"] = config.embedding.implementation if config else None
    elif step == "loading" and row_level and config is not None:
        details["loader"] = config.loading.implementation
    if step:
        details["step"] = step
    if row_level:
        details["pk"] = pk
    details.update(context)
    return message, json.dumps(details, default=str)


def key_fields(names: Sequence[str], key: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(names, key, strict=True))


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class Reporter:
    """Reports one vectorizer's batches and failures; counts what its drains did."""

    def __init__(
        self, vectorizer_id: int, tracking: WorkerTracking, progress: Progress | None
    ) -> None:
        self._id = vectorizer_id
        self._tracking = tracking
        self.progress = progress
        self.chunks = 0  # this drain's
        self.reuse = ReuseCounts()  # this drain's
        self.reuse_total = ReuseCounts()  # since the worker started

    def drain_started(self) -> None:
        self.chunks = 0
        self.reuse = ReuseCounts()

    async def report(self, vectorizer: Vectorizer, result: BatchResult) -> None:
        """Everything a committed batch tells: metrics, the progress bar, logs and tracking."""
        name = vectorizer.name
        telemetry.batch_committed(name, result.rows_done, result.chunks)
        telemetry.skipped(name, "empty", result.empty)
        telemetry.reused(name, result.reuse)
        self.chunks += result.chunks
        self.reuse.add(result.reuse)
        self.reuse_total.add(result.reuse)
        if self.progress is not None:
            self.progress.rows += result.rows_done + len(result.failed)
            self.progress.chunks += result.chunks
            self.progress.reused += result.reuse.same_row + result.reuse.other_row
        if result.rows_done:
            self._tracking.record_success(result.rows_done)
        for failed in result.failed:
            await self._row_failed(vectorizer, failed)
        if result.rows_done:
            await self._tracking.record_progress(self._id, result.rows_done)
        if result.reuse:
            self._tracking.record_reuse(self._id, result.reuse)

    async def drain_finished(self) -> None:
        """Writes the drain's successes not written yet: the progress row is current when
        the queue is empty."""
        await self._tracking.flush_progress(self._id)

    def concurrency(self, vectorizer: Vectorizer, executors: int, adaptive: bool) -> None:
        """The executor level of the drain running now (metric, status)."""
        telemetry.concurrency(vectorizer.name, executors)
        self._tracking.record_concurrency(self._id, executors, adaptive)

    async def _row_failed(self, vectorizer: Vectorizer, failed: FailedRow) -> None:
        error = failed.error
        log.warning(
            "vectorizer %s key %s failed at %s (attempt %s%s): %s",
            self._id,
            json.dumps(key_fields(vectorizer.pk_names, failed.key), default=str),
            error.step,
            failed.attempts,
            ", moved to the failed queue" if failed.gave_up else "",
            error.message,
        )
        telemetry.failed(vectorizer.name, error.step, "row")
        # one error per failed key, counted the same way in the heartbeat and the progress row
        message = f"{error.step} failed for key {failed.key}: {error.message}"
        self._tracking.count_error(message)
        await self._tracking.progress(self._id, 0, message)

    async def vectorizer_failed(
        self, vectorizer: Vectorizer | None, exc: Exception, retry_in: float, label: str
    ) -> None:
        """Once per breaker trip: a log line, a metric, an error row, progress and the
        heartbeat's count."""
        if isinstance(exc, VectorizerError):
            step: str | None = exc.step
            reason = exc.reason
        else:
            step, reason = None, f"{type(exc).__name__}: {exc}"
        message, details = error_row(vectorizer, step, reason, retry_in_seconds=round(retry_in, 1))
        log.error(
            "vectorizer %s failed (%s); backing off %.0fs: %s",
            label,
            message,
            retry_in,
            reason,
            # a Python error we did not classify is a bug or a surprise: its traceback is the
            # clue (a database error's message says it all, e.g. a vectorizer dropped mid-run)
            exc_info=None if isinstance(exc, VectorizerError | psycopg.Error) else exc,
        )
        self._tracking.count_error(f"vectorizer {self._id}: {reason}")
        telemetry.failed(
            vectorizer.name if vectorizer else str(self._id), step or "config", "vectorizer"
        )
        await self._tracking.error_row(self._id, message, details)
        await self._tracking.progress(self._id, 0, reason)

    def database_failed(self, exc: psycopg.OperationalError) -> None:
        log.error("unable to connect to database: %s", one_line(exc))
        self._tracking.count_error(f"database error: {one_line(exc)}")
