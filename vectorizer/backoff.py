"""Exponential backoff: the one formula behind every wait after a failure (row retries, the
breaker, database reconnects, provider retries, 429 pauses, index builds)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

# none: exact; full: uniform in [0, d] (callers that failed together spread out the most);
# equal: uniform in [d/2, d]; spread: d within ±20% (keeps the order of magnitude)
Jitter = Literal["none", "full", "equal", "spread"]


@dataclass(frozen=True)
class Backoff:
    """`base * 2**failures_before`, capped at `cap`, then jittered."""

    base: float
    cap: float
    jitter: Jitter = "none"

    def ceiling(self, failures_before: int) -> float:
        # the exponent is bounded so a long outage cannot overflow the float
        return min(self.cap, self.base * 2 ** min(max(failures_before, 0), 32))

    def delay(self, failures_before: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after a failure that had `failures_before` failures before it."""
        ceiling = self.ceiling(failures_before)
        draw = (rng or random).random
        if self.jitter == "full":
            return ceiling * draw()
        if self.jitter == "equal":
            return ceiling / 2 + ceiling / 2 * draw()
        if self.jitter == "spread":
            return ceiling * (0.8 + 0.4 * draw())
        return ceiling


# Row-level failures: 3 minutes, doubling per attempt, at most an hour (pgai's defaults).
ROW_RETRY = Backoff(180.0, 3600.0)
# A vectorizer-level failure opens its breaker for 30 s, doubling up to 10 minutes.
BREAKER = Backoff(30.0, 600.0, "spread")
# A lost database connection (drain or LISTEN): 1 s, doubling up to 5 s. A reconnect attempt
# costs next to nothing; a longer cap only delays the worker once Postgres is back (a 5 s
# restart left it waiting up to 16 s in bench/chaos.py).
DATABASE = Backoff(0.5, 5.0)
