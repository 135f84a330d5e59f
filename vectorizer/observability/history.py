"""Chunks written per vectorizer over the last minutes, for the status page's chart.

Kept in memory by the worker that wrote them (a status page shows this worker's own rate);
fixed-size buckets, so memory stays flat however long the worker runs.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

BUCKET_SECONDS = 5
WINDOW_SECONDS = 600


@dataclass
class RateHistory:
    bucket_seconds: int = BUCKET_SECONDS
    window_seconds: int = WINDOW_SECONDS
    # vectorizer → deque of (bucket start, chunks written in that bucket), oldest first
    _buckets: dict[str, deque[tuple[int, int]]] = field(default_factory=dict)

    def add(self, vectorizer: str, chunks: int, now: float | None = None) -> None:
        start = self._bucket(time.time() if now is None else now)
        buckets = self._buckets.setdefault(vectorizer, deque())
        if buckets and buckets[-1][0] == start:
            buckets[-1] = (start, buckets[-1][1] + chunks)
        else:
            buckets.append((start, chunks))
        horizon = start - self.window_seconds
        while buckets and buckets[0][0] <= horizon:
            buckets.popleft()

    def series(self, vectorizers: list[str], now: float | None = None) -> dict[str, object]:
        """Chunks/s per bucket for the window ending now, zeros where nothing was written.
        The newest bucket is still filling: its rate is a lower bound until it closes."""
        current = self._bucket(time.time() if now is None else now)
        first = current - self.window_seconds + self.bucket_seconds
        starts = list(range(first, current + 1, self.bucket_seconds))
        rates: dict[str, list[float]] = {}
        for vectorizer in vectorizers:
            written = dict(self._buckets.get(vectorizer, ()))
            rates[vectorizer] = [
                round(written.get(start, 0) / self.bucket_seconds, 2) for start in starts
            ]
        return {"bucket_seconds": self.bucket_seconds, "starts": starts, "chunks_per_second": rates}

    def _bucket(self, moment: float) -> int:
        return int(moment // self.bucket_seconds) * self.bucket_seconds
