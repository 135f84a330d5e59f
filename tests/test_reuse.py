"""Chunk-level reuse end to end: the real worker CLI, a real Postgres, the fake OpenAI server.

Text is embedded once per vectorizer and config: unchanged rows are not rewritten, a row's own
stored chunks and any other row's are reused by the hash of their formatted text, a config
change never mixes vectors of two models, and a stale result never wins.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.fake_openai import Behaviour, FakeOpenAI
from tests.worker_helpers import (
    assert_vector,
    create_source,
    create_vectorizer,
    daemon,
    inputs_sent,
    queue_count,
    run_ok,
    store_rows,
    wait_for,
    worker_env,
)
from vectorizer.install import install
from vectorizer.reuse import HASH_BYTES, text_hash

# one paragraph per chunk: each is shorter than the chunk size, two never fit together
CHUNKING = "ai.chunking_recursive_character_text_splitter(60, 0)"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def body(doc: int, paragraphs: int, first: str | None = None) -> str:
    parts = [f"paragraph {p} of document {doc} says something" for p in range(paragraphs)]
    if first is not None:
        parts.insert(0, first)
    return "\n\n".join(parts)


def store(conn: psycopg.Connection, table: str = "docs_embedding_store") -> list[tuple[Any, ...]]:
    return store_rows(conn, table)


def row_versions(conn: psycopg.Connection, table: str = "docs_embedding_store") -> list[Any]:
    """(embedding_uuid, xmin) of every stored chunk: any rewrite changes them."""
    return conn.execute(
        sql.SQL("select embedding_uuid, xmin::text from {} order by embedding_uuid").format(
            sql.Identifier(table)
        )
    ).fetchall()


def requeue_all(conn: psycopg.Connection, vectorizer_id: int) -> None:
    conn.execute(
        sql.SQL("insert into {} (id) select id from docs").format(
            sql.Identifier("ai", f"_vectorizer_q_{vectorizer_id}")
        )
    )


def set_embedding_option(
    conn: psycopg.Connection, vectorizer_id: int, key: str, value: str
) -> None:
    """A hand edit of the embedding config (as the coming alter command will make)."""
    conn.execute(
        "update ai.vectorizer set config ="
        " jsonb_set(config, array['embedding', %s], to_jsonb(%s::text)) where id = %s",
        (key, value, vectorizer_id),
    )


def assert_stored_chunks(conn: psycopg.Connection, key: int, expected: list[str]) -> None:
    """Key `key` holds exactly `expected`, in chunk_seq order, each with its text's vector."""
    rows = [row for row in store(conn) if row[0] == key]
    assert [chunk for _, _, chunk, _ in rows] == expected
    for _, _, chunk, embedding in rows:
        assert_vector(embedding, chunk)


def status(conn: psycopg.Connection, vectorizer_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        row = cursor.execute(
            "select * from ai.vectorizer_status where id = %s", (vectorizer_id,)
        ).fetchone()
    assert row is not None
    return row


def test_text_hash_is_a_16_byte_blake2b_of_the_formatted_text() -> None:
    text = "title: a chunk"
    assert text_hash(text) == hashlib.blake2b(text.encode(), digest_size=16).digest()
    assert len(text_hash(text)) == HASH_BYTES
    assert text_hash(text) != text_hash("title: a chunk ")
    assert len(text_hash("lone \ud800 surrogate")) == HASH_BYTES


def test_new_first_paragraph_reuses_the_rows_chunks_and_equals_a_fresh_build(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(i, f"t{i}", body(i, 5)) for i in range(1, 11)])
    create_vectorizer(conn, chunking=CHUNKING)
    run_ok(db_url, env=worker_env(fake))
    before = {chunk for _, _, chunk, _ in store(conn)}
    assert len(before) == 50
    hashes = conn.execute(
        "select count(*) from docs_embedding_store where chunk_hash is not null"
        " and config_hash is not null"
    ).fetchone()
    assert hashes == (50,)

    fake.reset()
    for doc in (2, 5, 8):
        conn.execute(
            "update docs set body = %s where id = %s",
            (body(doc, 5, first=f"a brand new opening for document {doc}"), doc),
        )
    result = run_ok(db_url, env=worker_env(fake))

    sent = inputs_sent(fake)
    assert sorted(sent) == sorted(f"a brand new opening for document {d}" for d in (2, 5, 8))
    rows = store(conn)
    assert len(rows) == 53
    for key, seq, chunk, embedding in rows:
        assert_vector(embedding, chunk)
        if key in (2, 5, 8):
            expected = [f"a brand new opening for document {key}", *body(key, 5).split("\n\n")]
            assert chunk == expected[seq]
    assert "embedded=3 reused_same_row=15 reused_other_row=0" in result.stderr
    assert "once mode summary" in result.stderr

    # a fresh build of the same rows by a second vectorizer stores exactly the same thing
    create_vectorizer(
        conn, name="fresh", chunking=CHUNKING, destination="ai.destination_table('docs_fresh')"
    )
    run_ok(db_url, env=worker_env(fake))
    fresh = store(conn, "docs_fresh_store")
    assert [(k, s, c) for k, s, c, _ in fresh] == [(k, s, c) for k, s, c, _ in rows]
    assert [e for *_, e in fresh] == [e for *_, e in rows]


