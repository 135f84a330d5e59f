"""The adaptive concurrency controller's decisions, driven by fed observations (no sleeps)."""

from __future__ import annotations

import pytest

from vectorizer.concurrency import (
    RESERVED_CONNECTIONS,
    AdaptiveConcurrency,
    AimdSettings,
    ConnectionBudget,
)

SETTINGS = AimdSettings(interval=1.0, probe_every=3, start=1)


class Feed:
    """Feeds a controller one interval at a time at a given throughput (chunks/s)."""

    def __init__(self, ceiling: int = 16, settings: AimdSettings = SETTINGS) -> None:
        self.ceiling = ceiling
        self.controller = AdaptiveConcurrency("test", lambda: self.ceiling, settings, clock=_no)
        self.now = 0.0
        self.controller.batch_done(0, now=self.now)  # opens the first window

    def interval(self, rate: float) -> int:
        """One measured interval; after a change, also the warm-up interval that follows."""
        level = self._one(rate)
        if level != self._one_before:
            self._one(rate)  # not measured: the controller ignores it
        return self.controller.level

    def _one(self, rate: float) -> int:
        self._one_before = level = self.controller.level
        for i in range(level):  # one batch per executor, the last closes the interval
            self.controller.batch_done(int(rate / level), now=self.now + (i + 1) / level)
        self.now += 1.0
        return self.controller.level


def _no() -> float:
    raise AssertionError("the tests feed the clock")


def test_the_default_start_is_eight_within_the_ceiling() -> None:
    assert AdaptiveConcurrency("v", lambda: 17).level == 8
    assert AdaptiveConcurrency("v", lambda: 2).level == 2


def test_slow_start_doubles_while_throughput_grows() -> None:
    feed = Feed()
    assert feed.controller.level == 1
    assert feed.interval(100) == 2  # first measurement: try two
    assert feed.interval(190) == 4
    assert feed.interval(370) == 8


def test_the_interval_after_a_change_is_not_measured() -> None:
    feed = Feed()
    assert feed._one(100) == 2
    assert feed._one(10) == 2  # warming up: a collapse here is not held against level 2
    assert feed._one(190) == 4


def test_a_doubling_that_does_not_pay_settles_on_the_better_level() -> None:
    feed = Feed()
    for rate in (100, 190, 370):
        feed.interval(rate)
    assert feed.controller.level == 8
    assert feed.interval(380) == 8  # +3 %: kept (it did no harm), no further doubling
    feed = Feed()
    for rate in (100, 190, 370):
        feed.interval(rate)
    assert feed.interval(300) == 8  # -19 %: within one interval's noise, kept
    feed = Feed()
    for rate in (100, 190, 370):
        feed.interval(rate)
    assert feed.interval(250) == 4  # -32 %: clearly worse than at 4, back to 4


def test_settled_level_probes_one_more_and_keeps_it_only_when_it_pays() -> None:
    feed = Feed()
    for rate in (100, 105):  # two executors bought 5 %: kept, but no doubling further
        feed.interval(rate)
    assert feed.controller.level == 2
    levels = [feed.interval(200) for _ in range(4)]  # measure, then 3 settled intervals
    assert levels == [2, 2, 2, 3]  # probing 3
    assert feed.interval(260) == 4  # it paid (+30 %): probe again
    assert feed.interval(262) == 3  # +1 %: did not pay, back to 3


def test_pushback_halves_the_level() -> None:
    feed = Feed()
    for rate in (100, 190, 370):
        feed.interval(rate)
    assert feed.controller.level == 8
    feed.controller.congested("429")
    assert feed.interval(700) == 4  # even though throughput grew
    feed.controller.congested("transient error")
    assert feed.interval(700) == 2
    feed.controller.congested("429")
    feed.interval(700)
    feed.controller.congested("429")
    assert feed.interval(700) == 1  # never below one


def test_falling_throughput_cuts_the_level() -> None:
    feed = Feed()
    for rate in (100, 190, 370, 380):
        feed.interval(rate)
    assert feed.controller.level == 8
    assert feed.interval(400) == 8  # measures the settled rate
    assert feed.interval(390) == 8  # noise
    assert feed.interval(150) == 8  # one low interval: a busy neighbour, maybe
    assert feed.interval(380) == 8  # recovered
    assert feed.interval(150) == 8
    assert feed.interval(140) == 8  # two low intervals: still maybe a neighbour
    assert feed.interval(140) == 6  # three in a row under 60 % of the settled rate: x 0.75


def test_a_cut_for_falling_throughput_is_kept_only_when_it_pays() -> None:
    def fallen() -> Feed:
        feed = Feed()
        for rate in (100, 190, 370, 380, 400, 150, 140):
            feed.interval(rate)
        assert feed.interval(140) == 6
        return feed

    # the database was busy (a checkpoint): six executors do no better than eight did
    feed = fallen()
    assert feed.interval(142) == 8
    feed = fallen()
    assert feed.interval(145) == 8  # +7 % (136 measured at eight): noise, the cut is undone
    assert feed.interval(390) == 8  # and the settled rate is measured afresh at eight
    # eight were in each other's way: six do clearly better, and stay
    feed = fallen()
    assert feed.interval(300) == 6
    assert feed.interval(300) == 6


def test_level_stays_within_the_ceiling() -> None:
    feed = Feed(ceiling=5)
    rates = iter((100, 190, 370, 700, 1400))
    levels = [feed.interval(next(rates)) for _ in range(4)]
    assert levels == [2, 4, 5, 5]
    feed.ceiling = 2  # another vectorizer started draining
    assert feed.interval(1400) == 2


def test_an_interval_needs_a_batch_per_executor() -> None:
    feed = Feed()
    feed.interval(100)
    assert feed.controller.level == 2
    # a long interval with only one batch of two executors decides nothing yet
    assert feed.controller.batch_done(500, now=feed.now + 5) == 2


def test_restart_window_ignores_the_gap_between_drains() -> None:
    feed = Feed()
    feed.interval(100)
    feed.controller.restart_window()
    # the first batch of the next drain, minutes later, opens a window rather than closing one
    assert feed.controller.batch_done(10, now=feed.now + 300) == 2


def test_budget_is_shared_fairly_and_fixed_concurrency_takes_its_own() -> None:
    budget = ConnectionBudget(max_connections=20)
    executors = 20 - RESERVED_CONNECTIONS
    assert ConnectionBudget().executors == 12
    budget.enter(1, None)
    assert budget.share() == executors
    budget.enter(2, None)
    assert budget.share() == executors // 2
    budget.enter(3, 5)  # explicit concurrency wins and is not shared
    assert budget.share() == (executors - 5) // 2
    budget.leave(1)
    budget.leave(3)
    assert budget.share() == executors


@pytest.mark.parametrize("max_connections", [1, 2, 3])
def test_a_tiny_budget_still_runs_one_executor(max_connections: int) -> None:
    budget = ConnectionBudget(max_connections=max_connections)
    budget.enter(1, None)
    budget.enter(2, 40)
    assert budget.share() == 1
