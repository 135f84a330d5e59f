"""Claim benchmark: what one 50-key claim costs as the queue grows, and after a bad history.

    python bench/claim.py --rows 20000 100000 200000

For each size: a vectorizer over a table of that many rows (so that many keys queued), then
claims of 50 keys until the queue is empty, each in its own transaction, while another
session holds a transaction open (as the other executors' batches do, which keeps deleted
queue rows from being cleaned up). Prints the mean claim time over the first, middle and last
tenth of the claims: a claim whose cost grows with the queue shows rising figures.

`--history` first analyzes the queue while it is empty and runs the claim a dozen times on it
(so it is prepared with statistics that say "empty"), then fills the queue in one transaction:
the situation in which a plan that follows statistics falls into sequential scans per key.
Uses DATABASE_URL or an embedded Postgres; no worker, no embedding.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.backfill import start_database  # noqa: E402
from vectorizer.catalog import load_vectorizer  # noqa: E402
from vectorizer.install import install  # noqa: E402
from vectorizer.lease import Lease  # noqa: E402
from vectorizer.queue import EXECUTOR_SESSION, Claimer, build_queries  # noqa: E402

BATCH = 50


def prepare(server_url: str, rows: int, history: bool) -> tuple[str, int]:
    name = f"bench_claim_{rows}_{int(time.time())}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    install(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table docs (id int primary key, body text)")
        row = conn.execute(
            """
            select ai.create_vectorizer('docs'::regclass,
              loading => ai.loading_column('body'),
              embedding => ai.embedding_openai('text-embedding-3-small', 8),
              chunking => ai.chunking_none(),
              scheduling => ai.scheduling_none(), indexing => ai.indexing_none())
            """
        ).fetchone()
        assert row is not None
        if history:
            conn.execute(
                sql.SQL("vacuum analyze ai.{}").format(sql.Identifier(f"_vectorizer_q_{row[0]}"))
            )
    return url, int(row[0])


def fill(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into docs select g, 'body ' || g from generate_series(1, %s) g", (rows,)
        )


async def claim_all(url: str, vectorizer_id: int, rows: int, history: bool) -> list[float]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    holder = await psycopg.AsyncConnection.connect(url)
    try:
        await conn.execute(EXECUTOR_SESSION)
        vectorizer = await load_vectorizer(conn, vectorizer_id)
        assert vectorizer is not None
        claimer = Claimer(build_queries(vectorizer))
        if history:
            for _ in range(12):
                async with conn.transaction():
                    await claimer.claim(conn, Lease().params(), BATCH)
        await asyncio.to_thread(fill, url, rows)
        await holder.execute("select txid_current()")  # an open transaction, like a batch's
        times = []
        while True:
            started = time.perf_counter()
            async with conn.transaction():
                claimed = await claimer.claim(conn, Lease().params(), BATCH)
            times.append(time.perf_counter() - started)
            if not claimed:
                return times[:-1]
    finally:
        await holder.close()
        await conn.close()


def tenth(times: list[float], where: str) -> float:
    size = max(1, len(times) // 10)
    start = {"first": 0, "middle": len(times) // 2 - size // 2, "last": len(times) - size}[where]
    return statistics.mean(times[start : start + size]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--history", action="store_true")
    args = parser.parse_args()
    server_url, server = start_database()
    print(
        f"{'queued':>8} {'claims':>7} {'first ms':>9} {'middle ms':>10} {'last ms':>8} "
        f"{'total s':>8}  history={args.history}"
    )
    for rows in args.rows:
        url, vectorizer_id = prepare(server_url, rows, args.history)
        times = asyncio.run(claim_all(url, vectorizer_id, rows, args.history))
        print(
            f"{rows:>8} {len(times):>7} {tenth(times, 'first'):>9.2f} "
            f"{tenth(times, 'middle'):>10.2f} {tenth(times, 'last'):>8.2f} {sum(times):>8.1f}"
        )
    del server


if __name__ == "__main__":
    main()
