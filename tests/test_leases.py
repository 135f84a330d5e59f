"""Leased claims (vectorizer/lease.py): no transaction of the worker stays open while it waits
for its provider, so vacuum and TRUNCATE go on; keys stay held meanwhile (leases, session
advisory locks), and a row changed meanwhile is embedded again rather than written stale."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    assert_vector,
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    queue_count,
    store_rows,
    wait_for,
    worker_env,
)

PAUSE = 10  # the provider's Retry-After, seconds


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        server.configure(latency=0.05)
        yield server


def worker_transactions(conn: psycopg.Connection) -> list[tuple[str, float]]:
    """(application_name, seconds its transaction has been open) of every worker backend on
    this database."""
    return [
        (name, float(age or 0.0))
        for name, age in conn.execute(
            """
            select application_name, extract(epoch from clock_timestamp() - xact_start)
            from pg_stat_activity
            where datname = current_database() and application_name like 'vectorizer-worker%%'
            """
        ).fetchall()
    ]


def paused(fake: FakeOpenAI) -> bool:
    """The worker got its 429 and nothing has been embedded yet."""
    statuses = [request.status for request in fake.requests]
    return 429 in statuses and 200 not in statuses


def vacuum_report(conn: psycopg.Connection, table: sql.Composable) -> str:
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute(sql.SQL("vacuum (verbose) {}").format(table))
    return "\n".join(notices)


def test_paused_on_a_slow_provider_the_worker_holds_no_transaction_and_vacuum_goes_on(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(40))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 10)")
    queue = sql.Identifier("ai", f"_vectorizer_q_{vid}")
    fake.fail_next(429, retry_after=str(PAUSE))
    with daemon(db_url, "--poll-interval", "1", env=worker_env(fake)) as handle:
        wait_for(lambda: paused(fake), 60, what="the provider's 429")
        # the batch is claimed and waiting: its keys are leased, by a live backend
        leased = conn.execute(
            sql.SQL("select count(*) from {} where lease_token is not null").format(queue)
        ).fetchone()
        assert leased is not None and leased[0] == 10

        seen: set[str] = set()
        longest = 0.0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and paused(fake):
            for name, age in worker_transactions(conn):
                seen.add(name)
                longest = max(longest, age)
            time.sleep(0.05)
        print(f"worker backends {sorted(seen)}; longest open transaction {longest:.3f}s")
        assert any("executor" in name for name in seen), seen  # the poll saw the worker
        assert longest < 1.0, f"a worker transaction was open {longest:.1f}s"

        # dead queue rows made while the worker waits are removable at once
        conn.execute(
            sql.SQL("insert into {} (id) select generate_series(1000, 1099)").format(queue)
        )
        conn.execute(sql.SQL("delete from {} where id >= 1000").format(queue))
        report = vacuum_report(conn, queue)
        assert paused(fake), "the pause ended before the vacuum: the test proves nothing"
        match = re.search(r"tuples: (\d+) removed, \d+ remain, (\d+) are dead but not yet", report)
        assert match is not None, report
        print(f"vacuum while paused: {match.group(0)} removable")
        assert int(match.group(1)) >= 100 and int(match.group(2)) == 0, report

        wait_for(lambda: len(store_rows(conn)) == 40, 60, what="every row embedded")
        assert handle.alive()
    assert queue_count(conn, vid) == 0


def test_rows_changed_or_truncated_while_embedding_are_not_written_stale(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(6))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 10)")
    fake.fail_next(429, retry_after="3")
    with daemon(db_url, "--poll-interval", "1", env=worker_env(fake)) as handle:
        wait_for(lambda: paused(fake), 60, what="the provider's 429")
        conn.execute("set lock_timeout = '2s'")
        # through the trigger: a newer queue row stands for the new content
        conn.execute("update docs set body = 'new body one' where id = 1")
        with conn.transaction():
            # behind the trigger's back (a bulk load with triggers off): the digest tells
            conn.execute("set local session_replication_role = replica")
            conn.execute("update docs set body = 'new body two' where id = 2")
        conn.execute("delete from docs where id = 3")
        assert paused(fake)

        def landed() -> bool:
            return {key: chunk for key, _, chunk, _ in store_rows(conn)} == {
                1: "new body one",
                2: "new body two",
                4: "body of document 4",
                5: "body of document 5",
                6: "body of document 6",
            }

        wait_for(landed, 60, what="the current content of every row")
        for _, _, chunk, vector in store_rows(conn):
            assert_vector(vector, chunk)
        wait_for(lambda: queue_count(conn, vid) == 0, 30, what="an empty queue")

        # TRUNCATE does not wait for a batch in flight either
        conn.execute("insert into docs values (7, 't', 'seven'), (8, 't', 'eight')")
        fake.fail_next(429, retry_after="3")
        wait_for(lambda: fake.requests[-1].status == 429, 30, what="the second pause")
        started = time.monotonic()
        conn.execute("truncate docs")
        assert time.monotonic() - started < 1.0
        time.sleep(4)  # the pause ends; the batch finds its rows gone
        assert store_rows(conn) == []
        assert queue_count(conn, vid) == 0
        assert handle.alive()


def test_hostile_names_and_a_composite_key_through_claim_lease_and_write(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    schema = sql.Identifier('Odd "S"')
    table = sql.Identifier('Odd "S"', "T 'x'")
    first, second = sql.Identifier("A b"), sql.Identifier('k"ey')
    conn.execute(sql.SQL("create schema {}").format(schema))
    conn.execute(
        sql.SQL("create table {} ({} text, {} int, body text, primary key ({}, {}))").format(
            table, second, first, first, second
        )
    )
    quoted = "a'\""
    rows = [(quoted, 1, "one"), ("b", 1, "two"), (quoted, 2, "three")]
    with conn.cursor() as cursor:
        cursor.executemany(sql.SQL("insert into {} values (%s, %s, %s)").format(table), rows)
    vid = create_vectorizer(conn, table.as_string(conn), name="hostile")
    fake.fail_next(429, retry_after="2")
    with daemon(db_url, "--poll-interval", "1", env=worker_env(fake)):
        wait_for(lambda: paused(fake), 60, what="the provider's 429")
        # changed while leased: embedded again from its new text
        conn.execute(sql.SQL("update {} set body = 'TWO' where {} = 'b'").format(table, second))
        target = conn.execute(
            "select config->'destination'->>'target_schema', config->'destination'->>'target_table'"
            " from ai.vectorizer where id = %s",
            (vid,),
        ).fetchone()
        assert target is not None
        store = sql.Identifier(*target)

        def stored() -> dict[tuple[object, ...], str]:
            found = conn.execute(
                sql.SQL("select {}, {}, chunk from {}").format(first, second, store)
            ).fetchall()
            return {(a, b): chunk for a, b, chunk in found}

        wait_for(
            lambda: stored() == {(1, quoted): "one", (1, "b"): "TWO", (2, quoted): "three"},
            60,
            what="every row's current text",
        )
        wait_for(lambda: queue_count(conn, vid) == 0, 30, what="an empty queue")
