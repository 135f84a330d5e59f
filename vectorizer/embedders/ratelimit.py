"""One request and token budget per (provider, API key, endpoint), shared by the whole process.

Every embedder that talks to the same endpoint with the same key gets the same `RateLimiter`
from `shared_limiter`, so the executors of one vectorizer, and all vectorizers that use that
key, draw from one budget instead of each discovering the provider's limit through 429s.

The budget is two token buckets (requests and tokens), refilled continuously. Their rates come
from, in order of trust:

* `x-ratelimit-limit/remaining/reset-{requests,tokens}` response headers (OpenAI's scheme,
  also used by many OpenAI-compatible servers): the provider says how much is left and how
  soon it refills, which also accounts for other processes that share the key;
* static budgets from the environment (`VECTORIZER_RATE_LIMIT_RPM`/`_TPM`, or per provider
  `VECTORIZER_<PROVIDER>_RPM`/`_TPM`); when both exist the lower rate wins;
* 429s: the request rate observed just before a 429 is the most the provider takes, so a 429
  sets an adaptive rate a little below it, which then creeps up again (additive increase,
  multiplicative decrease) until the next 429; the lowest known rate wins.

A 429 pauses everyone sharing the limiter, for the provider's `Retry-After` when it sends one,
otherwise for an exponential backoff with jitter and a cap. Being throttled never charges a row.

Waits are computed by reservation (each caller takes its share of the bucket, possibly going
into debt, and sleeps until the debt is repaid), so callers are served in arrival order and no
asyncio primitive is bound to an event loop: one limiter can serve several loops and threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import hashlib
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from vectorizer import env
from vectorizer.backoff import Backoff
from vectorizer.errors import TransientError

log = logging.getLogger(__name__)

# A static per-minute budget is enforced with at most this many seconds' worth of burst:
# providers quantise per-minute limits into short windows, so a full minute's burst would
# get 429s even though the minute's total is within budget.
STATIC_BURST_SECONDS = 1.0
# A static budget is paced at this share of the configured rate: requests reach the provider
# a little later and less evenly than we release them (scheduling, network), and a budget
# run at exactly the provider's limit turns that jitter into 429s.
STATIC_SAFETY = 0.9
# Backoff after a 429 that names no wait: 1 s * 2**(streak-1), equal jitter, at most 60 s.
THROTTLE_BACKOFF = Backoff(1.0, 60.0, "equal")
BACKOFF_CAP = THROTTLE_BACKOFF.cap
# A provider's Retry-After is honoured up to this long; anything longer is most likely a
# quota problem, and the driver's retry budget turns it into a vectorizer-level error.
MAX_PAUSE = 120.0
# Spread callers that wake together after a pause, so they don't arrive as one burst.
PAUSE_JITTER = 0.1
# After a 429: pace at this fraction of the request rate that was just too much...
ADAPTIVE_DECREASE = 0.8
# ...measured over this many seconds of successful requests...
ADAPTIVE_WINDOW = 2.0
# ...then grow by this fraction of that rate per second, up to this multiple of it.
ADAPTIVE_GROWTH = 0.1
ADAPTIVE_MAX_GROWTH = 2.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}

# The (requests, tokens) reserved by the request running in this task; lets `observe` tell
# the response's own request apart from the others still outstanding.
_current: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "vectorizer_rate_limit_reservation", default=None
)


def parse_duration(text: str | None) -> float | None:
    """Seconds in a reset header: `"12ms"`, `"6m0s"`, `"1h2m3.5s"`, `"0.5s"` or bare seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(text) and position > 0 else None


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    # Azure sometimes sends -1 for "unknown"; treat anything odd as absent.
    return value if math.isfinite(value) and value >= 0 else None


@dataclass(frozen=True)
class Budget:
    """A static budget: units per minute (requests or tokens)."""

    per_minute: float

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0 * STATIC_SAFETY

    @property
    def burst(self) -> float:
        return max(self.per_second * STATIC_BURST_SECONDS, 1.0)


