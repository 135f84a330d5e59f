"""The claim's cost is O(batch), whatever the queue's size and statistics: its plan reaches the
queue only through the key index, even when the queue was analyzed while empty and the
statement is prepared, and a burst after such a history lands about as fast as without it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    insert_rows,
    queue_count,
    wait_for,
    worker_env,
)
from vectorizer.catalog import load_vectorizer
from vectorizer.lease import Lease
from vectorizer.queue import EXECUTOR_SESSION, build_queries


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def claim_plans(db_url: str, vectorizer_id: int) -> tuple[str, str]:
    """The claim's custom plan (for batch size 50) and its generic plan, as an executor
    session plans them."""

    async def explain() -> tuple[str, str]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await conn.execute(EXECUTOR_SESSION)
            vectorizer = await load_vectorizer(conn, vectorizer_id)
            assert vectorizer is not None
            claim = build_queries(vectorizer).claim
            params = {"batch_size": 50, **Lease().params()}
            async with conn.transaction():
                cursor = await conn.execute(sql.SQL("explain ") + claim, params, prepare=False)
                custom = "\n".join(row[0] for row in await cursor.fetchall())
                query = claim.as_string(conn)
                for number, name in enumerate(params, start=1):
                    query = query.replace(f"%({name})s", f"${number}")
                cursor = await conn.execute(f"explain (generic_plan) {query}", prepare=False)
                generic = "\n".join(row[0] for row in await cursor.fetchall())
                raise _Rollback((custom, generic))  # the claim took advisory locks: let go

    try:
        asyncio.run(explain())
    except _Rollback as done:
        return done.plans
    raise AssertionError("unreachable")


class _Rollback(Exception):
    def __init__(self, plans: tuple[str, str]) -> None:
        self.plans = plans


def executors(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "select count(distinct application_name) from pg_stat_activity"
        " where datname = current_database() and application_name like %s",
        ("vectorizer-worker[%]: executor",),
    ).fetchone()
    return int(row[0]) if row else 0


def queue_scans(plan: str, vectorizer_id: int) -> list[str]:
    queue = f"_vectorizer_q_{vectorizer_id}"
    return [line.strip() for line in plan.splitlines() if "Seq Scan" in line and queue in line]


@pytest.mark.parametrize("history", ["vacuum analyze", "analyze"])
def test_the_claim_never_scans_the_queue_even_with_stats_from_an_empty_queue(
    conn: psycopg.Connection, db_url: str, history: str
) -> None:
    create_source(conn)
    vid = create_vectorizer(conn)
    conn.execute(f"{history} ai._vectorizer_q_{vid}")  # statistics say: empty
    insert_rows(conn, "docs", doc_rows(3000))  # but it is not, and autoanalyze has not run

    custom, generic = claim_plans(db_url, vid)

    assert queue_scans(custom, vid) == [], custom
    assert queue_scans(generic, vid) == [], generic
    assert f"_vectorizer_q_{vid}_" in custom  # through the key index instead


def test_a_burst_after_an_empty_analyzed_queue_lands_like_one_without_that_history(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    burst = 2000
    create_source(conn, "fresh")
    create_source(conn, "seasoned")
    fresh = create_vectorizer(conn, "fresh")
    seasoned = create_vectorizer(conn, "seasoned")
    conn.execute(f"vacuum analyze ai._vectorizer_q_{seasoned}")

    with daemon(db_url, "--poll-interval", "0.1", env=worker_env(fake)):
        # every poll drains both queues: the claim statement runs (and gets prepared) dozens
        # of times while the queues are empty
        wait_for(lambda: executors(conn) >= 2, 30, what="both runners' executors")
        time.sleep(3)
        timings = {}
        for table, vectorizer_id in (("fresh", fresh), ("seasoned", seasoned)):
            started = time.monotonic()
            with conn.transaction():
                insert_rows(conn, table, doc_rows(burst))
            wait_for(lambda v=vectorizer_id: queue_count(conn, v) == 0, 300, what=table)
            timings[table] = time.monotonic() - started

    assert conn.execute("select count(*) from seasoned_embedding_store").fetchone() == (burst,)
    # before the fix: 33-74 s for the seasoned queue against ~1.5 s fresh
    assert timings["seasoned"] < 3 * timings["fresh"] + 5, timings


def test_a_claim_that_leases_rows_commits_without_waiting_for_the_wal(
    conn: psycopg.Connection, db_url: str
) -> None:
    create_source(conn)
    vid = create_vectorizer(conn)
    insert_rows(conn, "docs", doc_rows(3))

    async def claim_in_a_transaction() -> tuple[int, str, str]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as session:
            vectorizer = await load_vectorizer(session, vid)
            assert vectorizer is not None
            claim = build_queries(vectorizer).claim
            async with session.transaction():
                cursor = await session.execute(claim, {"batch_size": 50, **Lease().params()})
                claimed = len(await cursor.fetchall())
                inside = await (await session.execute("show synchronous_commit")).fetchone()
            # set locally: the setting ends with the claim's transaction
            after = await (await session.execute("show synchronous_commit")).fetchone()
            await session.execute("select pg_advisory_unlock_all()")
            assert inside is not None and after is not None
            return claimed, inside[0], after[0]

    claimed, inside, after = asyncio.run(claim_in_a_transaction())
    assert (claimed, inside, after) == (3, "off", "on")
