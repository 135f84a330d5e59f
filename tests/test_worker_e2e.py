"""The worker end to end: the real CLI as a subprocess, a real Postgres, the OpenAI embedder
over real HTTP to tests/fake_openai.py. Happy paths, destinations, keys and CLI settings."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.fake_openai import TEST_API_KEY, FakeOpenAI
from tests.worker_helpers import (
    DIMS,
    assert_vector,
    count,
    create_source,
    create_vectorizer,
    doc_rows,
    inputs_sent,
    queue_count,
    run_ok,
    run_worker,
    store_rows,
    worker_env,
)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
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
    for _, chunk, embedding in by_id[1]:
        assert chunk.startswith("one: ")
        assert_vector(embedding, chunk)
    assert [(seq, chunk) for seq, chunk, _ in by_id[2]] == [(0, "two: short body")]
    assert_vector(by_id[2][0][2], "two: short body", DIMS)
    assert set(inputs_sent(fake)) == {chunk for _, _, chunk, _ in rows}
    assert queue_count(conn, vid) == 0


def test_update_replaces_the_old_chunks(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(1, "one", "aaa bbb ccc ddd eee fff"), (2, "two", "untouched")])
    vid = create_vectorizer(conn, chunking="ai.chunking_character_text_splitter(8, 0, ' ')")
    env = worker_env(fake)
    run_ok(db_url, env=env)
    old = [(key, seq, chunk) for key, seq, chunk, _ in store_rows(conn) if key == 1]
    assert [chunk for _, _, chunk in old] == ["aaa bbb", "ccc ddd", "eee fff"]

    conn.execute("update docs set body = 'new text' where id = 1")
    assert queue_count(conn, vid) == 1
    # until the worker runs, the old embeddings stay
    assert len([row for row in store_rows(conn) if row[0] == 1]) == 3
    run_ok(db_url, env=env)

    rows = store_rows(conn)
    assert [(key, seq, chunk) for key, seq, chunk, _ in rows] == [
        (1, 0, "new text"),
        (2, 0, "untouched"),
    ]
    assert_vector(rows[0][3], "new text")
    assert queue_count(conn, vid) == 0
    assert inputs_sent(fake).count("untouched") == 1  # the other row was not re-embedded


def test_delete_removes_the_embeddings(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn)
    env = worker_env(fake)
    run_ok(db_url, env=env)
    assert [row[0] for row in store_rows(conn)] == [1, 2, 3]

    conn.execute("delete from docs where id = 2")
    conn.execute("update docs set body = 'changed' where id = 3")
    conn.execute("delete from docs where id = 3")  # queued, then deleted before the worker ran
    run_ok(db_url, env=env)

    assert [(key, chunk) for key, _, chunk, _ in store_rows(conn)] == [(1, "body of document 1")]
    assert queue_count(conn, vid) == 0
    assert "changed" not in inputs_sent(fake)


def test_chunking_none_embeds_the_whole_text(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    body = "\n\n".join(f"paragraph {i} " + "word " * 200 for i in range(5))
    create_source(conn, rows=[(1, "t", body)])
    create_vectorizer(
        conn,
        chunking="ai.chunking_none()",
        formatting="ai.formatting_python_template('$title: $chunk')",
    )
    run_ok(db_url, env=worker_env(fake))
    [(key, seq, chunk, embedding)] = store_rows(conn)
    assert (key, seq, chunk) == (1, 0, f"t: {body}")
    assert_vector(embedding, f"t: {body}")


def test_column_destination_writes_the_source_row(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(1, "a", "first"), (2, "b", "second"), (3, "c", None)])
    vid = create_vectorizer(
        conn, destination="ai.destination_column('embedding')", chunking="ai.chunking_none()"
    )
    env = worker_env(fake)
    run_ok(db_url, env=env)

    def embeddings() -> dict[int, list[float] | None]:
        rows = conn.execute("select id, embedding::float4[] from docs order by id").fetchall()
        return dict(rows)

    stored = embeddings()
    assert_vector(stored[1], "first")
    assert_vector(stored[2], "second")
    assert stored[3] is None
    # the worker's own UPDATE does not queue the row again
    assert queue_count(conn, vid) == 0
    assert conn.execute("select to_regclass('docs_embedding_store')").fetchone() == (None,)

    conn.execute("update docs set body = 'second, edited' where id = 2")
    run_ok(db_url, env=env)
    stored = embeddings()
    assert_vector(stored[1], "first")
    assert_vector(stored[2], "second, edited")
    assert queue_count(conn, vid) == 0
    assert sorted(inputs_sent(fake)) == ["first", "second", "second, edited"]


def test_blank_text_gives_no_embeddings_and_no_request(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(1, "t", ""), (2, "t", None), (3, "t", "   \n\t  ")])
    vid = create_vectorizer(conn, chunking="ai.chunking_none()")
    run_ok(db_url, env=worker_env(fake))
    assert store_rows(conn) == []
    assert fake.requests == []
    assert queue_count(conn, vid) == 0
    assert count(conn, f"ai._vectorizer_q_failed_{vid}") == 0
    assert count(conn, "ai._vectorizer_errors") == 0

    # also with a splitter, and once a row's text goes blank its old embeddings go too
    create_source(conn, "notes", [(1, "t", "some text"), (2, "t", "  ")])
    notes = create_vectorizer(
        conn, "notes", chunking="ai.chunking_recursive_character_text_splitter(50, 0)"
    )
    run_ok(db_url, env=worker_env(fake))
    assert [row[:3] for row in store_rows(conn, "notes_embedding_store")] == [(1, 0, "some text")]
    conn.execute("update notes set body = ' ' where id = 1")
    requests = len(fake.requests)
    run_ok(db_url, env=worker_env(fake))
    assert store_rows(conn, "notes_embedding_store") == []
    assert len(fake.requests) == requests
    assert queue_count(conn, notes) == 0


def test_composite_key_with_a_quoted_column_name(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    # Key columns in a different order than the table's, one of them needing quotes.
    conn.execute(
        'create table "Odd Docs" ("Doc Id" int, tenant text, body text,'
        ' primary key (tenant, "Doc Id"))'
    )
    conn.execute(
        "insert into \"Odd Docs\" values (1, 'acme', 'acme one'), (1, 'zeta', 'zeta one'),"
        " (2, 'acme', 'acme two')"
    )
    vid = create_vectorizer(
        conn,
        '"Odd Docs"',
        name="odd_docs",
        destination="ai.destination_table('odd_docs')",
        formatting="ai.formatting_python_template('$tenant/$chunk')",
    )
    env = worker_env(fake)
    run_ok(db_url, env=env)

    def stored() -> list[tuple[object, ...]]:
        return conn.execute(
            'select tenant, "Doc Id", chunk_seq, chunk, embedding::float4[] from odd_docs_store'
            ' order by tenant, "Doc Id", chunk_seq'
        ).fetchall()

    rows = stored()
    assert [row[:4] for row in rows] == [
        ("acme", 1, 0, "acme/acme one"),
        ("acme", 2, 0, "acme/acme two"),
        ("zeta", 1, 0, "zeta/zeta one"),
    ]
    for row in rows:
        assert_vector(row[4], str(row[3]))

    conn.execute("update \"Odd Docs\" set body = 'zeta ONE' where tenant = 'zeta'")
    conn.execute('delete from "Odd Docs" where tenant = \'acme\' and "Doc Id" = 2')
    run_ok(db_url, env=env)
    assert [row[:4] for row in stored()] == [
        ("acme", 1, 0, "acme/acme one"),
        ("zeta", 1, 0, "zeta/zeta ONE"),
    ]
    assert count(conn, f"ai._vectorizer_q_{vid}") == 0
    # the view joins back to the source on the quoted key
    view = conn.execute('select tenant, "Doc Id", body from odd_docs order by 1, 2').fetchall()
    assert view == [("acme", 1, "acme one"), ("zeta", 1, "zeta ONE")]

    # a key change: the old key's embeddings go at once, the new key's come with the worker
    conn.execute('update "Odd Docs" set "Doc Id" = 7 where tenant = \'acme\' and "Doc Id" = 1')
    assert [row[:2] for row in stored()] == [("zeta", 1)]
    run_ok(db_url, env=env)
    assert [row[:4] for row in stored()] == [
        ("acme", 7, 0, "acme/acme one"),
        ("zeta", 1, 0, "zeta/zeta ONE"),
    ]


def test_text_and_timestamptz_key_as_in_pgai_blog_example(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    conn.execute(
        "create table blog (id int generated always as identity, title text,"
        " published timestamptz, body text, primary key (title, published))"
    )
    conn.execute(
        "insert into blog (title, published, body) values"
        " ('how to cook', '2024-01-06 00:00:00+00', 'boil the water'),"
        " ('how to cook', '2024-02-06 00:00:00+00', 'then the pasta'),"
        " ('how to sleep', '2024-01-06 00:00:00+00', 'close the eyes')"
    )
    create_vectorizer(
        conn,
        "blog",
        formatting="ai.formatting_python_template('$title ($published): $chunk')",
    )
    run_ok(db_url, env=worker_env(fake))
    rows = conn.execute(
        "select title, published::text, chunk_seq, chunk, embedding::float4[]"
        " from blog_embedding_store order by title, published"
    ).fetchall()
    assert [row[:4] for row in rows] == [
        (
            "how to cook",
            "2024-01-06 00:00:00+00",
            0,
            "how to cook (2024-01-06 00:00:00+00:00): boil the water",
        ),
        (
            "how to cook",
            "2024-02-06 00:00:00+00",
            0,
            "how to cook (2024-02-06 00:00:00+00:00): then the pasta",
        ),
        (
            "how to sleep",
            "2024-01-06 00:00:00+00",
            0,
            "how to sleep (2024-01-06 00:00:00+00:00): close the eyes",
        ),
    ]
    for row in rows:
        assert_vector(row[4], str(row[3]))


def test_duplicate_queue_rows_of_a_key_are_embedded_once(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(20))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 7)")
    # each key three times in a row, so batches of 7 queue rows split a key's copies
    conn.execute(f"delete from ai._vectorizer_q_{vid}")
    conn.execute(
        f"insert into ai._vectorizer_q_{vid} (id)"
        " select id from docs, generate_series(1, 3) order by id"
    )
    run_ok(db_url, "--concurrency", "1", env=worker_env(fake))
    assert sorted(inputs_sent(fake)) == sorted(f"body of document {i}" for i in range(1, 21))
    assert [row[:2] for row in store_rows(conn)] == [(i, 0) for i in range(1, 21)]
    assert queue_count(conn, vid) == 0
    assert count(conn, "ai._vectorizer_errors") == 0


def test_unset_batch_size_grows_claims_of_one_chunk_rows_toward_400_chunks(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(1000))
    vid = create_vectorizer(conn, chunking="ai.chunking_none()")
    run_ok(db_url, "--concurrency", "1", env=worker_env(fake))
    # one request per batch, one chunk per row: the request sizes are the claims
    assert [r.input_count for r in fake.embedded_requests] == [50, 100, 200, 400, 250]
    assert [row[:2] for row in store_rows(conn)] == [(i, 0) for i in range(1, 1001)]
    assert queue_count(conn, vid) == 0


def test_worker_tracking_rows(conn: psycopg.Connection, db_url: str, fake: FakeOpenAI) -> None:
    create_source(conn, rows=doc_rows(7))
    vid = create_vectorizer(conn)
    run_ok(db_url, "--poll-interval", "500ms", env=worker_env(fake))

    [(heartbeats, successes, errors, interval, started, last)] = conn.execute(
        "select heartbeat_count, success_count, error_count, expected_heartbeat_interval,"
        " started, last_heartbeat from ai.vectorizer_worker_process"
    ).fetchall()
    assert heartbeats >= 1
    assert successes == 7
    assert errors == 0
    assert interval == timedelta(milliseconds=500)  # fractions of a second are kept
    assert last > started
    [(progress_id, progress_successes, last_success_at, process_id)] = conn.execute(
        "select vectorizer_id, success_count, last_success_at, last_success_process_id"
        " from ai.vectorizer_worker_progress"
    ).fetchall()
    assert (progress_id, progress_successes) == (vid, 7)
    assert last_success_at is not None
    assert process_id == conn.execute("select id from ai.vectorizer_worker_process").fetchone()[0]


# --- selecting vectorizers ---------------------------------------------------------------------


def test_disabled_vectorizer_is_skipped(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, "on_docs", doc_rows(2))
    create_source(conn, "off_docs", doc_rows(2))
    on = create_vectorizer(conn, "on_docs")
    off = create_vectorizer(conn, "off_docs")
    conn.execute("select ai.disable_vectorizer_schedule(%s)", (off,))

    run_ok(db_url, env=worker_env(fake))
    assert queue_count(conn, on) == 0
    assert queue_count(conn, off) == 2
    assert store_rows(conn, "off_docs_embedding_store") == []
    # asked for by id, it is still skipped
    run_ok(db_url, "-i", str(off), env=worker_env(fake))
    assert queue_count(conn, off) == 2

    conn.execute("select ai.enable_vectorizer_schedule(%s)", (off,))
    run_ok(db_url, env=worker_env(fake))
    assert queue_count(conn, off) == 0
    assert len(store_rows(conn, "off_docs_embedding_store")) == 2


def test_vectorizers_selected_by_name_and_id(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    for table in ("a_docs", "b_docs", "c_docs"):
        create_source(conn, table, doc_rows(2))
    a = create_vectorizer(conn, "a_docs", name="alpha")
    b = create_vectorizer(conn, "b_docs", name="beta")
    c = create_vectorizer(conn, "c_docs", name="gamma")

    run_ok(db_url, "-i", "beta", env=worker_env(fake))
    assert [queue_count(conn, v) for v in (a, b, c)] == [2, 0, 2]
    run_ok(db_url, "-i", "gamma", "-i", str(a), env=worker_env(fake))
    assert [queue_count(conn, v) for v in (a, b, c)] == [0, 0, 0]


# --- settings: environment, .env, console script -----------------------------------------------


def test_settings_from_environment_variables(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(30))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 3)")
    env = worker_env(
        fake,
        VECTORIZER_DB_URL=db_url,
        VECTORIZER_ONCE="true",
        VECTORIZER_CONCURRENCY="3",
        VECTORIZER_VECTORIZER_ID=str(vid),
        VECTORIZER_POLL_INTERVAL="0.25",
        VECTORIZER_LOG_LEVEL="debug",  # "running vectorizer" is logged at DEBUG
    )
    result = run_worker(None, env=env, once=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"running vectorizer vectorizer_id={vid} concurrency=3" in result.stderr
    assert "once mode, exiting" in result.stderr
    assert queue_count(conn, vid) == 0
    assert len(store_rows(conn)) == 30
    interval = conn.execute(
        "select expected_heartbeat_interval from ai.vectorizer_worker_process"
    ).fetchone()
    assert interval == (timedelta(milliseconds=250),)


def test_dotenv_file_in_the_working_directory_is_read(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn)
    (tmp_path / ".env").write_text(
        f"VECTORIZER_DB_URL='{db_url}'\n"
        "VECTORIZER_ONCE=true\n"
        f"OPENAI_API_KEY={TEST_API_KEY}\n"
        f"OPENAI_BASE_URL={fake.base_url}\n"
    )
    fake.configure(api_key=TEST_API_KEY)  # only the key from .env gets in
    env = worker_env(None, api_key=None)
    result = run_worker(None, env=env, once=False, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert queue_count(conn, vid) == 0
    assert len(store_rows(conn)) == 3
    assert TEST_API_KEY not in result.stderr


def test_vectorizer_worker_console_script(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    script = Path(sys.executable).parent / "vectorizer-worker"
    assert script.exists()
    create_source(conn, rows=doc_rows(2))
    vid = create_vectorizer(conn)
    result = subprocess.run(
        [str(script), "--db-url", db_url, "--once", "--poll-interval", "0.5"],
        env=worker_env(fake),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert queue_count(conn, vid) == 0
    assert len(store_rows(conn)) == 2