class _Bucket:
    """A token bucket whose debt is allowed: callers reserve, then sleep until repaid."""

    __slots__ = (
        "adaptive_base",
        "adaptive_since",
        "capacity",
        "learned_rate",
        "level",
        "static_rate",
        "updated",
    )

    def __init__(self, budget: Budget | None, now: float) -> None:
        self.static_rate = budget.per_second if budget else None
        self.learned_rate: float | None = None
        self.adaptive_base: float | None = None
        self.adaptive_since = now
        self.capacity = budget.burst if budget else math.inf
        self.level = self.capacity
        self.updated = now

    @property
    def rate(self) -> float | None:
        return self.rate_at(self.updated)

    def rate_at(self, now: float) -> float | None:
        rates = [rate for rate in (self.static_rate, self.learned_rate) if rate]
        known = min(rates) if rates else None
        if self.adaptive_base is None:
            return known
        growth = 1.0 + ADAPTIVE_GROWTH * max(now - self.adaptive_since, 0.0)
        adaptive = self.adaptive_base * growth
        if growth >= ADAPTIVE_MAX_GROWTH or (known is not None and adaptive >= known):
            # Grown back past what caused the 429, or no longer the binding limit: forget it.
            self.adaptive_base = None
            return known
        return adaptive if known is None else min(known, adaptive)

    def adapt(self, observed: float, now: float) -> None:
        """A 429 after `observed` successful requests per second: slow down below that."""
        self._refill(now)
        current = self.rate_at(now)
        base = observed if current is None else min(observed, current)
        self.adaptive_base = ADAPTIVE_DECREASE * base
        self.adaptive_since = now
        if math.isinf(self.capacity):
            self.capacity = max(self.adaptive_base * STATIC_BURST_SECONDS, 1.0)

    def _refill(self, now: float) -> None:
        rate = self.rate_at(now)
        if rate is not None and now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def reserve(self, cost: float, now: float) -> float:
        """Take `cost` units; the seconds to wait before using them."""
        self._refill(now)
        rate = self.rate
        if rate is None:
            return 0.0
        # A request larger than the whole bucket goes when the bucket is full: it can never
        # fit, and waiting longer than that would only waste the budget.
        needed = min(cost, self.capacity)
        wait = max(0.0, (needed - self.level) / rate)
        self.level -= cost
        return wait

    def empty(self, now: float) -> None:
        self._refill(now)
        if self.rate_at(now) is not None:
            self.level = 0.0

    def cap(self, available: float, now: float) -> None:
        """The provider says only `available` units are left: never assume more."""
        self._refill(now)
        self.level = min(self.level, available)

    def learn(
        self, limit: float | None, remaining: float, reset: float | None, others: float, now: float
    ) -> None:
        self._refill(now)
        if limit is not None and limit > 0:
            static_burst = self.capacity if self.static_rate else math.inf
            self.capacity = min(limit, static_burst)
            # The used part (limit - remaining) comes back within `reset`: that is the refill
            # rate for a bucket, and a lower bound for a fixed window.
            if reset is not None and reset > 0 and limit > remaining:
                self.learned_rate = (limit - remaining) / reset
        # What the provider has not yet seen is ours to subtract: requests still in flight
        # or waiting, other than the one this response answers.
        self.level = min(self.level, remaining - others)


