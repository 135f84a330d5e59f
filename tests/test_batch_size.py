"""The claim size (vectorizer.batch_size): configured, one document, or sized to ~400 chunks."""

from __future__ import annotations

from tests.worker_helpers import catalog_vectorizer
from vectorizer.batch_size import ROWS_START, TARGET_CHUNKS, BatchSize
from vectorizer.config import MAX_BATCH_SIZE


def test_a_configured_batch_size_never_moves() -> None:
    size = BatchSize(catalog_vectorizer(processing={"implementation": "default", "batch_size": 7}))
    for rows, chunks in [(7, 7), (7, 7000), (7, 0)]:
        size.observe(rows, chunks)
        assert size.rows == 7


def test_documents_go_one_at_a_time_whatever_they_hold() -> None:
    loading = {"implementation": "uri", "column_name": "url"}
    size = BatchSize(catalog_vectorizer(loading=loading))
    size.observe(1, 1)
    assert size.rows == 1


def test_short_rows_grow_the_claim_by_doubling_up_to_the_target() -> None:
    size = BatchSize(catalog_vectorizer())
    seen = [size.rows]
    for _ in range(6):
        size.observe(size.rows, size.rows)  # one chunk per row
        seen.append(size.rows)
    assert seen == [
        ROWS_START,
        100,
        200,
        TARGET_CHUNKS,
        TARGET_CHUNKS,
        TARGET_CHUNKS,
        TARGET_CHUNKS,
    ]


def test_long_rows_shrink_the_claim_at_once() -> None:
    size = BatchSize(catalog_vectorizer())
    size.observe(50, 50 * 100)  # a hundred chunks per row: 5,000 vectors in one batch
    assert size.rows == TARGET_CHUNKS // 100
    size.observe(4, 4 * 1000)
    assert size.rows == 1  # never zero


def test_rows_without_chunks_grow_it_by_doubling_only_and_never_past_the_maximum() -> None:
    size = BatchSize(catalog_vectorizer())
    size.observe(50, 0)
    assert size.rows == 100
    for _ in range(10):
        size.observe(size.rows, 0)
    assert size.rows == MAX_BATCH_SIZE
    size.observe(0, 0)  # a batch of deleted rows says nothing about chunks per row
    assert size.rows == MAX_BATCH_SIZE
