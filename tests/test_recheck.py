"""The write-time re-check on a real Postgres: which keys are present (and now locked), busy or
gone, that it never waits, and that what it locks holds DELETEs and key changes off until
commit while plain UPDATEs pass (table destination)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from tests.worker_helpers import create_source, create_vectorizer
from vectorizer.catalog import load_vectorizer
from vectorizer.recheck import SourceRecheck


async def recheck_for(db_url: str, vectorizer_id: int) -> SourceRecheck:
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        vectorizer = await load_vectorizer(conn, vectorizer_id)
    assert vectorizer is not None
    return SourceRecheck(vectorizer)


def seeded(conn: psycopg.Connection, column: bool = False) -> int:
    create_source(conn, rows=[(i, f"t{i}", f"body {i}") for i in range(1, 6)])
    if not column:
        return create_vectorizer(conn)
    conn.execute("alter table docs add column embedding vector(8)")
    return create_vectorizer(
        conn, destination="ai.destination_column('embedding')", chunking="ai.chunking_none()"
    )


def run_in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target)
    thread.start()
    return thread


async def test_present_busy_and_gone_without_waiting(conn: psycopg.Connection, db_url: str) -> None:
    recheck = await recheck_for(db_url, seeded(conn))
    conn.execute("delete from docs where id = 2")
    conn.execute("update docs set id = 40 where id = 4")
    with psycopg.connect(db_url) as other:
        other.execute("delete from docs where id = 3")  # open: row 3 is busy
        other.execute("update docs set body = 'edited' where id = 5")  # open, not a key change
        async with await psycopg.AsyncConnection.connect(db_url) as aconn, aconn.transaction():
            started = time.monotonic()
            check = await recheck.check(aconn, [(1,), (2,), (3,), (4,), (5,)])
            took = time.monotonic() - started
        other.rollback()
    assert check.present == {(1,), (5,)}
    assert check.busy == {(3,)}
    assert check.gone == {(2,), (4,)}
    assert took < 1.0  # skipped, not waited for


async def test_column_destination_also_skips_rows_being_updated(
    conn: psycopg.Connection, db_url: str
) -> None:
    recheck = await recheck_for(db_url, seeded(conn, column=True))
    with psycopg.connect(db_url) as other:
        other.execute("update docs set body = 'edited' where id = 5")
        async with await psycopg.AsyncConnection.connect(db_url) as aconn, aconn.transaction():
            check = await recheck.check(aconn, [(1,), (5,)])
        other.rollback()
    assert (check.present, check.busy, check.gone) == ({(1,)}, {(5,)}, set())


async def test_locked_rows_hold_deletes_and_key_changes_until_commit(
    conn: psycopg.Connection, db_url: str
) -> None:
    recheck = await recheck_for(db_url, seeded(conn))

    def delete_row() -> None:
        with psycopg.connect(db_url, autocommit=True) as writer:
            writer.execute("delete from docs where id = 1")

    def rekey_row() -> None:
        with psycopg.connect(db_url, autocommit=True) as writer:
            writer.execute("update docs set id = 20 where id = 2")

    async with await psycopg.AsyncConnection.connect(db_url) as aconn:
        async with aconn.transaction():
            check = await recheck.check(aconn, [(1,), (2,), (3,)])
            assert check.present == {(1,), (2,), (3,)}
            # a plain UPDATE is not held
            with psycopg.connect(db_url, autocommit=True) as writer:
                writer.execute("set lock_timeout = '2s'")
                writer.execute("update docs set body = 'edited' where id = 3")
            deleting = run_in_thread(delete_row)
            rekeying = run_in_thread(rekey_row)
            time.sleep(0.5)
            assert deleting.is_alive() and rekeying.is_alive()
        # committed: both go ahead
        deleting.join(10)
        rekeying.join(10)
        assert not deleting.is_alive() and not rekeying.is_alive()
    keys = [key for (key,) in conn.execute("select id from docs order by id").fetchall()]
    assert keys == [3, 4, 5, 20]


async def test_hostile_composite_key(conn: psycopg.Connection, db_url: str) -> None:
    table = sql.Identifier('Odd "S"', "T 'x'")
    first, second = sql.Identifier("A b"), sql.Identifier('k"ey')
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier('Odd "S"')))
    conn.execute(
        sql.SQL("create table {} ({} int, {} text, body text, primary key ({}, {}))").format(
            table, first, second, first, second
        )
    )
    quoted = "a'\""
    with conn.cursor() as cursor:
        cursor.executemany(
            sql.SQL("insert into {} values (%s, %s, %s)").format(table),
            [(1, quoted, "x"), (1, "b", "y"), (2, quoted, "z")],
        )
    vid = create_vectorizer(conn, table.as_string(conn), name="hostile")
    recheck = await recheck_for(db_url, vid)
    conn.execute(sql.SQL("delete from {} where {} = 1 and {} = 'b'").format(table, first, second))
    async with await psycopg.AsyncConnection.connect(db_url) as aconn, aconn.transaction():
        check = await recheck.check(aconn, [(1, quoted), (1, "b"), (2, quoted), (3, "c")])
    assert check.present == {(1, quoted), (2, quoted)}
    assert check.gone == {(1, "b"), (3, "c")}
    assert check.busy == set()
