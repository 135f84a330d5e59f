"""Adaptive executor concurrency: how many batches of one vectorizer run at once when nobody
said (`processing_default(concurrency => …)` or `--concurrency` still win).

An AIMD controller per vectorizer, fed by the runner with every committed batch and by the
embedding driver with every 429 or transient failure:

* slow start: from 8, double the level while each doubling still buys throughput;
* then settle, and every few intervals probe one more executor, kept only when it pays;
* halve on 429s, timeouts and 5xx (the provider is the bottleneck: more requests make it
  worse), and try a quarter less when throughput falls well below the settled figure,
  keeping the cut only when it pays (a checkpoint or a busy neighbour slows every level
  alike, and the fallen rate at the old level is the benchmark);
* never above the ceiling: this worker's connection budget (`--max-connections`), shared
  fairly between the vectorizers draining at the same time.

Decisions are pure functions of the observations and the clock values fed in, so tests drive
the controller without sleeping.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Connections a worker keeps besides its executors: tracking, LISTEN, and one per draining
# vectorizer for its catalog reads and index builds.
RESERVED_CONNECTIONS = 3
# 12 executors: past that a 2-core worker gained nothing in bench/backfill.py, and its peak
# RSS passed 250 MB at 1536 dimensions
DEFAULT_MAX_CONNECTIONS = 15


@dataclass(frozen=True)
class AimdSettings:
    # seconds of batches one decision looks at (at least `level` batches): at 0.5 s a 2-core
    # machine's noise undid one doubling in three in bench/backfill.py
    interval: float = 1.0
    # 8 executors overlap a provider's latency with the database's work from the first
    # seconds (a backfill spent them at 4 before), and a wake-up for a row or two still
    # runs one executor (the runner tops up only after a full batch); slow start doubles
    # from there
    start: int = 8
    slow_start_gain: float = 0.15  # a doubling must buy this much more throughput to continue
    probe_gain: float = 0.04  # one more executor must buy this much to be kept
    # a doubling that lost more than this share is undone: one interval of a 2-core
    # machine moved ±15-30 % at the same level, and too few executors cost more (a
    # provider's latency uncovered) than a few too many (connections, memory)
    worse: float = 0.3
    probe_every: int = 6  # settled intervals between probes
    congestion_factor: float = 0.5  # on 429s, timeouts, 5xx
    fall_threshold: float = 0.6  # throughput under this share of the settled rate has fallen
    fall_factor: float = 0.75
    fall_gain: float = 0.1  # a cut for falling throughput must buy this much to be kept
    # consecutive: a busy neighbour can halve one interval's figure, and noise cut a
    # backfill's level to half within seconds when two were enough
    fall_intervals: int = 3


class AdaptiveConcurrency:
    """The executor level of one vectorizer; `batch_done` and `congested` feed it."""

    def __init__(
        self,
        name: str,
        ceiling: Callable[[], int],
        settings: AimdSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._ceiling = ceiling
        self._settings = settings or AimdSettings()
        self._clock = clock
        self.level = max(1, min(self._settings.start, ceiling()))
        self._phase = "slow_start"
        self._reference: float | None = None  # rate before the current trial, or settled rate
        self._trial_from = self.level
        self._settled_intervals = 0
        self._low_intervals = 0
        self._congestion: str | None = None
        self._window_start: float | None = None
        self._chunks = 0
        self._batches = 0
        # the interval right after a change is not measured: new executors open connections
        # and the old level's batches are still finishing
        self._warming = False

    def batch_done(self, chunks: int, now: float | None = None) -> int:
        """A batch committed `chunks` chunks; returns the level executors should run at."""
        now = self._clock() if now is None else now
        if self._window_start is None:
            self._window_start = now
        self._chunks += chunks
        self._batches += 1
        elapsed = now - self._window_start
        if elapsed >= self._settings.interval and self._batches >= self.level:
            if self._warming and self._congestion is None:
                self._warming = False
            else:
                old = self.level
                self._decide(self._chunks / elapsed)
                self._warming = self.level != old
            self._window_start, self._chunks, self._batches = now, 0, 0
        return self.level

    def congested(self, reason: str) -> None:
        """The provider pushed back (429, timeout, 5xx); acted on at the interval's end."""
        self._congestion = reason

    def restart_window(self) -> None:
        """Forget the partial interval: the gap between two drains is not slow throughput."""
        self._window_start, self._chunks, self._batches = None, 0, 0

    def _decide(self, rate: float) -> None:
        ceiling = max(1, self._ceiling())
        old = self.level
        if self._congestion is not None:
            reason, self._congestion = self._congestion, None
            self._settle(math.floor(old * self._settings.congestion_factor))
            self._log(old, f"the provider pushed back ({reason})")
        elif self._phase == "slow_start":
            self._slow_start(rate, ceiling)
        elif self._phase == "probe":
            self._probe(rate, ceiling)
        elif self._phase == "fall_trial":
            self._fall_trial(rate)
        else:
            self._steady(rate, ceiling)
        if self.level > ceiling:
            self.level = ceiling
            self._log(old, "connection budget")

    def _slow_start(self, rate: float, ceiling: int) -> None:
        old = self.level
        gain = self._settings.slow_start_gain
        if self._reference is None or rate >= self._reference * (1 + gain):
            self._reference = rate
            if old >= ceiling:
                self._settle(old)
                return
            self._trial_from, self.level = old, min(ceiling, old * 2)
            self._log(old, f"throughput grew to {rate:,.0f} chunks/s")
            return
        # the last doubling did not pay: keep it unless it did clearly worse (noise either way
        # is likelier than harm from a few more executors)
        keep = old if rate >= self._reference * (1 - self._settings.worse) else self._trial_from
        self._settle(keep)
        self._log(old, f"throughput flat at {rate:,.0f} chunks/s")

    def _probe(self, rate: float, ceiling: int) -> None:
        old = self.level
        assert self._reference is not None
        if rate >= self._reference * (1 + self._settings.probe_gain) and old < ceiling:
            self._reference, self._trial_from, self.level = rate, old, old + 1
            self._log(old, f"one more executor paid ({rate:,.0f} chunks/s)")
        elif rate >= self._reference * (1 + self._settings.probe_gain):
            self._settle(old)
        else:
            self._settle(self._trial_from)
            self._log(old, f"one more executor did not pay ({rate:,.0f} chunks/s)")

    def _fall_trial(self, rate: float) -> None:
        old = self.level
        assert self._reference is not None
        if rate >= self._reference * (1 + self._settings.fall_gain):
            self._settle(old)  # fewer executors did better: they were in each other's way
            return
        self._settle(self._trial_from)
        self._log(old, f"fewer executors did not help ({rate:,.0f} chunks/s)")

    def _steady(self, rate: float, ceiling: int) -> None:
        old = self.level
        if self._reference is None:
            self._reference = rate
            return
        if rate < self._reference * self._settings.fall_threshold:
            self._low_intervals += 1
            if self._low_intervals >= self._settings.fall_intervals:
                self._settle(math.floor(old * self._settings.fall_factor))
                self._phase, self._trial_from, self._reference = "fall_trial", old, rate
                self._log(old, f"throughput fell to {rate:,.0f} chunks/s")
            return
        self._low_intervals = 0
        # a slowly moving reference: one noisy interval neither trips nor resets it
        self._reference = 0.7 * self._reference + 0.3 * rate
        self._settled_intervals += 1
        if self._settled_intervals >= self._settings.probe_every and old < ceiling:
            self._phase, self._trial_from, self.level = "probe", old, old + 1
            self._log(old, "probing")

    def _settle(self, level: int) -> None:
        self.level = max(1, level)
        self._phase = "steady"
        self._reference = None  # measured afresh at the new level
        self._settled_intervals = 0
        self._low_intervals = 0

    def _log(self, old: int, why: str) -> None:
        if self.level != old:
            log.info(
                "vectorizer %s: concurrency %d -> %d (%s)",
                self.name,
                old,
                self.level,
                why,
                extra={"concurrency": self.level},
            )


class ConnectionBudget:
    """A worker's executor connections, split fairly between the vectorizers draining now.

    Vectorizers with an explicit concurrency take what they asked for; the adaptive ones share
    the rest equally (at least one executor each, whatever the budget).
    """

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.executors = max(1, max_connections - RESERVED_CONNECTIONS)
        self._fixed: dict[int, int] = {}
        self._adaptive: set[int] = set()

    def enter(self, vectorizer_id: int, fixed: int | None) -> None:
        if fixed is None:
            self._adaptive.add(vectorizer_id)
        else:
            self._fixed[vectorizer_id] = fixed

    def leave(self, vectorizer_id: int) -> None:
        self._adaptive.discard(vectorizer_id)
        self._fixed.pop(vectorizer_id, None)

    def share(self) -> int:
        """The ceiling of one adaptive vectorizer right now."""
        free = self.executors - sum(self._fixed.values())
        return max(1, free // max(1, len(self._adaptive)))
