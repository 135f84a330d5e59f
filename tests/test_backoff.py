"""The one backoff formula (vectorizer.backoff) and the one error-row builder
(vectorizer.reporting.error_row) that the worker's failure paths share."""

from __future__ import annotations

import json
import random

from tests.worker_helpers import catalog_vectorizer
from vectorizer.backoff import BREAKER, DATABASE, ROW_RETRY, Backoff
from vectorizer.reporting import error_row


def test_doubles_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 30.0)
    assert [backoff.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30.0  # a long outage neither overflows nor exceeds the cap


def test_jitter_stays_within_its_band() -> None:
    rng = random.Random(7)
    for failures in range(6):
        ceiling = Backoff(1.0, 60.0).ceiling(failures)
        full = [Backoff(1.0, 60.0, "full").delay(failures, rng) for _ in range(200)]
        equal = [Backoff(1.0, 60.0, "equal").delay(failures, rng) for _ in range(200)]
        spread = [Backoff(1.0, 60.0, "spread").delay(failures, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in full) and min(full) < ceiling / 2
        assert all(ceiling / 2 <= d <= ceiling for d in equal)
        assert all(0.8 * ceiling <= d <= 1.2 * ceiling for d in spread)


def test_the_worker_defaults() -> None:
    # a failed row waits 3 minutes, then 6, ... at most an hour (pgai's numbers)
    assert (ROW_RETRY.delay(0), ROW_RETRY.delay(1), ROW_RETRY.delay(20)) == (180, 360, 3600)
    assert 24 <= BREAKER.delay(0) <= 36 and BREAKER.ceiling(20) == 600
    assert (DATABASE.delay(1), DATABASE.delay(20)) == (1.0, 5.0)


def test_a_row_error_row_carries_pgai_keys_and_the_row() -> None:
    message, details = error_row(
        catalog_vectorizer(), "loading", "no such file", pk={"id": 3}, is_retryable=True, attempts=2
    )
    assert message == "loading failed"
    assert json.loads(details) == {
        "error_reason": "no such file",
        "loader": "column",
        "step": "loading",
        "pk": {"id": 3},
        "is_retryable": True,
        "attempts": 2,
    }


def test_vectorizer_error_rows_name_the_provider_or_say_unexpected() -> None:
    message, details = error_row(
        catalog_vectorizer(), "embedding", "bad key", retry_in_seconds=30.0
    )
    assert message == "embedding provider failed"
    assert json.loads(details) == {
        "error_reason": "bad key",
        "provider": "openai",
        "step": "embedding",
        "retry_in_seconds": 30.0,
    }
    message, details = error_row(None, None, "RuntimeError: boom", retry_in_seconds=1.0)
    assert message == "vectorizer failed with unexpected error"
    assert json.loads(details) == {"error_reason": "RuntimeError: boom", "retry_in_seconds": 1.0}
    assert error_row(None, "indexing", "no hnsw")[0] == "vector index build failed"
