"""The worker command's garbage-collector threshold (vectorizer.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from vectorizer import collector
from vectorizer.embedders.ollama import OllamaEmbedder
from vectorizer.embedders.openai import OpenAIEmbedder


@pytest.fixture(autouse=True)
def restore_thresholds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(collector, "_replaced", None)
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
    collector.embedder_in_use(frees_answers=False)
    assert gc.get_threshold() == (50_000, 5, 5)


def test_a_collector_switched_off_by_threshold_stays_off() -> None:
    gc.set_threshold(0, 10, 10)
    collector.tune()
    assert gc.get_threshold() == (0, 10, 10)


def test_an_embedder_that_leaves_answers_in_cycles_brings_the_default_back() -> None:
    gc.set_threshold(700, 10, 10)
    collector.tune()
    collector.embedder_in_use(frees_answers=True)
    assert gc.get_threshold() == (collector.GEN0_THRESHOLD, 10, 10)
    collector.embedder_in_use(frees_answers=False)
    assert gc.get_threshold() == (700, 10, 10)
    collector.embedder_in_use(frees_answers=True)  # for the rest of the process
    assert gc.get_threshold() == (700, 10, 10)


def test_only_embedders_that_unlink_their_answers_say_so() -> None:
    assert OpenAIEmbedder.frees_answers
    assert not OllamaEmbedder.frees_answers
