"""Repairing a database that already holds orphan embeddings (from pgai or an old worker) and
rows that never got theirs: `ai.vectorizer_integrity`, `ai.repair_vectorizer`, and the
`vectorizer status --check` / `vectorizer repair` commands, on a real Postgres."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from psycopg import errors, sql

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    REPO_ROOT,
    assert_vector,
    create_source,
    create_vectorizer,
    queue_rows,
    run_ok,
    store_rows,
    worker_env,
)

WORD_CHUNKS = "ai.chunking_character_text_splitter(10, 0, ' ')"


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vectorizer", *args, "--db-url", db_url],
        env=worker_env(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _counts(conn: psycopg.Connection, query: str, vectorizer: int | str) -> tuple[int, int, int]:
    cast = "int4" if isinstance(vectorizer, int) else "text"
    row = conn.execute(query.replace("%s", f"%s::{cast}"), (vectorizer,)).fetchone()
    assert row is not None
    return row


def integrity(conn: psycopg.Connection, vectorizer: int | str) -> tuple[int, int, int]:
    query = "select orphan_keys, orphan_chunks, missing_rows from ai.vectorizer_integrity(%s)"
    return _counts(conn, query, vectorizer)


def repair(conn: psycopg.Connection, vectorizer: int | str) -> tuple[int, int, int]:
    query = "select orphan_keys, orphan_chunks, queued_rows from ai.repair_vectorizer(%s)"
    return _counts(conn, query, vectorizer)


def without_triggers(
    conn: psycopg.Connection, table: str | sql.Identifier, *statements: str | sql.Composable
) -> None:
    """Runs `statements` as pgai's racing worker left things: no trigger cleaned up or queued."""
    name = sql.Identifier(table) if isinstance(table, str) else table
    conn.execute(sql.SQL("alter table {} disable trigger user").format(name))
    for statement in statements:
        conn.execute(statement)
    conn.execute(sql.SQL("alter table {} enable trigger user").format(name))


def integrity_line(stdout: str, name: str) -> list[str]:
    """The cells of `name`'s line in the Integrity section of `vectorizer status --check`."""
    section = stdout.split("Integrity (--check)", 1)[1]
    [line] = [line for line in section.splitlines() if line.split()[1:2] == [name]]
    return line.split()


def seed_damage(conn: psycopg.Connection, vectorizer_id: int) -> None:
    """On an embedded docs(1..10): orphans for keys 2, 3 and the old key 4 (three chunks each);
    rows 104 (re-keyed 4) and 11 missing; rows 12 (NULL), 13 (blanks) and 14 (empty) with
    nothing to embed; 15 already queued, 16 in the failed queue."""
    without_triggers(
        conn,
        "docs",
        "delete from docs where id in (2, 3)",
        "update docs set id = 104 where id = 4",
        "insert into docs values (11, 't11', 'alpha11 beta11 gamma11'),"
        " (12, 't12', null), (13, 't13', e' \\t\\n '), (14, 't14', ''),"
        " (15, 't15', 'alpha15'), (16, 't16', 'alpha16')",
    )
    conn.execute(f"insert into ai._vectorizer_q_{vectorizer_id} (id) values (15)")
    conn.execute(
        f"insert into ai._vectorizer_q_failed_{vectorizer_id} (id, failure_step)"
        " values (16, 'embedding')"
    )


def embedded_docs(conn: psycopg.Connection, fake_openai: FakeOpenAI, db_url: str) -> int:
    rows = [(i, f"t{i}", f"alpha{i} beta{i} gamma{i}") for i in range(1, 11)]
    create_source(conn, rows=rows)
    vid = create_vectorizer(conn, name="blog", chunking=WORD_CHUNKS)
    run_ok(db_url, env=worker_env(fake_openai))
    assert len(store_rows(conn)) == 30
    return vid