def test_an_edit_rewrites_only_the_chunks_it_touched(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(1, "t", body(1, 4)), (2, "t", body(2, 4))])
    create_vectorizer(conn, chunking=CHUNKING)
    run_ok(db_url, env=worker_env(fake))
    before = dict(
        conn.execute(
            "select (id, chunk_seq)::text, (embedding_uuid, xmin)::text from docs_embedding_store"
        ).fetchall()
    )
    parts = body(1, 4).split("\n\n")
    edited = "\n\n".join([*parts[:2], "a rewritten third paragraph"])  # and the 4th dropped
    conn.execute("update docs set body = %s where id = 1", (edited,))
    fake.reset()
    run_ok(db_url, env=worker_env(fake))

    assert inputs_sent(fake) == ["a rewritten third paragraph"]
    after = dict(
        conn.execute(
            "select (id, chunk_seq)::text, (embedding_uuid, xmin)::text from docs_embedding_store"
        ).fetchall()
    )
    assert sorted(after) == ["(1,0)", "(1,1)", "(1,2)", "(2,0)", "(2,1)", "(2,2)", "(2,3)"]
    untouched = [key for key in after if after[key] == before.get(key)]
    assert sorted(untouched) == ["(1,0)", "(1,1)", "(2,0)", "(2,1)", "(2,2)", "(2,3)"]
    assert_stored_chunks(conn, 1, [*parts[:2], "a rewritten third paragraph"])


def test_unchanged_rows_send_nothing_and_write_nothing(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(i, f"t{i}", body(i, 3)) for i in range(1, 21)])
    vid = create_vectorizer(conn, chunking=CHUNKING)
    run_ok(db_url, env=worker_env(fake))
    versions = row_versions(conn)
    assert len(versions) == 60

    # the same UPDATE twice: the second changes no text, so nothing is even queued
    conn.execute("update docs set body = body || '' where id <= 10")
    assert queue_count(conn, vid) == 0
    # keys queued anyway (a pgai trigger queues every update): the worker sees nothing changed
    fake.reset()
    requeue_all(conn, vid)
    result = run_ok(db_url, env=worker_env(fake))

    assert fake.requests == []
    assert row_versions(conn) == versions  # no DELETE, no COPY: the same tuples
    assert queue_count(conn, vid) == 0
    assert "unchanged_rows=20" in result.stderr
    facts = status(conn, vid)
    assert facts["rows_unchanged"] == 20
    assert facts["chunks_reused_same_row"] == 60
    assert facts["chunks_embedded"] == 60  # the first build
    assert facts["tokens_saved"] > 0
    assert facts["chunks_older_config"] == 0


