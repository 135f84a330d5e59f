"""The one place the worker reports what it does: metrics (when served) and health.

Process-wide on purpose: Prometheus metrics and the health of a worker are per process.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any

from vectorizer.observability.history import RateHistory
from vectorizer.observability.metrics import Health, Metrics

if TYPE_CHECKING:  # reuse imports the embedders, which import observability
    from vectorizer.reuse_counts import ReuseCounts


class Telemetry:
    def __init__(self) -> None:
        self.metrics: Metrics | None = None
        self.health = Health()
        self.history = RateHistory()
        # ids of the served vectorizers → their names (a runner that could not load its
        # vectorizer reports under its id)
        self._names: dict[int, str] = {}
        # what each rate limiter had waited when last reported (limiters count cumulatively)
        # executors per vectorizer as last set (the status page shows it)
        self.concurrency_levels: dict[str, int] = {}
        self._waited: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def enable_metrics(self) -> Metrics:
        if self.metrics is None:
            self.metrics = Metrics()
        return self.metrics

    def batch_committed(self, vectorizer: str, rows: int, chunks: int) -> None:
        self.health.progressed(vectorizer)
        self.health.db_answered()
        if chunks:
            self.history.add(vectorizer, chunks)
        if self.metrics is not None:
            self.metrics.rows.labels(vectorizer).inc(rows)
            self.metrics.chunks.labels(vectorizer).inc(chunks)
            self.metrics.last_progress.set_to_current_time()

    def concurrency(self, vectorizer: str, level: int) -> None:
        self.concurrency_levels[vectorizer] = level
        if self.metrics is not None:
            self.metrics.concurrency.labels(vectorizer).set(level)

    def skipped(self, vectorizer: str, reason: str, rows: int) -> None:
        """Rows committed without embedding anything, e.g. reason "empty" (no text)."""
        if self.metrics is not None and rows:
            self.metrics.skipped.labels(vectorizer, reason).inc(rows)

    def embedded(
        self, vectorizer: str, provider: str, seconds: float, requests: int, tokens: int
    ) -> None:
        if self.metrics is not None:
            self.metrics.request_seconds.labels(provider).observe(seconds)
            self.metrics.requests.labels(vectorizer, provider).inc(requests)
            self.metrics.tokens.labels(vectorizer, provider).inc(tokens)

    def reused(self, vectorizer: str, counts: ReuseCounts) -> None:
        if self.metrics is not None and counts:
            self.metrics.chunks_embedded.labels(vectorizer).inc(counts.embedded)
            self.metrics.chunks_reused.labels(vectorizer, "same_row").inc(counts.same_row)
            self.metrics.chunks_reused.labels(vectorizer, "other_row").inc(counts.other_row)
            self.metrics.rows_unchanged.labels(vectorizer).inc(counts.rows_unchanged)
            self.metrics.tokens_saved.labels(vectorizer).inc(counts.tokens_saved)

    def failed(self, vectorizer: str, step: str, kind: str) -> None:
        if kind == "vectorizer":
            named = self._names.get(int(vectorizer)) if vectorizer.isdigit() else None
            self.health.vectorizer_failed(named or vectorizer)
        if self.metrics is not None:
            self.metrics.errors.labels(vectorizer, step, kind).inc()

    def waited_for_rate_limit(self, provider: str, seconds: float) -> None:
        if self.metrics is not None and seconds > 0:
            self.metrics.ratelimit_wait.labels(provider).inc(seconds)

    def rate_limiter_waited(self, provider: str, limiter: Any) -> None:
        """Reports the seconds `limiter` waited since its last report. A limiter is shared by
        every executor using the same key, so deltas per call would count a wait once per
        caller."""
        total = float(getattr(limiter, "waited", 0.0))
        seen = self._waited.get(limiter, 0.0)
        if total > seen:
            self._waited[limiter] = total
            self.waited_for_rate_limit(provider, total - seen)

    def queue_sizes(
        self, sizes: dict[str, tuple[int, int]], names: dict[int, str] | None = None
    ) -> None:
        """Pending and failed keys of each vectorizer this worker serves, from a periodic poll
        (`names`: their ids). A vectorizer no longer served leaves the metrics."""
        self.health.db_answered()
        if names is not None:
            self._names = dict(names)
        gone = set(self.health.pending) - set(sizes)
        self.health.pending = {vectorizer: pending for vectorizer, (pending, _) in sizes.items()}
        if self.metrics is not None:
            for vectorizer in gone:
                for gauge in (self.metrics.queue_depth, self.metrics.failed_depth):
                    with contextlib.suppress(KeyError):
                        gauge.remove(vectorizer)
                with contextlib.suppress(KeyError):
                    self.metrics.failing.remove(vectorizer)
            for vectorizer, (pending, failed) in sizes.items():
                self.metrics.queue_depth.labels(vectorizer).set(pending)
                self.metrics.failed_depth.labels(vectorizer).set(failed)


telemetry = Telemetry()
