"""Rows with nothing to embed (NULL, '', whitespace-only text, NULL or empty bytea) are counted,
not lost: `ai.vectorizer_status.empty_rows`, the `vectorizer status` command and the
`vectorizer_skipped_total{reason="empty"}` metric, through the real worker CLI, a real Postgres
and the fake OpenAI server."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.fake_openai import FakeOpenAI
from tests.test_observability import daemon_flags, free_port, http_get, samples, value
from tests.test_status import _row, cli, status_row
from tests.worker_helpers import (
    create_source,
    create_vectorizer,
    daemon,
    error_rows,
    queue_count,
    run_ok,
    store_rows,
    wait_for,
    worker_env,
)
from vectorizer.status import percent

BLANKS = [(4, "t", None), (5, "t", ""), (6, "t", "  \n\t ")]


def test_empty_text_is_counted_in_status_and_follows_later_edits(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, rows=[(1, "t", "one"), (2, "t", "two"), (3, "t", "three"), *BLANKS])
    vid = create_vectorizer(conn, name="blank_vec")

    run_ok(db_url, env=worker_env(fake_openai))

    assert [row[0] for row in store_rows(conn)] == [1, 2, 3]
    assert error_rows(conn, vid) == []  # no error, as in pgai
    row = status_row(conn, vid)
    assert (row["source_rows"], row["embedded_rows"], row["empty_rows"]) == (6, 3, 3)
    out = cli("status", "--db-url", db_url)
    assert out.returncode == 0, out.stderr
    header = _row(out.stdout, "id")
    assert header[header.index("embedded/source") + 1] == "empty"
    words = _row(out.stdout, str(vid))
    assert words[5:8] == ["3/6", "(50.0%)", "3"]

    # a blank row gets text, another is deleted, an embedded one goes blank (its old
    # embeddings are removed)
    conn.execute("update docs set body = 'now it has text' where id = 4")
    conn.execute("delete from docs where id = 5")
    conn.execute("update docs set body = '' where id = 1")
    run_ok(db_url, env=worker_env(fake_openai))

    assert [row[0] for row in store_rows(conn)] == [2, 3, 4]
    row = status_row(conn, vid)
    assert (row["source_rows"], row["embedded_rows"], row["empty_rows"]) == (5, 3, 2)
    assert _row(cli("status", "--db-url", db_url).stdout, str(vid))[5:8] == [
        "3/5",
        "(60.0%)",
        "2",
    ]


def test_null_and_empty_bytea_documents_are_counted(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    conn.execute("create table files (id int primary key, data bytea)")
    conn.execute(
        "insert into files values (1, convert_to('plain text file', 'UTF8')), (2, null),"
        " (3, ''::bytea), (4, convert_to('   ', 'UTF8'))"
    )
    vid = create_vectorizer(conn, "files", loading="ai.loading_column('data')")

    run_ok(db_url, env=worker_env(fake_openai))

    assert [row[:3] for row in store_rows(conn, "files_embedding_store")] == [
        (1, 0, "plain text file")
    ]
    assert status_row(conn, vid)["empty_rows"] == 3
    assert queue_count(conn, vid) == 0


def test_hostile_names_and_composite_typed_keys(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    conn.execute(
        'create table "My ""Docs"" Table" ("Key Col" text, "At" timestamptz, "bin" bytea,'
        ' "Body" text, primary key ("Key Col", "At", "bin"))'
    )
    conn.execute(
        """insert into "My ""Docs"" Table" values
        ('a''b', '2024-01-06 10:00:00.123456+02', '\\x00ff', 'text'),
        ('c "d"', '2024-01-07 00:00:00+00', '\\x01', null),
        ('e f', '1999-12-31 23:59:59+00', '\\x', '   ')"""
    )
    vid = create_vectorizer(
        conn,
        '"My ""Docs"" Table"',
        name="hostile_blank",
        loading="ai.loading_column('Body')",
        destination="ai.destination_table('hostile_store_target')",
    )

    run_ok(db_url, env=worker_env(fake_openai))

    assert status_row(conn, vid)["empty_rows"] == 2
    conn.execute("""delete from "My ""Docs"" Table" where "Key Col" = 'c "d"'""")
    assert status_row(conn, vid)["empty_rows"] == 1  # a deleted row is no longer counted


def test_skipped_empty_metric(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, rows=[(1, "t", "one"), *BLANKS])
    create_vectorizer(conn, name="skip_vec")
    port = free_port()
    with daemon(db_url, *daemon_flags(port), env=worker_env(fake_openai)) as handle:

        def counted() -> dict[Any, float] | None:
            status, body = http_get(port, "/metrics")
            page = samples(body) if status == 200 else {}
            rows = value(page, "vectorizer_rows_total", vectorizer="skip_vec")
            return page if rows == 4 else None

        page = wait_for(counted, 60, interval=0.1, what="the backfill in the metrics")
        assert handle.alive()
    assert value(page, "vectorizer_skipped_total", vectorizer="skip_vec", reason="empty") == 3
    assert value(page, "vectorizer_chunks_total", vectorizer="skip_vec") == 1


def test_a_schema_without_the_table_still_embeds_and_says_so_once(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    # a worker upgraded before `vectorizer install` ran against the database
    create_source(conn, rows=[(1, "t", "one"), (2, "t", "two"), *BLANKS])
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 1)")
    conn.execute("drop table ai._vectorizer_empty_input")

    result = run_ok(db_url, "-c", "2", env=worker_env(fake_openai))

    assert [row[0] for row in store_rows(conn)] == [1, 2]
    assert queue_count(conn, vid) == 0
    assert result.stderr.count("are not counted") == 1, result.stderr
    assert status_row(conn, vid)["empty_rows"] is None

    # and `vectorizer status` on a schema older than itself says what to run
    conn.execute("drop view ai.vectorizer_status")
    conn.execute("create view ai.vectorizer_status as select v.id from ai.vectorizer v")
    out = cli("status", "--db-url", db_url)
    assert out.returncode == 1
    assert "older than vectorizer" in out.stderr and "run `vectorizer install`" in out.stderr


@pytest.mark.parametrize(
    ("part", "whole", "shown"),
    [
        (7030, 7033, "99.9%"),
        (9999, 10000, "99.9%"),
        (1, 3, "33.3%"),
        (0, 5, "0.0%"),
        (8, 8, "100%"),
    ],
)
def test_coverage_below_100_percent_is_never_rounded_up(part: int, whole: int, shown: str) -> None:
    assert percent(part, whole) == shown