def test_rows_sharing_a_body_send_each_distinct_text_once(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    shared = body(0, 4)
    rows = [(i, f"t{i}", shared if i % 10 < 3 else body(i, 4)) for i in range(1, 101)]
    create_source(conn, rows=rows)
    vid = create_vectorizer(conn, chunking=CHUNKING, processing="ai.processing_default(10)")
    run_ok(db_url, env=worker_env(fake))

    distinct = {chunk for _, _, text in rows for chunk in text.split("\n\n")}
    sent = inputs_sent(fake)
    assert len(sent) == len(distinct)
    assert set(sent) == distinct
    stored = store(conn)
    assert len(stored) == 400
    for _, _, chunk, embedding in stored:
        assert_vector(embedding, chunk)
    facts = status(conn, vid)
    assert facts["chunks_embedded"] == len(distinct)
    assert facts["chunks_reused_other_row"] == 400 - len(distinct)


def test_reuse_is_counted_only_for_rows_that_were_written(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    shared = "a paragraph that every one of the rows starts with"
    bodies = {1: "row one's own paragraph", 2: "row two's POISON paragraph", 3: "row three's own"}
    create_source(conn, rows=[(k, "t", f"{shared}\n\n{tail}") for k, tail in bodies.items()])
    vid = create_vectorizer(conn, chunking=CHUNKING)
    run_ok(db_url, env=worker_env(fake))

    assert sorted(key for key, *_ in store(conn)) == [1, 1, 3, 3]
    facts = status(conn, vid)
    # row 1 sent the shared text and its own; row 3 reused the shared one and sent its own;
    # row 2's reuse and its poisoned text do not count: it was not written
    assert facts["chunks_embedded"] == 3
    assert facts["chunks_reused_other_row"] == 1
    assert facts["chunks_reused_same_row"] == 0


def test_two_executors_racing_on_the_same_text_lose_no_row(
    conn: psycopg.Connection, db_url: str
) -> None:
    shared = body(0, 3)
    create_source(conn, rows=[(i, f"t{i}", shared) for i in range(1, 41)])
    create_vectorizer(conn, chunking=CHUNKING, processing="ai.processing_default(1)")
    with FakeOpenAI(Behaviour(latency=0.05)) as slow:
        run_ok(db_url, "-c", "4", env=worker_env(slow))
        sent = inputs_sent(slow)
    stored = store(conn)
    assert len(stored) == 120
    assert {key for key, *_ in stored} == set(range(1, 41))
    for _, _, chunk, embedding in stored:
        assert_vector(embedding, chunk)
    # several executors may embed the shared text at once (harmless), but not once per row
    assert 3 <= len(sent) < 120


def test_a_template_column_change_reembeds_every_chunk_of_that_row(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(1, "old title", body(1, 4)), (2, "other", body(2, 4))])
    create_vectorizer(
        conn, chunking=CHUNKING, formatting="ai.formatting_python_template('$title: $chunk')"
    )
    run_ok(db_url, env=worker_env(fake))
    fake.reset()

    conn.execute("update docs set title = 'new title' where id = 1")
    run_ok(db_url, env=worker_env(fake))

    expected = [f"new title: {part}" for part in body(1, 4).split("\n\n")]
    assert sorted(inputs_sent(fake)) == sorted(expected)
    assert_stored_chunks(conn, 1, expected)


def test_a_model_change_never_reuses_vectors_of_the_old_model(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(i, f"t{i}", body(i, 2)) for i in range(1, 6)])
    vid = create_vectorizer(conn, chunking=CHUNKING)
    run_ok(db_url, env=worker_env(fake))
    assert status(conn, vid)["chunks_older_config"] == 0

    set_embedding_option(conn, vid, "model", "text-embedding-3-large")
    assert status(conn, vid)["chunks_older_config"] == 10
    fake.reset()
    requeue_all(conn, vid)
    result = run_ok(db_url, env=worker_env(fake))

    assert len(inputs_sent(fake)) == 10  # nothing of the old model was reused
    assert {request.model for request in fake.embedded_requests} == {"text-embedding-3-large"}
    assert "unchanged_rows=0" in result.stderr
    assert status(conn, vid)["chunks_older_config"] == 0
    # an option that does not change vectors (the key's env var name) keeps the provenance
    set_embedding_option(conn, vid, "api_key_name", "OTHER_KEY")
    assert status(conn, vid)["chunks_older_config"] == 0


def test_a_row_updated_while_embedding_ends_with_the_new_texts_vectors(
    conn: psycopg.Connection, db_url: str
) -> None:
    create_source(conn, rows=[(1, "t", "the old text")])
    create_vectorizer(conn)
    with FakeOpenAI(Behaviour(latency=1.5)) as slow:
        with daemon(db_url, env=worker_env(slow), once=True) as worker:
            # the key is claimed (its advisory lock held) and its old text is being embedded
            wait_for(
                lambda: conn.execute(
                    "select count(*) from pg_locks where locktype = 'advisory'"
                ).fetchone()[0],  # type: ignore[index]
                30,
                what="the worker to claim the key",
            )
            conn.execute("update docs set body = 'the new text' where id = 1")
            assert worker.wait(60) == 0, worker.stderr()
        sent = inputs_sent(slow)
    assert sent == ["the old text", "the new text"]
    rows = store(conn)
    assert [(key, seq, chunk) for key, seq, chunk, _ in rows] == [(1, 0, "the new text")]
    assert_vector(rows[0][3], "the new text")


