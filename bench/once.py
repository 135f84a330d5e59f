"""Idle once-run benchmark: how long does `vectorizer worker --once` take with nothing queued?

    python bench/once.py --runs 7

A database with the schema installed and one vectorizer (the bench/backfill.py workload's
config: OpenAI embeddings, recursive chunking, a `$title: $chunk` template) whose queue is
empty, as a cron job or a Kubernetes Job finds it most of the time. Each run is the real CLI
as a subprocess, timed from start to exit (interpreter start-up, imports, connecting, the
empty-queue check, shutdown), with bytecode caching on as in an installed package. Prints
every run and the median. With `--baseline <checkout>` the same runs are made with that
checkout's code first on PYTHONPATH, alternating.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backfill import start_database, worker_env  # noqa: E402


def prepare(db_url: str) -> None:
    from vectorizer.install import install

    install(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("create table docs (id int primary key, title text, body text)")
        conn.execute(
            """
            select ai.create_vectorizer('docs'::regclass,
              loading => ai.loading_column('body'),
              embedding => ai.embedding_openai('text-embedding-3-small', 1536),
              chunking => ai.chunking_recursive_character_text_splitter(800, 100),
              formatting => ai.formatting_python_template('$title: $chunk'),
              destination => ai.destination_table('docs_embedding_store'))
            """
        )


def run_once(db_url: str, code: Path) -> float:
    # no provider is reachable: a run that tried to embed would fail, not pass unnoticed
    env = worker_env(code, "http://127.0.0.1:9/v1")
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "vectorizer", "worker", "--db-url", db_url, "--once"],
        env=env,
        cwd=code,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"worker ({code}) failed:\n{process.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="a checkout to compare with")
    args = parser.parse_args()

    server_url, server = start_database()
    name = f"bench_once_{int(time.time())}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    db_url = make_conninfo(server_url, dbname=name)
    prepare(db_url)
    sides = {"this": REPO} | ({"baseline": args.baseline} if args.baseline else {})
    runs: dict[str, list[float]] = {label: [] for label in sides}
    run_once(db_url, REPO)  # warm the OS file cache: every run after it starts alike
    for _ in range(args.runs):
        for label, code in sides.items():
            runs[label].append(run_once(db_url, code))
    for label, seconds in runs.items():
        listed = " ".join(f"{s:.2f}" for s in seconds)
        print(f"{label:<9} idle once-run median {statistics.median(seconds):.2f}s  ({listed})")
    del server


if __name__ == "__main__":
    main()
