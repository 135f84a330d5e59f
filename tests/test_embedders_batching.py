"""Packing inputs into requests: pure function, checked case by case and by invariants."""

from __future__ import annotations

import itertools
import random

import pytest

from vectorizer.embedders.batching import pack


def sizes(ranges: list[range]) -> list[int]:
    return [len(r) for r in ranges]


def test_empty_input_gives_no_requests() -> None:
    assert pack([], max_inputs=10, max_tokens=100) == []


def test_everything_fits_in_one_request() -> None:
    assert pack([1, 2, 3], max_inputs=10, max_tokens=100) == [range(0, 3)]


def test_splits_on_input_count() -> None:
    assert sizes(pack([1] * 10, max_inputs=4, max_tokens=None)) == [4, 4, 2]


def test_splits_on_token_budget() -> None:
    assert pack([40, 40, 40, 40], max_inputs=100, max_tokens=100) == [range(0, 2), range(2, 4)]


def test_token_budget_is_inclusive() -> None:
    assert pack([50, 50, 1], max_inputs=100, max_tokens=100) == [range(0, 2), range(2, 3)]


def test_whichever_limit_bites_first_wins() -> None:
    counts = [10, 10, 10, 90, 1, 1, 1, 1]
    assert pack(counts, max_inputs=3, max_tokens=100) == [
        range(0, 3),
        range(3, 6),
        range(6, 8),
    ]


def test_single_input_over_the_cap_gets_its_own_request() -> None:
    assert pack([5, 500, 5], max_inputs=10, max_tokens=100) == [
        range(0, 1),
        range(1, 2),
        range(2, 3),
    ]


def test_over_cap_inputs_in_a_row_each_alone() -> None:
    assert sizes(pack([500, 500, 500], max_inputs=10, max_tokens=100)) == [1, 1, 1]


def test_over_cap_input_first_and_last() -> None:
    assert pack([101, 1, 1, 101], max_inputs=10, max_tokens=100) == [
        range(0, 1),
        range(1, 3),
        range(3, 4),
    ]


def test_zero_token_inputs_only_count_against_inputs() -> None:
    assert sizes(pack([0] * 5000, max_inputs=2048, max_tokens=1)) == [2048, 2048, 904]


def test_no_token_limit() -> None:
    assert sizes(pack([10**9] * 3, max_inputs=2, max_tokens=None)) == [2, 1]


def test_one_input_per_request() -> None:
    assert sizes(pack([1, 2, 3], max_inputs=1, max_tokens=100)) == [1, 1, 1]


def test_openai_limits() -> None:
    # 2048 inputs of 100 tokens fit; 3000 inputs of 200 tokens are token-bound (1500/request).
    assert sizes(pack([100] * 2048, max_inputs=2048, max_tokens=300_000)) == [2048]
    assert sizes(pack([200] * 3000, max_inputs=2048, max_tokens=300_000)) == [1500, 1500]


@pytest.mark.parametrize(("max_inputs", "max_tokens"), [(0, 10), (-1, 10), (1, 0), (1, -5)])
def test_invalid_limits_are_refused(max_inputs: int, max_tokens: int) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        pack([1], max_inputs=max_inputs, max_tokens=max_tokens)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="input 1 is negative"):
        pack([1, -1], max_inputs=10, max_tokens=10)


def test_accepts_any_sequence() -> None:
    assert pack((3, 3, 3), max_inputs=2, max_tokens=None) == [range(0, 2), range(2, 3)]


@pytest.mark.parametrize("seed", range(40))
def test_invariants_on_random_inputs(seed: int) -> None:
    rng = random.Random(seed)
    counts = [rng.choice([0, 1, 5, 50, 400, 2000]) for _ in range(rng.randint(0, 300))]
    max_inputs = rng.randint(1, 40)
    max_tokens = rng.choice([None, 100, 1000, 5000])
    ranges = pack(counts, max_inputs=max_inputs, max_tokens=max_tokens)

    # Contiguous, in order, covering every input exactly once.
    assert [i for r in ranges for i in r] == list(range(len(counts)))
    for r in ranges:
        assert 1 <= len(r) <= max_inputs
        total = sum(counts[i] for i in r)
        if max_tokens is not None and total > max_tokens:
            assert len(r) == 1, "only a lone over-cap input may exceed the budget"
    # Greedy: no request could have taken the first input of the next one.
    for current, following in itertools.pairwise(ranges):
        total = sum(counts[i] for i in current) + counts[following[0]]
        too_many = len(current) + 1 > max_inputs
        too_big = max_tokens is not None and total > max_tokens
        assert too_many or too_big