def test_column_destination_keeps_hashes_aside_and_skips_unchanged_rows(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(i, f"t{i}", f"text {i}") for i in range(1, 6)])
    vid = create_vectorizer(conn, destination="ai.destination_column('embedding')")
    run_ok(db_url, env=worker_env(fake))
    columns = [
        name
        for (name,) in conn.execute(
            "select attname from pg_attribute where attrelid = 'docs'::regclass and attnum > 0"
        )
    ]
    assert columns == ["id", "title", "body", "embedding"]  # no extra column in the user's table
    assert conn.execute(
        "select count(*) from ai._vectorizer_column_hash where vectorizer_id = %s", (vid,)
    ).fetchone() == (5,)

    fake.reset()
    conn.execute("update docs set body = 'changed' where id = 3")
    requeue_all(conn, vid)
    run_ok(db_url, env=worker_env(fake))
    assert inputs_sent(fake) == ["changed"]
    for key, embedding in conn.execute("select id, embedding::float4[] from docs order by id"):
        assert_vector(embedding, "changed" if key == 3 else f"text {key}")
    facts = status(conn, vid)
    assert facts["rows_unchanged"] == 4
    assert facts["chunks_older_config"] == 0


def test_column_destination_hashes_go_with_their_rows_and_repair_drops_leftovers(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(i, f"t{i}", f"text {i}") for i in range(1, 5)])
    vid = create_vectorizer(conn, destination="ai.destination_column('embedding')")
    run_ok(db_url, env=worker_env(fake))

    def hashed() -> list[Any]:
        return [
            row[0]
            for row in conn.execute(
                "select pk from ai._vectorizer_column_hash where vectorizer_id = %s order by pk",
                (vid,),
            )
        ]

    assert hashed() == [[1], [2], [3], [4]]
    conn.execute("delete from docs where id = 2")
    conn.execute("update docs set id = 40 where id = 4")  # the old key's hash goes too
    assert hashed() == [[1], [3]]

    # a leftover (a pgai worker's delete, or one from before the trigger did this)
    conn.execute(
        "insert into ai._vectorizer_column_hash (vectorizer_id, pk, chunk_hash)"
        " values (%s, '[99]', '\\x00')",
        (vid,),
    )
    conn.execute("select * from ai.repair_vectorizer(%s)", (vid,))
    assert hashed() == [[1], [3]]