def test_integrity_counts_orphans_and_missing_rows_without_changing_anything(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid = embedded_docs(conn, fake_openai, db_url)
    assert integrity(conn, vid) == (0, 0, 0)
    seed_damage(conn, vid)

    assert integrity(conn, vid) == (3, 9, 2)
    assert integrity(conn, "blog") == (3, 9, 2)
    assert len(store_rows(conn)) == 30
    assert [key for key, *_ in queue_rows(conn, vid)] == [15]


def test_repair_deletes_orphans_and_queues_only_missing_rows_then_the_worker_completes(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid = embedded_docs(conn, fake_openai, db_url)
    seed_damage(conn, vid)

    assert repair(conn, "blog") == (3, 9, 2)
    assert {key for key, *_ in store_rows(conn)} == {1, 5, 6, 7, 8, 9, 10}
    assert [key for key, *_ in queue_rows(conn, vid)] == [11, 15, 104]
    assert integrity(conn, vid) == (0, 0, 0)

    run_ok(db_url, env=worker_env(fake_openai))
    stored: dict[int, list[str]] = {}
    for key, _, chunk, embedding in store_rows(conn):
        stored.setdefault(key, []).append(chunk)
        assert_vector(embedding, chunk)
    assert stored[104] == ["alpha4", "beta4", "gamma4"]
    assert stored[11] == ["alpha11", "beta11", "gamma11"]
    assert sorted(stored) == [1, 5, 6, 7, 8, 9, 10, 11, 15, 104]
    # rows with nothing to embed are not requeued run after run, nor is the failed row
    assert repair(conn, vid) == (0, 0, 0)
    assert queue_rows(conn, vid) == []


def test_status_check_and_repair_commands(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid = embedded_docs(conn, fake_openai, db_url)
    seed_damage(conn, vid)

    plain = cli(db_url, "status")
    assert plain.returncode == 0, plain.stderr
    assert "orphan" not in plain.stdout  # counting is only done when asked

    checked = cli(db_url, "status", "--check")
    assert checked.returncode == 0, checked.stderr
    assert "Integrity (--check)" in checked.stdout
    assert integrity_line(checked.stdout, "blog") == [
        str(vid),
        "blog",
        "3",
        "9",
        "2",
        "run:",
        "vectorizer",
        "repair",
        "blog",
    ]

    repaired = cli(db_url, "repair", "blog")
    assert repaired.returncode == 0, repaired.stderr
    assert "deleted 9 orphan chunk(s) of 3 key(s)" in repaired.stdout
    assert "queued 2 row(s) without embeddings" in repaired.stdout

    again = cli(db_url, "repair", str(vid))
    assert again.returncode == 0, again.stderr
    assert "deleted 0 orphan chunk(s) of 0 key(s)" in again.stdout
    assert "queued 0 row(s)" in again.stdout

    healthy = cli(db_url, "status", "--check")
    assert integrity_line(healthy.stdout, "blog") == [str(vid), "blog", "0", "0", "0", "ok"]


def test_unknown_vectorizer_is_a_clear_error(conn: psycopg.Connection, db_url: str) -> None:
    with pytest.raises(errors.NoDataFound, match="no vectorizer named 'nope'"):
        repair(conn, "nope")
    with pytest.raises(errors.NoDataFound, match="no vectorizer with id 999"):
        integrity(conn, 999)
    result = cli(db_url, "repair", "nope")
    assert result.returncode == 1
    assert "no vectorizer named 'nope'" in result.stderr


def test_column_destination_has_no_orphans_and_queues_rows_without_a_vector(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, rows=[(i, f"t{i}", f"text {i}") for i in range(1, 6)])
    conn.execute("alter table docs add column embedding vector(8)")
    vid = create_vectorizer(
        conn, destination="ai.destination_column('embedding')", chunking="ai.chunking_none()"
    )
    run_ok(db_url, env=worker_env(fake_openai))
    without_triggers(
        conn,
        "docs",
        "update docs set embedding = null where id = 2",
        "insert into docs (id, title, body) values (6, 't6', 'text 6'), (7, 't7', null)",
    )
    assert integrity(conn, vid) == (0, 0, 2)
    assert repair(conn, vid) == (0, 0, 2)
    assert [key for key, *_ in queue_rows(conn, vid)] == [2, 6]
    run_ok(db_url, env=worker_env(fake_openai))
    for key, body, embedding in conn.execute(
        "select id, body, embedding::float4[] from docs where body is not null"
    ).fetchall():
        assert embedding is not None, key
        assert_vector(embedding, body)


def test_bytea_input_counts_as_missing_only_when_not_empty(conn: psycopg.Connection) -> None:
    conn.execute("create table files (id int primary key, content bytea)")
    vid = create_vectorizer(conn, "files", loading="ai.loading_column('content')")
    conn.execute(f"delete from ai._vectorizer_q_{vid}")
    without_triggers(
        conn, "files", "insert into files values (1, null), (2, ''::bytea), (3, '\\x25504446')"
    )
    assert integrity(conn, vid) == (0, 0, 1)
    assert repair(conn, vid) == (0, 0, 1)
    assert [key for key, *_ in queue_rows(conn, vid)] == [3]


HOSTILE_SCHEMA = 'Odd "Schema"'
HOSTILE_TABLE = "My 'Blog' \"Posts\""
TENANT = "Ten ant"
KEY = 'Key "Col"'
BODY = "Body; drop table x"


def test_hostile_identifiers_through_the_worker_integrity_and_repair(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    table = sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(HOSTILE_SCHEMA)))
    conn.execute(
        sql.SQL("create table {} ({} int, {} text, {} text, primary key ({}, {}))").format(
            table,
            sql.Identifier(TENANT),
            sql.Identifier(KEY),
            sql.Identifier(BODY),
            sql.Identifier(TENANT),
            sql.Identifier(KEY),
        )
    )
    insert = sql.SQL("insert into {} values (%s, %s, %s)").format(table)
    with conn.cursor() as cursor:
        cursor.executemany(
            insert, [(t, f"k'{i}\"", f"alpha{i} beta{i}") for t in (1, 2) for i in range(3)]
        )
    vid = create_vectorizer(
        conn,
        table.as_string(conn),
        name="hostile",
        loading=f"ai.loading_column({sql.quote(BODY)})",
        chunking=WORD_CHUNKS,
    )
    run_ok(db_url, env=worker_env(fake_openai))
    store = sql.Identifier(HOSTILE_SCHEMA, f"{HOSTILE_TABLE}_embedding_store")
    chunks = sql.SQL("select count(*) from {}").format(store)
    assert conn.execute(chunks).fetchone() == (12,)
    assert integrity(conn, "hostile") == (0, 0, 0)

    without_triggers(
        conn,
        table,
        sql.SQL("delete from {} where {} = 1 and {} = {}").format(
            table, sql.Identifier(TENANT), sql.Identifier(KEY), sql.Literal("k'0\"")
        ),
        sql.SQL("insert into {} values (3, {}, 'fresh words')").format(table, sql.Literal("x'\"")),
    )
    assert integrity(conn, vid) == (1, 2, 1)
    assert repair(conn, vid) == (1, 2, 1)
    run_ok(db_url, env=worker_env(fake_openai))
    assert conn.execute(chunks).fetchone() == (12,)
    assert integrity(conn, vid) == (0, 0, 0)
    fresh = sql.SQL("select chunk from {} where {} = 3 order by chunk_seq").format(
        store, sql.Identifier(TENANT)
    )
    assert conn.execute(fresh).fetchall() == [("fresh",), ("words",)]


def test_repairing_one_vectorizer_leaves_the_others_alone(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid = embedded_docs(conn, fake_openai, db_url)
    create_source(conn, "other", rows=[(1, "t", "one two")])
    other = create_vectorizer(conn, "other", name="other", chunking=WORD_CHUNKS)
    without_triggers(conn, "docs", "delete from docs where id = 1")
    without_triggers(conn, "other", "insert into other values (2, 't', 'three')")
    assert integrity(conn, other) == (0, 0, 1)
    assert repair(conn, vid) == (1, 3, 0)
    assert [key for key, *_ in queue_rows(conn, other)] == [1]  # untouched: queued at creation
    assert integrity(conn, other) == (0, 0, 1)


def test_status_check_reports_a_vectorizer_it_cannot_check_and_goes_on(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid = embedded_docs(conn, fake_openai, db_url)
    create_source(conn, "other", rows=[(1, "t", "one two")])
    other = create_vectorizer(conn, "other", name="other", chunking=WORD_CHUNKS)
    conn.execute(f"drop table ai._vectorizer_q_{other}")

    checked = cli(db_url, "status", "--check")
    assert checked.returncode == 0, checked.stderr
    assert integrity_line(checked.stdout, "blog") == [str(vid), "blog", "0", "0", "0", "ok"]
    broken = integrity_line(checked.stdout, "other")
    assert broken[2:5] == ["-", "-", "-"]
    assert f'"ai._vectorizer_q_{other}" does not exist' in " ".join(broken)
