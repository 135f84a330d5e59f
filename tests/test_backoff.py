"""The one backoff formula (vectorizer.backoff) and the one error-row builder
(vectorizer.reporting.error_row) that the worker's failure paths share."""

from __future__ import annotations

import json
import random

from vectorizer.backoff import BREAKER, DATABASE, ROW_RETRY, Backoff
from vectorizer.config import Vectorizer
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


def _vectorizer() -> Vectorizer:
    return Vectorizer.model_validate(
        {
            "id": 7,
            "name": "docs",
            "source_schema": "public",
            "source_table": "docs",
            "source_pk": [{"attname": "id", "typname": "int4", "attnum": 1, "pknum": 1}],
            "queue_schema": "ai",
            "queue_table": "_vectorizer_q_7",
            "queue_failed_table": "_vectorizer_q_failed_7",
            "disabled": False,
            "config": {
                "version": "0.12.1",
                "loading": {"implementation": "column", "column_name": "body"},
                "parsing": {"implementation": "auto"},
                "chunking": {"implementation": "none"},
                "formatting": {"implementation": "chunk_value"},
                "embedding": {
                    "implementation": "openai",
                    "model": "text-embedding-3-small",
                    "dimensions": 4,
                },
                "processing": {"implementation": "default"},
                "destination": {
                    "implementation": "table",
                    "target_schema": "public",
                    "target_table": "docs_store",
                },
            },
        }
    )


def test_a_row_error_row_carries_pgai_keys_and_the_row() -> None:
    message, details = error_row(
        _vectorizer(), "loading", "no such file", pk={"id": 3}, is_retryable=True, attempts=2
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
    message, details = error_row(_vectorizer(), "embedding", "bad key", retry_in_seconds=30.0)
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