def test_migration_adds_the_columns_to_existing_stores_with_hostile_names(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    conn.execute('create schema "Odd Schema"')
    conn.execute(
        'create table "Odd Schema"."My ""Docs""" ("Doc Id" int primary key, "Body Text" text)'
    )
    conn.execute(
        'insert into "Odd Schema"."My ""Docs""" values (1, %s), (2, %s)',
        (body(1, 2), body(2, 2)),
    )
    vid = create_vectorizer(
        conn,
        source='"Odd Schema"."My ""Docs"""',
        name="odd",
        loading="ai.loading_column('Body Text')",
        chunking=CHUNKING,
        destination="ai.destination_table(target_table => 'Store \"X\"')",
    )
    target = sql.Identifier("Odd Schema", 'Store "X"')
    # a store as pgai (or this project before the upgrade) made it: no hash columns
    conn.execute(
        sql.SQL("alter table {} drop column chunk_hash, drop column config_hash").format(target)
    )
    run_ok(db_url, env=worker_env(fake))
    assert conn.execute(sql.SQL("select count(*) from {}").format(target)).fetchone() == (4,)
    conn.execute("delete from ai._vectorizer_lib_migration where name = '005-chunk-reuse'")
    conn.execute("update ai._vectorizer_lib_version set checksum = 'older'")

    assert install(db_url) is True
    indexed = conn.execute(
        "select count(*) from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
        " and a.attnum = i.indkey[0] where i.indrelid = %s::regclass and a.attname = 'chunk_hash'",
        (target.as_string(conn),),
    ).fetchone()
    assert indexed == (1,)
    assert conn.execute(
        sql.SQL("select count(*) from {} where chunk_hash is null").format(target)
    ).fetchone() == (4,)
    assert status(conn, vid)["chunks_older_config"] == 4  # unknown provenance counts as older

    # NULL never matches: the first pass re-embeds and hashes, the second reuses everything
    fake.reset()
    requeue = sql.SQL('insert into {} ("Doc Id") values (1), (2)').format(
        sql.Identifier("ai", f"_vectorizer_q_{vid}")
    )
    conn.execute(requeue)
    run_ok(db_url, env=worker_env(fake))
    assert len(inputs_sent(fake)) == 4
    fake.reset()
    conn.execute(requeue)
    run_ok(db_url, env=worker_env(fake))
    assert fake.requests == []
    assert status(conn, vid)["chunks_older_config"] == 0
    assert status(conn, vid)["rows_unchanged"] == 2


def test_copied_vectors_keep_hostile_names_and_composite_keys_of_any_type(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    # reused vectors are copied inside Postgres, the key typed by the store's own columns
    conn.execute('create schema "Odd Schema"')
    conn.execute(
        'create table "Odd Schema"."My ""Docs""" ("Doc Key" text, "At" timestamptz,'
        ' "Body Text" text, primary key ("Doc Key", "At"))'
    )
    at = "2024-02-29 12:34:56.789+00"
    keys = [('it\'s "one"', at), ("two; drop table x", at)]
    source = sql.SQL('insert into "Odd Schema"."My ""Docs""" values (%s, %s, %s)')
    for key, text in zip(keys, (body(1, 3), body(2, 3)), strict=True):
        conn.execute(source, (*key, text))
    create_vectorizer(
        conn,
        source='"Odd Schema"."My ""Docs"""',
        name="odd_keys",
        loading="ai.loading_column('Body Text')",
        chunking=CHUNKING,
        destination="ai.destination_table(target_table => 'Store \"X\"')",
    )
    run_ok(db_url, env=worker_env(fake))
    fake.reset()

    # key one: a new first paragraph shifts its chunks; key two: key one's old text
    conn.execute(
        'update "Odd Schema"."My ""Docs""" set "Body Text" = %s where "Doc Key" = %s',
        (body(1, 3, first="a brand new opening paragraph"), keys[0][0]),
    )
    conn.execute(
        'update "Odd Schema"."My ""Docs""" set "Body Text" = %s where "Doc Key" = %s',
        (body(1, 3), keys[1][0]),
    )
    run_ok(db_url, env=worker_env(fake))

    assert inputs_sent(fake) == ["a brand new opening paragraph"]
    stored = conn.execute(
        'select "Doc Key", "At", chunk_seq, chunk, embedding::float4[] from "Odd Schema".'
        '"Store ""X""" order by 1, 3'
    ).fetchall()
    expected = {
        keys[0][0]: body(1, 3, first="a brand new opening paragraph").split("\n\n"),
        keys[1][0]: body(1, 3).split("\n\n"),
    }
    assert [(key, seq, chunk) for key, _, seq, chunk, _ in stored] == [
        (key, seq, chunk) for key in sorted(expected) for seq, chunk in enumerate(expected[key])
    ]
    for _, when, _, chunk, embedding in stored:
        assert when.isoformat() == "2024-02-29T12:34:56.789000+00:00"
        assert_vector(embedding, chunk)


def test_status_command_shows_reuse(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(i, f"t{i}", body(0, 2)) for i in range(1, 4)])
    create_vectorizer(conn, chunking=CHUNKING)
    run_ok(db_url, env=worker_env(fake))
    out = subprocess.run(
        [sys.executable, "-m", "vectorizer", "status", "--db-url", db_url],
        env=worker_env(fake),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = out.splitlines()
    header = lines.index("Reuse (chunks not sent to the provider)")
    assert lines[header + 1].split() == [
        "name",
        "embedded",
        "reused",
        "same",
        "row",
        "other",
        "row",
        "unchanged",
        "rows",
        "tokens",
        "saved",
        "older",
        "config",
    ]
    # 3 rows of the same 2 paragraphs: 2 embedded, 4 reused from the other rows
    assert lines[header + 2].split()[:6] == [
        "public_docs_embedding_store",
        "2",
        "4",
        "(67%)",
        "0",
        "4",
    ]


def test_metrics_count_embedded_and_reused_chunks(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    from tests.test_observability import daemon_flags, free_port, http_get, samples, value

    create_source(conn, rows=[(i, f"t{i}", body(0, 3)) for i in range(1, 5)])
    create_vectorizer(conn, name="reuse_vec", chunking=CHUNKING)
    port = free_port()
    with daemon(db_url, *daemon_flags(port), env=worker_env(fake)):
        wait_for(lambda: len(store(conn)) == 12, 30, what="the backfill")

        def counted() -> dict[Any, float] | None:
            status_code, text = http_get(port, "/metrics")
            assert status_code == 200, text
            page = samples(text)
            embedded = value(page, "vectorizer_chunks_embedded_total", vectorizer="reuse_vec")
            return page if embedded else None

        page = wait_for(counted, 10, interval=0.1, what="reuse metrics")
    assert value(page, "vectorizer_chunks_embedded_total", vectorizer="reuse_vec") == 3
    other = {"vectorizer": "reuse_vec", "origin": "other_row"}
    assert value(page, "vectorizer_chunks_reused_total", **other) == 9
    same = {"vectorizer": "reuse_vec", "origin": "same_row"}
    assert value(page, "vectorizer_chunks_reused_total", **same) == 0
    assert value(page, "vectorizer_rows_unchanged_total", vectorizer="reuse_vec") == 0
    assert value(page, "vectorizer_tokens_saved_total", vectorizer="reuse_vec") > 0
