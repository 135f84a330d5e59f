"""Trigger overhead: what a vectorizer adds to the writes of its source table.

    python bench/triggers.py --rows 20000 --rounds 5

Two tables of the same shape (`id int primary key, title text, body text`, the documents of
bench/backfill.py), one plain and one under a vectorizer (the backfill's config). Each round
writes the same rows to both, in alternating order, each timed on its own after a CHECKPOINT:

* `insert`: one `INSERT ... SELECT` of every row from a staging table (the trigger's share of
  a server-side insert, the strictest ratio),
* `copy`: a client COPY of every row,
* `update`: one UPDATE of every row's body (the queue emptied first, as after a drain).

Prints the median time of each and the ratio vectorized ÷ plain.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backfill import document, new_database, register_vectorizer, start_database

OPERATIONS = ("insert", "copy", "update")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    server_url, server = start_database()
    db_url = new_database(server_url)
    from vectorizer.install import install

    install(db_url)
    rng = random.Random(1)
    rows = [(i, f"document {i}", document(rng)) for i in range(args.rows)]
    times: dict[tuple[str, str], list[float]] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_table(conn, "staging")
        copy_rows(conn, "staging", rows)
        for round_ in range(args.rounds):
            order = ("plain", "vectorized") if round_ % 2 == 0 else ("vectorized", "plain")
            for kind in order:
                for operation, seconds in one_round(conn, kind, rows).items():
                    times.setdefault((operation, kind), []).append(seconds)
    print(f"{args.rows:,} rows, median of {args.rounds} rounds")
    print("| operation | plain | vectorized | ratio |")
    print("|---|---|---|---|")
    for operation in OPERATIONS:
        plain = statistics.median(times[(operation, "plain")])
        vectorized = statistics.median(times[(operation, "vectorized")])
        print(
            f"| {operation} | {plain * 1000:.0f} ms | {vectorized * 1000:.0f} ms"
            f" | x{vectorized / plain:.2f} |"
        )
    del server


def one_round(conn: psycopg.Connection, kind: str, rows: list[tuple]) -> dict[str, float]:
    """Times each operation on a fresh table of `kind` (plain, or under a vectorizer)."""
    measured = {}
    for operation in OPERATIONS:
        table = f"docs_{kind}"
        conn.execute("select ai.drop_vectorizer(id, drop_all => true) from ai.vectorizer")
        conn.execute(sql.SQL("drop table if exists {} cascade").format(sql.Identifier(table)))
        create_table(conn, table)
        if kind == "vectorized":
            register_vectorizer(conn, table)
        if operation == "update":
            copy_rows(conn, table, rows)
            empty_queues(conn)
        conn.execute("checkpoint")
        started = time.perf_counter()
        if operation == "insert":
            conn.execute(
                sql.SQL("insert into {} select * from staging").format(sql.Identifier(table))
            )
        elif operation == "copy":
            copy_rows(conn, table, rows)
        else:
            conn.execute(
                sql.SQL("update {} set body = body || ' edited'").format(sql.Identifier(table))
            )
        measured[operation] = time.perf_counter() - started
        if kind == "vectorized":
            check_queued(conn, len(rows))
    return measured


def create_table(conn: psycopg.Connection, table: str) -> None:
    conn.execute(
        sql.SQL("create table {} (id int primary key, title text, body text)").format(
            sql.Identifier(table)
        )
    )


def copy_rows(conn: psycopg.Connection, table: str, rows: list[tuple]) -> None:
    statement = sql.SQL("copy {} (id, title, body) from stdin").format(sql.Identifier(table))
    with conn.cursor().copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def empty_queues(conn: psycopg.Connection) -> None:
    """As after a drain: the rows loaded before the timed UPDATE are not queued any more."""
    for schema, table in conn.execute("select queue_schema, queue_table from ai.vectorizer"):
        conn.execute(sql.SQL("truncate {}").format(sql.Identifier(schema, table)))


def check_queued(conn: psycopg.Connection, expected: int) -> None:
    """The trigger did its job: every written row is queued (else the ratio means nothing)."""
    schema, table = conn.execute("select queue_schema, queue_table from ai.vectorizer").fetchone()
    query = sql.SQL("select count(distinct id) from {}").format(sql.Identifier(schema, table))
    queued = conn.execute(query).fetchone()[0]
    if queued != expected:
        raise SystemExit(f"the trigger queued {queued} of {expected} rows")


if __name__ == "__main__":
    main()
