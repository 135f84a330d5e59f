"""Rows deleted or re-keyed while their batch waits for the provider leave no embeddings behind
(issue 18). The real worker as a subprocess, the real Postgres, the fake OpenAI server made slow
so the changes land while a batch is in flight."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    assert_vector,
    create_source,
    create_vectorizer,
    daemon,
    queue_rows,
    run_ok,
    run_worker,
    store_rows,
    wait_for,
    worker_env,
)

# Every word is one chunk: two words joined would be longer than 10 characters.
WORD_CHUNKS = "ai.chunking_character_text_splitter(10, 0, ' ')"


def three_word_rows(count: int) -> list[tuple[int, str, str]]:
    return [(i, f"t{i}", f"alpha{i} beta{i} gamma{i}") for i in range(1, count + 1)]


def orphan_keys(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute(
        "select distinct e.id from docs_embedding_store e"
        " where not exists (select 1 from docs d where d.id = e.id) order by 1"
    ).fetchall()
    return [key for (key,) in rows]


def assert_store_matches_source(conn: psycopg.Connection) -> None:
    """Every source row has exactly the chunks of its current body, with their vectors."""
    bodies = dict(conn.execute("select id, body from docs").fetchall())
    stored: dict[int, list[tuple[int, str, list[float]]]] = {}
    for key, seq, chunk, embedding in store_rows(conn):
        stored.setdefault(key, []).append((seq, chunk, embedding))
    assert sorted(stored) == sorted(bodies)
    for key, body in bodies.items():
        words = body.split(" ")
        assert [(seq, chunk) for seq, chunk, _ in stored[key]] == list(enumerate(words)), key
        for _, chunk, embedding in stored[key]:
            assert_vector(embedding, chunk)


def test_delete_and_key_change_during_a_slow_batch_leave_no_orphans(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    """The issue's reproduction: 100 rows, 3 s per embedding request; while the first batch
    waits, even rows are deleted and every id % 10 = 1 is re-keyed."""
    create_source(conn, rows=three_word_rows(100))
    create_vectorizer(conn, chunking=WORD_CHUNKS)
    fake_openai.configure(latency=3.0)
    env = worker_env(fake_openai)

    with daemon(db_url, env=env, once=True) as handle:
        wait_for(lambda: fake_openai.max_in_flight, 30, what="an embeddings request in flight")
        started = time.monotonic()
        conn.execute("delete from docs where id % 2 = 0")
        conn.execute("update docs set id = id + 100000 where id % 10 = 1")
        changes_took = time.monotonic() - started
        assert handle.wait(90) == 0, handle.stderr()

    # the changes never waited for the provider's 3 s answer
    assert changes_took < 2.5
    # the first batch really embedded rows that were gone by the time it wrote
    sent = {text for request in fake_openai.requests for text in request.inputs}
    assert {"alpha2", "alpha11"} <= sent
    assert orphan_keys(conn) == []

    fake_openai.configure(latency=0.0)
    run_ok(db_url, env=env)
    assert orphan_keys(conn) == []
    assert_store_matches_source(conn)
    keys = [key for (key,) in conn.execute("select id from docs order by id").fetchall()]
    assert len(keys) == 50
    assert [key for key in keys if key > 100000] == [100000 + i for i in range(1, 100, 10)]


@pytest.mark.parametrize("outcome", ["rollback", "commit"])
def test_a_row_being_deleted_is_requeued_without_waiting(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI, outcome: str
) -> None:
    """A DELETE still open when the batch writes: the batch neither waits for it nor writes
    the row; the key comes back uncharged, and is embedded if the DELETE rolls back, or owns
    nothing if it commits."""
    create_source(conn, rows=three_word_rows(3))
    vid = create_vectorizer(conn, chunking=WORD_CHUNKS)
    fake_openai.configure(latency=1.5)
    env = worker_env(fake_openai)

    with psycopg.connect(db_url) as deleter, daemon(db_url, env=env, once=True) as handle:
        wait_for(lambda: fake_openai.max_in_flight, 30, what="an embeddings request in flight")
        deleter.execute("delete from docs where id = 2")  # left open: row 2 stays locked
        # the run ends while the DELETE is still open: nothing waited on it
        assert handle.wait(60) == 0, handle.stderr()
        assert sorted({key for key, *_ in store_rows(conn)}) == [1, 3]
        [(key, retries, retry_after)] = queue_rows(conn, vid)
        assert (key, retries) == (2, 0)
        assert retry_after is not None
        if outcome == "commit":
            deleter.commit()
        else:
            deleter.rollback()

    fake_openai.configure(latency=0.0)
    time.sleep(2.1)  # the busy retry delay
    run_ok(db_url, env=env)
    assert orphan_keys(conn) == []
    assert_store_matches_source(conn)
    assert len(store_rows(conn)) == (6 if outcome == "commit" else 9)
    assert queue_rows(conn, vid) == []


def test_column_destination_rekeyed_rows_end_with_the_vector_of_their_text(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, rows=[(i, f"t{i}", f"text {i}") for i in range(1, 21)])
    conn.execute("alter table docs add column embedding vector(8)")
    create_vectorizer(
        conn, destination="ai.destination_column('embedding')", chunking="ai.chunking_none()"
    )
    fake_openai.configure(latency=2.0)
    env = worker_env(fake_openai)

    with daemon(db_url, env=env, once=True) as handle:
        wait_for(lambda: fake_openai.max_in_flight, 30, what="an embeddings request in flight")
        conn.execute("update docs set id = id + 1000 where id % 3 = 0")
        conn.execute("update docs set id = id + 2000, body = 'new ' || body where id % 3 = 1")
        conn.execute("delete from docs where id % 5 = 0")
        assert handle.wait(60) == 0, handle.stderr()

    fake_openai.configure(latency=0.0)
    run_ok(db_url, env=env)
    rows = conn.execute("select id, body, embedding::float4[] from docs order by id").fetchall()
    assert len(rows) == 16
    for key, body, embedding in rows:
        assert embedding is not None, key
        assert_vector(embedding, body)


def test_worker_exit_is_not_delayed_by_an_open_delete(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    """The column destination locks FOR NO KEY UPDATE SKIP LOCKED too: an open DELETE of a
    batch row does not hold the batch up."""
    create_source(conn, rows=[(i, f"t{i}", f"text {i}") for i in range(1, 4)])
    conn.execute("alter table docs add column embedding vector(8)")
    vid = create_vectorizer(
        conn, destination="ai.destination_column('embedding')", chunking="ai.chunking_none()"
    )
    fake_openai.configure(latency=1.0)
    with psycopg.connect(db_url) as deleter:
        with daemon(db_url, env=worker_env(fake_openai), once=True) as handle:
            wait_for(lambda: fake_openai.max_in_flight, 30, what="an embeddings request in flight")
            deleter.execute("delete from docs where id = 2")
            assert handle.wait(60) == 0, handle.stderr()
        embedded = conn.execute(
            "select id from docs where embedding is not null order by id"
        ).fetchall()
        assert embedded == [(1,), (3,)]
        assert [key for key, *_ in queue_rows(conn, vid)] == [2]
        deleter.commit()
    result = run_worker(db_url, env=worker_env(fake_openai))
    assert result.returncode == 0