class RateLimiter:
    """Request and token budgets for one (provider, API key, endpoint)."""

    def __init__(
        self,
        name: str = "unlimited",
        *,
        requests: Budget | None = None,
        tokens: Budget | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        now = clock()
        self._requests = _Bucket(requests, now)
        self._tokens = _Bucket(tokens, now)
        self._paused_until = 0.0
        self._streak = 0
        # When the last 429 was handled: 429s for requests sent before it are echoes of the
        # same overload (they were in flight together) and must not slow us down again.
        self._last_throttle = -math.inf
        # Bumped by each new 429: reservations from an older epoch are taken again.
        self._epoch = 0
        # When recent requests succeeded (for the adaptive rate), oldest first.
        self._successes: collections.deque[float] = collections.deque()
        self._outstanding_requests = 0
        self._outstanding_tokens = 0
        # Counters for logs, benchmarks and tests.
        self.throttles = 0
        self.waited = 0.0

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.name!r}, requests/s={self._requests.rate}, "
            f"tokens/s={self._tokens.rate})"
        )

    @property
    def requests_per_second(self) -> float | None:
        return self._requests.rate_at(self._clock())

    @property
    def tokens_per_second(self) -> float | None:
        return self._tokens.rate_at(self._clock())

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    @asynccontextmanager
    async def request(self, tokens: int) -> AsyncIterator[None]:
        """Wait for budget for one request of `tokens`, and hold it while the request runs.

        A `ThrottledError` raised inside pauses the limiter (see `throttled`) and propagates.
        """
        tokens = max(int(tokens), 0)
        with self._lock:
            self._outstanding_requests += 1
            self._outstanding_tokens += tokens
        reservation = _current.set((1, tokens))
        ok = False
        try:
            await self._wait_for_budget(tokens)
            sent = self._clock()
            try:
                yield
            except ThrottledError as exc:
                self.throttled(exc.retry_after, sent_at=sent)
                raise
            ok = True
        finally:
            _current.reset(reservation)
            with self._lock:
                self._outstanding_requests -= 1
                self._outstanding_tokens -= tokens
                if ok:
                    self._streak = 0
                    self._record_success()

    async def _wait_for_budget(self, tokens: int) -> None:
        while True:
            with self._lock:
                now = self._clock()
                epoch = self._epoch
                wait = max(
                    self._requests.reserve(1, now),
                    self._tokens.reserve(tokens, now),
                    self._paused_until - now,
                )
            await self._sleep(wait)
            await self._wait_out_pauses()
            with self._lock:
                if self._epoch == epoch:
                    return
            # A 429 while we slept: our place was booked at a rate that proved too high.

    def _record_success(self) -> None:
        now = self._clock()
        self._successes.append(now)
        while self._successes and self._successes[0] < now - ADAPTIVE_WINDOW:
            self._successes.popleft()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn from a response's `x-ratelimit-*` headers (keys as the provider sends them,
        looked up in lower case: pass a case-insensitive mapping or lower-cased keys)."""
        remaining_requests = _header_number(headers, "x-ratelimit-remaining-requests")
        remaining_tokens = _header_number(headers, "x-ratelimit-remaining-tokens")
        if remaining_requests is None and remaining_tokens is None:
            return  # the common case for providers without these headers: two lookups
        own_requests, own_tokens = _current.get() or (0, 0)
        with self._lock:
            now = self._clock()
            if remaining_requests is not None:
                self._learn(
                    self._requests,
                    headers,
                    "requests",
                    remaining_requests,
                    self._outstanding_requests - own_requests,
                    now,
                )
            if remaining_tokens is not None:
                self._learn(
                    self._tokens,
                    headers,
                    "tokens",
                    remaining_tokens,
                    self._outstanding_tokens - own_tokens,
                    now,
                )

    def _learn(
        self,
        bucket: _Bucket,
        headers: Mapping[str, str],
        kind: str,
        remaining: float,
        others: float,
        now: float,
    ) -> None:
        limit = _header_number(headers, f"x-ratelimit-limit-{kind}")
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        bucket.learn(limit, remaining, reset, max(others, 0.0), now)
        if bucket.rate is None and remaining - others <= 0 and reset:
            # No rate to pace by, but the provider says the budget is gone until `reset`.
            self._paused_until = max(self._paused_until, now + min(reset, MAX_PAUSE))

    def throttled(self, retry_after: float | None = None, *, sent_at: float | None = None) -> float:
        """A 429 for a request sent at `sent_at`: pause everyone sharing this limiter, and
        slow down unless it is an echo of a 429 already handled. Returns the pause."""
        with self._lock:
            self.throttles += 1
            now = self._clock()
            new_event = sent_at is None or sent_at >= self._last_throttle
            if new_event:
                self._streak += 1
                self._last_throttle = now
            if retry_after is not None:
                pause = min(max(retry_after, 0.0), MAX_PAUSE)
            else:
                pause = THROTTLE_BACKOFF.delay(self._streak - 1, self._rng)
            self._paused_until = max(self._paused_until, now + pause)
            if new_event:
                observed = self._observed_rate(now)
                if observed is not None:
                    self._requests.adapt(observed, now)
                # The provider has nothing left. Waiting callers will book again at the new
                # rate, so their debts are forgiven and everyone starts from empty buckets.
                self._epoch += 1
                for bucket in (self._requests, self._tokens):
                    bucket.empty(now)
        if new_event:
            log.info(
                "%s: rate limited by the provider; pausing every request on this key for %.2fs",
                self.name,
                pause,
            )
        return pause

    def _observed_rate(self, now: float) -> float | None:
        """Successful requests per second over the recent window; None with too few to tell."""
        while self._successes and self._successes[0] < now - ADAPTIVE_WINDOW:
            self._successes.popleft()
        if len(self._successes) < 2:
            return None
        # At least a second: a burst that all succeeded says nothing about the sustained rate.
        span = max(now - self._successes[0], 1.0)
        return len(self._successes) / span

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.waited += seconds
            await asyncio.sleep(seconds)

    async def _wait_out_pauses(self) -> None:
        # A 429 seen by someone else while this caller slept pauses it too.
        while True:
            remaining = self._paused_until - self._clock()
            if remaining <= 0:
                return
            await self._sleep(remaining + self._rng.uniform(0.0, PAUSE_JITTER * remaining))


class ThrottledError(TransientError):
    """The provider said 429: too many requests or tokens for this key right now."""


# --- the process-wide registry ---------------------------------------------------------------

_registry: dict[tuple[str, str, str], RateLimiter] = {}
_registry_lock = threading.Lock()


def shared_limiter(
    provider: str,
    api_key: str | None,
    endpoint: str | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> RateLimiter:
    """The limiter for (provider, key, endpoint), created with the environment's static
    budgets the first time it is asked for."""
    endpoint = (endpoint or "default").rstrip("/")
    key = (provider, _fingerprint(api_key), endpoint)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            requests, tokens = static_budgets(provider, os.environ if environ is None else environ)
            limiter = RateLimiter(f"{provider}@{endpoint}", requests=requests, tokens=tokens)
            _registry[key] = limiter
        return limiter


def forget_limiters() -> None:
    """Drop every shared limiter (tests, and a worker that reloads its settings)."""
    with _registry_lock:
        _registry.clear()


def static_budgets(
    provider: str, environ: Mapping[str, str]
) -> tuple[Budget | None, Budget | None]:
    """Budgets from `VECTORIZER_<PROVIDER>_RPM/_TPM`, else `VECTORIZER_RATE_LIMIT_RPM/_TPM`."""
    prefix = "VECTORIZER_" + re.sub(r"[^A-Z0-9]", "_", provider.upper())
    requests = _budget(environ, f"{prefix}_RPM") or _budget(environ, "VECTORIZER_RATE_LIMIT_RPM")
    tokens = _budget(environ, f"{prefix}_TPM") or _budget(environ, "VECTORIZER_RATE_LIMIT_TPM")
    return requests, tokens


def _budget(environ: Mapping[str, str], name: str) -> Budget | None:
    value = env.positive_number(name, environ, " per minute")
    return None if value is None else Budget(value)


def _fingerprint(api_key: str | None) -> str:
    # Keys never sit in the registry, only a digest that tells them apart.
    if not api_key:
        return ""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]
