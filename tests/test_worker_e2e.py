"""The worker end to end: the real CLI as a subprocess, a real Postgres, the real openai SDK
over real HTTP to tests/fake_openai.py. Happy paths, destinations, keys and CLI settings."""

from __future__ import annotations

import psycopg
import pytest

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    DIMS,
    assert_vector,
    create_source,
    create_vectorizer,
    doc_rows,
    inputs_sent,
    queue_count,
    run_ok,
    store_rows,
    worker_env,
)


@pytest.fixture
def fake() -> FakeOpenAI:
    with FakeOpenAI() as server:
        yield server


def test_backfill_stores_formatted_chunks_from_seq_0(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    long_body = "alpha beta gamma delta. " * 10
    create_source(conn, rows=[(1, "one", long_body), (2, "two", "short body")])
    vid = create_vectorizer(
        conn,
        chunking="ai.chunking_character_text_splitter(60, 0, ' ')",
        formatting="ai.formatting_python_template('$title: $chunk')",
    )
    assert queue_count(conn, vid) == 2

    run_ok(db_url, env=worker_env(fake))

    rows = store_rows(conn)
    by_id: dict[int, list[tuple[int, str, list[float]]]] = {}
    for key, seq, chunk, embedding in rows:
        by_id.setdefault(key, []).append((seq, chunk, embedding))
    assert sorted(by_id) == [1, 2]
    assert [seq for seq, _, _ in by_id[1]] == list(range(len(by_id[1])))
    assert len(by_id[1]) > 1  # the long body was really split
    for seq, chunk, embedding in by_id[1]:
        assert chunk.startswith("one: ")
        assert_vector(embedding, chunk)
    assert [(seq, chunk) for seq, chunk, _ in by_id[2]] == [(0, "two: short body")]
    assert_vector(by_id[2][0][2], "two: short body", DIMS)
    assert set(inputs_sent(fake)) == {chunk for _, _, chunk, _ in rows}
    assert queue_count(conn, vid) == 0
