"""Chaos run: random source-table writes against a daemon worker, then store vs fresh build.

    python bench/interleaving.py --seconds 300 --rounds 3 [--seed 7] [--rows 500]

The long version of tests/test_interleaving.py (same scenario, tests/interleaving.py): each
round mutates for --seconds while a daemon with 4 executors embeds, drains the queue, builds
the final table again from scratch and compares the two stores. Prints one line per round
(operations, rows found gone or busy at write time, drain time, orphans, mismatches) and exits
1 if any round ended with an orphan or a mismatch. Uses DATABASE_URL or an embedded Postgres.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.backfill import start_database  # noqa: E402
from tests import interleaving  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402


def one_round(server_url: str, seconds: float, seed: int, rows: int, latency: float) -> bool:
    from vectorizer.install import install

    dbname = f"chaos_{seed}_{int(time.time())}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    db_url = make_conninfo(server_url, dbname=dbname)
    install(db_url)
    with FakeOpenAI() as fake, psycopg.connect(db_url, autocommit=True) as conn:
        report = interleaving.run(
            conn, db_url, fake, seconds=seconds, seed=seed, rows=rows, latency=latency
        )
    print(report.summary(), flush=True)
    return not report.orphan_keys and not report.mismatched_keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="mutation time per round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None, help="first round's seed")
    parser.add_argument("--rows", type=int, default=200, help="rows before the mutations")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="per embeddings call")
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    server_url, server = start_database()
    clean = True
    for offset in range(args.rounds):
        ok = one_round(server_url, args.seconds, seed + offset, args.rows, args.latency_ms / 1000)
        clean = clean and ok
    del server
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
