"""ai.alter_vectorizer end to end: the real worker CLI as a subprocess, a real Postgres, the fake
OpenAI server. A re-embed keeps search whole, re-embeds only new texts, survives a SIGKILL, and
an alter back cancels it without losing a vector; an in-place change embeds nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    MODEL,
    assert_vector,
    create_source,
    create_vectorizer,
    daemon,
    inputs_sent,
    run_ok,
    wait_for,
    worker_env,
)

# one paragraph per chunk under OLD; NEW splits the long paragraph and keeps the short one
OLD = "ai.chunking_recursive_character_text_splitter(70, 0)"
NEW = "ai.chunking_recursive_character_text_splitter(45, 0)"
DAEMON = ("--poll-interval", "0.2")
REEMBED_TIMEOUT = 300.0


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def body(doc: int) -> str:
    short = f"doc {doc} short note"
    long = f"doc {doc} first half of the long part, then doc {doc} its second half"
    return f"{short}\n\n{long}"


def source_rows(count: int) -> list[tuple[int, str, str]]:
    return [(i, f"title {i}", body(i)) for i in range(1, count + 1)]


def store(conn: psycopg.Connection, table: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        sql.SQL(
            "select id, chunk_seq, chunk, embedding::float4[], chunk_metadata, config_hash"
            " from {} order by id, chunk_seq"
        ).format(sql.Identifier("public", table))
    ).fetchall()


def reembed_finished(conn: psycopg.Connection, vectorizer_id: int) -> bool:
    row = conn.execute(
        "select finished_at is not null from ai._vectorizer_reembed where vectorizer_id = %s",
        (vectorizer_id,),
    ).fetchone()
    return bool(row and row[0])


def keys_done(conn: psycopg.Connection, vectorizer_id: int) -> int:
    row = conn.execute(
        "select reembed_keys_done from ai.vectorizer_status where id = %s", (vectorizer_id,)
    ).fetchone()
    return int(row[0] or 0) if row else 0


def provenance(conn: psycopg.Connection, vectorizer_id: int) -> bytes:
    row = conn.execute(
        "select ai._vectorizer_embedding_provenance(config) from ai.vectorizer where id = %s",
        (vectorizer_id,),
    ).fetchone()
    assert row is not None
    return bytes(row[0])


class SearchLoop:
    """A client querying the view in a loop: records, per query, how many source rows had
    at least one vector, and any error."""

    def __init__(self, db_url: str, view: str) -> None:
        self._db_url = db_url
        self._query = sql.SQL(
            "select count(distinct id), count(*) filter (where embedding is null) from {}"
        ).format(sql.Identifier("public", view))
        self._stop = threading.Event()
        self.results: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SearchLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with psycopg.connect(self._db_url, autocommit=True) as conn:
            while not self._stop.is_set():
                try:
                    row = conn.execute(self._query).fetchone()
                    assert row is not None
                    self.results.append((int(row[0]), int(row[1])))
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
                time.sleep(0.01)


def test_chunking_alter_keeps_search_whole_and_embeds_only_new_texts(
    db_url: str, conn: psycopg.Connection, fake: FakeOpenAI
) -> None:
    rows = 2000
    create_source(conn, "docs", source_rows(rows))
    vid = create_vectorizer(conn, "docs", chunking=OLD)
    run_ok(db_url, env=worker_env(fake))
    before = store(conn, "docs_embedding_store")
    assert len(before) == 2 * rows
    fake.reset()

    with (
        SearchLoop(db_url, "docs_embedding") as search,
        daemon(db_url, *DAEMON, env=worker_env(fake)) as worker,
    ):
        wait_for(lambda: len(search.results) >= 3, 60, what="the search loop's first queries")
        conn.execute(f"select ai.alter_vectorizer(%s, chunking => {NEW})", (vid,))
        wait_for(
            lambda: reembed_finished(conn, vid) or not worker.alive(),
            REEMBED_TIMEOUT,
            interval=0.5,
            what="the re-embed to finish",
        )
        assert worker.alive(), worker.stderr()
        wait_for(lambda: len(search.results) >= 3, 10)
    assert search.errors == []
    assert len(search.results) > 10
    # every query saw a vector for every source row, and never a row without one
    assert set(search.results) == {(rows, 0)}
    sent = inputs_sent(fake)

    after = store(conn, "docs_embedding_store")
    new_texts = {chunk for _, _, chunk, *_ in after} - {chunk for _, _, chunk, *_ in before}
    assert len(new_texts) == 2 * rows  # the long paragraph became two chunks
    assert sorted(sent) == sorted(new_texts)  # each new text once, nothing else
    assert len(after) == 3 * rows

    # the same as a fresh vectorizer built with the new config
    create_vectorizer(
        conn,
        "docs",
        name="fresh",
        chunking=NEW,
        destination="ai.destination_table(target_table => 'fresh_store', view_name => 'fresh')",
    )
    run_ok(db_url, "--vectorizer-id", "fresh", env=worker_env(fake))
    fresh = store(conn, "fresh_store")
    assert [r[:3] for r in after] == [r[:3] for r in fresh]
    assert [r[4] for r in after] == [r[4] for r in fresh]
    assert all(list(a[3]) == list(f[3]) and a[5] == f[5] for a, f in zip(after, fresh, strict=True))
    status = conn.execute(
        "select config_version, reembed_keys_done, chunks_older_config"
        " from ai.vectorizer_status where id = %s",
        (vid,),
    ).fetchone()
    assert status == (2, None, 0)


def test_processing_alter_sends_no_embedding_request(
    db_url: str, conn: psycopg.Connection, fake: FakeOpenAI
) -> None:
    create_source(conn, "docs", source_rows(30))
    vid = create_vectorizer(conn, "docs", chunking=OLD)
    run_ok(db_url, env=worker_env(fake))
    fake.reset()
    version = conn.execute(
        "select ai.alter_vectorizer(%s, processing => ai.processing_default(batch_size => 3))",
        (vid,),
    ).fetchone()
    assert version == (1,)
    run_ok(db_url, env=worker_env(fake))
    assert fake.requests == []
    row = conn.execute("select config from ai.vectorizer where id = %s", (vid,)).fetchone()
    assert row is not None and row[0]["processing"]["batch_size"] == 3


SMALL_MODEL = f"ai.embedding_openai('{MODEL}', 8)"
LARGE_MODEL = "ai.embedding_openai('text-embedding-3-large', 8)"


def model_alter_setup(db_url: str, conn: psycopg.Connection, fake: FakeOpenAI, rows: int) -> int:
    create_source(conn, "docs", source_rows(rows))
    vid = create_vectorizer(
        conn, "docs", chunking=OLD, processing="ai.processing_default(batch_size => 10)"
    )
    run_ok(db_url, env=worker_env(fake))
    fake.reset()
    return vid


def count_chunks(conn: psycopg.Connection, key: int) -> int:
    row = conn.execute("select count(*) from docs_embedding_store where id = %s", (key,)).fetchone()
    return int(row[0]) if row else 0


def assert_complete(conn: psycopg.Connection, vid: int, rows: int) -> None:
    """Every source row has its two chunks once, all embedded by the current config."""
    current = provenance(conn, vid)
    stored = store(conn, "docs_embedding_store")
    assert [(r[0], r[1]) for r in stored] == [(i, s) for i in range(1, rows + 1) for s in (0, 1)]
    assert {bytes(r[5]) for r in stored} == {current}


def test_kill_9_mid_reembed_then_restart_finishes_without_loss(
    db_url: str, conn: psycopg.Connection, fake: FakeOpenAI
) -> None:
    rows = 300
    vid = model_alter_setup(db_url, conn, fake, rows)
    fake.configure(latency=0.05)
    conn.execute(f"select ai.alter_vectorizer(%s, embedding => {LARGE_MODEL})", (vid,))
    with daemon(db_url, *DAEMON, env=worker_env(fake)) as worker:
        wait_for(lambda: keys_done(conn, vid) >= 40, REEMBED_TIMEOUT, interval=0.1)
        # a live insert goes ahead of the keys the re-embed has not queued yet
        conn.execute("insert into docs values (%s, 'live', %s)", (rows + 1, body(rows + 1)))
        wait_for(
            lambda: count_chunks(conn, rows + 1) == 2 or not worker.alive(),
            REEMBED_TIMEOUT,
            interval=0.05,
        )
        assert not reembed_finished(conn, vid)
        worker.kill()  # SIGKILL
    assert not reembed_finished(conn, vid)
    rows += 1
    fake.configure(latency=0.0)
    with daemon(db_url, *DAEMON, env=worker_env(fake)) as worker:
        wait_for(
            lambda: reembed_finished(conn, vid) or not worker.alive(),
            REEMBED_TIMEOUT,
            interval=0.5,
        )
        assert worker.alive(), worker.stderr()
    assert_complete(conn, vid, rows)
    large = [r for r in fake.embedded_requests if r.model == "text-embedding-3-large"]
    assert large and len(large) == len(fake.embedded_requests)


def test_altering_back_cancels_and_redoes_only_the_reembedded_keys(
    db_url: str, conn: psycopg.Connection, fake: FakeOpenAI
) -> None:
    rows = 300
    vid = model_alter_setup(db_url, conn, fake, rows)
    fake.configure(latency=0.05)
    conn.execute(f"select ai.alter_vectorizer(%s, embedding => {LARGE_MODEL})", (vid,))
    with daemon(db_url, *DAEMON, env=worker_env(fake)) as worker:
        wait_for(lambda: keys_done(conn, vid) >= 40, REEMBED_TIMEOUT, interval=0.1)
        version = conn.execute(
            f"select ai.alter_vectorizer(%s, embedding => {SMALL_MODEL})", (vid,)
        ).fetchone()
        assert version == (3,)
        small_before = provenance(conn, vid)
        wait_for(
            lambda: reembed_finished(conn, vid) or not worker.alive(),
            REEMBED_TIMEOUT,
            interval=0.5,
        )
        assert worker.alive(), worker.stderr()
    assert_complete(conn, vid, rows)
    assert provenance(conn, vid) == small_before
    # the keys the large model had re-embedded were re-done with the small one; the others
    # still had small-model vectors and were reused, so fewer than every row was sent again
    small = [t for r in fake.embedded_requests if r.model == MODEL for t in r.inputs]
    assert 0 < len(small) < 2 * rows


class DimsSearchLoop(SearchLoop):
    """A similarity search through the view in a loop, recording (dimensions, rows seen)."""

    def __init__(self, db_url: str, view: str) -> None:
        super().__init__(db_url, view)
        name = sql.Identifier("public", view)
        self._query = sql.SQL(
            "select min(vector_dims(embedding)), max(vector_dims(embedding)), count(distinct id)"
            " from (select id, embedding from {name} order by embedding <=>"
            " (select embedding from {name} order by id limit 1) limit 100000) s"
        ).format(name=name)
        self.dims: list[tuple[int, int, int]] = []

    def _run(self) -> None:
        with psycopg.connect(self._db_url, autocommit=True) as conn:
            while not self._stop.is_set():
                try:
                    row = conn.execute(self._query).fetchone()
                    assert row is not None
                    self.dims.append((int(row[0]), int(row[1]), int(row[2])))
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
                time.sleep(0.01)


def view_type(conn: psycopg.Connection, relation: str, column: str = "embedding") -> str | None:
    row = conn.execute(
        "select format_type(atttypid, atttypmod) from pg_attribute"
        " where attrelid = to_regclass(%s) and attname = %s and not attisdropped",
        (relation, column),
    ).fetchone()
    return row[0] if row else None


def test_new_dimensions_switch_the_view_only_at_the_swap(
    db_url: str, conn: psycopg.Connection, fake: FakeOpenAI
) -> None:
    rows = 300
    vid = model_alter_setup(db_url, conn, fake, rows)
    fake.configure(latency=0.05)
    with (
        DimsSearchLoop(db_url, "docs_embedding") as search,
        daemon(db_url, *DAEMON, env=worker_env(fake)) as worker,
    ):
        wait_for(lambda: len(search.dims) >= 3, 60, what="the search loop's first queries")
        conn.execute(
            "select ai.alter_vectorizer(%s,"
            " embedding => ai.embedding_openai('text-embedding-3-large', 16))",
            (vid,),
        )
        wait_for(lambda: keys_done(conn, vid) >= 40, REEMBED_TIMEOUT, interval=0.1)
        # mid-way: the shadow fills, the view still serves the old store
        assert view_type(conn, "public.docs_embedding") == "vector(8)"
        assert view_type(conn, "public.docs_embedding_store_v2") == "vector(16)"
        wait_for(
            lambda: reembed_finished(conn, vid) or not worker.alive(),
            REEMBED_TIMEOUT,
            interval=0.5,
        )
        assert worker.alive(), worker.stderr()
        seen = len(search.dims)
        wait_for(lambda: len(search.dims) >= seen + 3, 30)
    assert search.errors == []
    # each query saw one store whole: every row, all of one size; 8 until the swap, then 16
    assert {(low, high, n) for low, high, n in search.dims} == {(8, 8, rows), (16, 16, rows)}
    sizes = [low for low, _, _ in search.dims]
    assert sizes == sorted(sizes)
    assert view_type(conn, "public.docs_embedding") == "vector(16)"
    assert view_type(conn, "public.docs_embedding_store") == "vector(16)"
    gone = conn.execute(
        "select to_regclass('public.docs_embedding_store_v2'),"
        " to_regclass('public.docs_embedding_store_before_v2')"
    ).fetchone()
    assert gone == (None, None)  # the shadow took the store's name; the old store is dropped
    assert_complete(conn, vid, rows)


def test_column_destination_new_dimensions_swap_the_column(
    db_url: str, conn: psycopg.Connection, fake: FakeOpenAI
) -> None:
    create_source(conn, "docs", source_rows(40))
    vid = create_vectorizer(conn, "docs", destination="ai.destination_column('embedding')")
    run_ok(db_url, env=worker_env(fake))
    conn.execute(
        "select ai.alter_vectorizer(%s,"
        " embedding => ai.embedding_openai('text-embedding-3-small', 16))",
        (vid,),
    )
    assert view_type(conn, "public.docs", "embedding_v2") == "vector(16)"
    assert view_type(conn, "public.docs") == "vector(8)"
    run_ok(db_url, env=worker_env(fake))
    assert reembed_finished(conn, vid)
    assert view_type(conn, "public.docs") == "vector(16)"
    assert view_type(conn, "public.docs", "embedding_v2") is None
    stored = conn.execute("select body, embedding::float4[] from docs order by id").fetchall()
    assert len(stored) == 40
    for text, vector in stored:
        assert_vector(vector, text, 16)


def ann_index(conn: psycopg.Connection, table: str) -> str | None:
    row = conn.execute(
        "select ai._vectorizer_ann_index('public', %s, 'embedding')", (table,)
    ).fetchone()
    return row[0] if row else None


def test_indexing_alter_builds_the_index_and_a_swapped_store_gets_one(
    db_url: str, conn: psycopg.Connection, fake: FakeOpenAI
) -> None:
    create_source(conn, "docs", source_rows(30))
    vid = create_vectorizer(conn, "docs", chunking=OLD)
    run_ok(db_url, env=worker_env(fake))
    assert ann_index(conn, "docs_embedding_store") is None
    conn.execute(
        "select ai.alter_vectorizer(%s, indexing => ai.indexing_hnsw(min_rows => 5))", (vid,)
    )
    fake.reset()
    run_ok(db_url, env=worker_env(fake))  # once mode waits for the index build
    assert fake.requests == []
    assert ann_index(conn, "docs_embedding_store") is not None

    conn.execute(
        "select ai.alter_vectorizer(%s,"
        " embedding => ai.embedding_openai('text-embedding-3-small', 16))",
        (vid,),
    )
    run_ok(db_url, env=worker_env(fake))
    assert reembed_finished(conn, vid)
    assert view_type(conn, "public.docs_embedding_store") == "vector(16)"
    assert ann_index(conn, "docs_embedding_store") is not None
    state = conn.execute(
        "select index_state from ai.vectorizer_status where id = %s", (vid,)
    ).fetchone()
    assert state == ("ready",)
