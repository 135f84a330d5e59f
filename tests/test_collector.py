"""The worker command's garbage-collector threshold (vectorizer.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from vectorizer import collector


@pytest.fixture(autouse=True)
def restore_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_the_default_threshold_is_raised_and_the_older_generations_kept() -> None:
    gc.set_threshold(700, 10, 10)
    collector.tune()
    assert gc.get_threshold() == (collector.GEN0_THRESHOLD, 10, 10)


def test_a_higher_threshold_a_program_set_is_kept() -> None:
    gc.set_threshold(50_000, 5, 5)
    collector.tune()
    assert gc.get_threshold() == (50_000, 5, 5)


def test_a_collector_switched_off_by_threshold_stays_off() -> None:
    gc.set_threshold(0, 10, 10)
    collector.tune()
    assert gc.get_threshold() == (0, 10, 10)
