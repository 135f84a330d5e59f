"""Helpers for the worker's end-to-end tests: run the real CLI as a subprocess against a real
Postgres and the fake OpenAI server, and read back what it left in the database.

Every subprocess runs with a timeout (once mode) or is killed in a `finally` (daemon mode), so
a hung worker fails its test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from tests.fake_openai import TEST_API_KEY, FakeOpenAI, expected_vector
from vectorizer.config import Vectorizer

REPO_ROOT = Path(__file__).resolve().parent.parent
DIMS = 8
MODEL = "text-embedding-3-small"
ONCE_TIMEOUT = 90.0


def worker_env(
    fake: FakeOpenAI | None = None,
    *,
    api_key: str | None = TEST_API_KEY,
    **extra: str,
) -> dict[str, str]:
    """The environment for a worker subprocess: the caller's, minus every VECTORIZER_*,
    PGAI_*, DATABASE_URL and OPENAI_* (so only what a test sets counts), pointed at the fake
    server."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VECTORIZER_", "OPENAI_", "PGAI_")) and key != "DATABASE_URL"
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    if fake is not None:
        env["OPENAI_BASE_URL"] = fake.base_url
    if api_key is not None:
        env["OPENAI_API_KEY"] = api_key
    env.update(extra)
    return env


def worker_command(db_url: str | None, *args: str) -> list[str]:
    command = [sys.executable, "-m", "vectorizer", "worker"]
    if db_url is not None:
        command += ["--db-url", db_url]
    return command + list(args)


def run_worker(
    db_url: str | None,
    *args: str,
    env: Mapping[str, str],
    once: bool = True,
    timeout: float = ONCE_TIMEOUT,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs `vectorizer worker [--once] args...` to completion."""
    flags = ["--once", *args] if once else list(args)
    return subprocess.run(
        worker_command(db_url, *flags),
        env=dict(env),
        cwd=str(cwd or REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_ok(db_url: str, *args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """A once-mode run that must exit 0; the assertion shows the worker's stderr."""
    result = run_worker(db_url, *args, env=env)
    assert result.returncode == 0, f"worker exited {result.returncode}:\n{result.stderr}"
    return result


@dataclass
class Daemon:
    """A worker subprocess in daemon mode; its output goes to temporary files."""

    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def daemon(
    db_url: str,
    *args: str,
    env: Mapping[str, str],
    once: bool = False,
) -> Iterator[Daemon]:
    """Starts a worker subprocess (daemon mode unless `once`) and always kills it at the end."""
    with tempfile.TemporaryDirectory(prefix="vectorizer-worker-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        flags = ["--once", *args] if once else list(args)
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                worker_command(db_url, *flags),
                env=dict(env),
                cwd=str(REPO_ROOT),
                stdout=stdout,
                stderr=stderr,
            )
        handle = Daemon(process, out, err)
        try:
            yield handle
        finally:
            handle.kill()


def wait_for(
    predicate: Callable[[], Any], timeout: float, *, interval: float = 0.02, what: str = ""
) -> Any:
    """Polls `predicate` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def wait_for_stderr(handle: Daemon, text: str, timeout: float) -> None:
    def seen() -> bool:
        if not handle.alive():
            raise AssertionError(f"worker exited before logging {text!r}:\n{handle.stderr()}")
        return text in handle.stderr()

    wait_for(seen, timeout, interval=0.05, what=f"{text!r} in the worker's stderr")


def terminate(handle: Daemon, timeout: float = 10.0) -> tuple[int, float]:
    """SIGTERM, then the exit code and how long the worker took to exit."""
    started = time.monotonic()
    handle.signal(signal.SIGTERM)
    code = handle.wait(timeout)
    return code, time.monotonic() - started


# --- setting up sources and vectorizers --------------------------------------------------------


def create_source(
    conn: psycopg.Connection,
    table: str = "docs",
    rows: Sequence[tuple[int, str, str | None]] = (),
    *,
    schema: str = "public",
) -> None:
    """`<schema>.<table>(id int primary key, title text, body text)` with `rows`."""
    name = sql.Identifier(schema, table)
    conn.execute(
        sql.SQL("create table {} (id int primary key, title text, body text)").format(name)
    )
    insert_rows(conn, table, rows, schema=schema)


def insert_rows(
    conn: psycopg.Connection,
    table: str,
    rows: Sequence[tuple[int, str, str | None]],
    *,
    schema: str = "public",
) -> None:
    if not rows:
        return
    with conn.cursor() as cursor:
        cursor.executemany(
            sql.SQL("insert into {} (id, title, body) values (%s, %s, %s)").format(
                sql.Identifier(schema, table)
            ),
            list(rows),
        )


def doc_rows(count: int, start: int = 1) -> list[tuple[int, str, str]]:
    return [(i, f"title {i}", f"body of document {i}") for i in range(start, start + count)]


def create_vectorizer(
    conn: psycopg.Connection,
    source: str = "docs",
    *,
    name: str | None = None,
    loading: str = "ai.loading_column('body')",
    embedding: str | None = None,
    chunking: str = "ai.chunking_none()",
    formatting: str | None = None,
    destination: str | None = None,
    processing: str | None = None,
    api_key_name: str | None = None,
    base_url: str | None = None,
    dimensions: int = DIMS,
) -> int:
    """`ai.create_vectorizer` with scheduling and indexing off; other arguments are SQL text."""
    if embedding is None:
        extra = ""
        if api_key_name is not None:
            extra += f", api_key_name => {sql.quote(api_key_name)}"
        if base_url is not None:
            extra += f", base_url => {sql.quote(base_url)}"
        embedding = f"ai.embedding_openai('{MODEL}', {dimensions}{extra})"
    arguments = [
        f"{sql.quote(source)}::regclass",
        f"loading => {loading}",
        f"embedding => {embedding}",
        f"chunking => {chunking}",
        "scheduling => ai.scheduling_none()",
        "indexing => ai.indexing_none()",
    ]
    if name is not None:
        arguments.append(f"name => {sql.quote(name)}")
    if formatting is not None:
        arguments.append(f"formatting => {formatting}")
    if destination is not None:
        arguments.append(f"destination => {destination}")
    if processing is not None:
        arguments.append(f"processing => {processing}")
    row = conn.execute(f"select ai.create_vectorizer({', '.join(arguments)})").fetchone()
    assert row is not None
    return int(row[0])


# --- reading back --------------------------------------------------------------------------


def store_rows(
    conn: psycopg.Connection, table: str = "docs_embedding_store", *, schema: str = "public"
) -> list[tuple[Any, ...]]:
    """(id, chunk_seq, chunk, embedding as a list of floats) of a single-int-key store."""
    return conn.execute(
        sql.SQL(
            "select id, chunk_seq, chunk, embedding::float4[] from {} order by id, chunk_seq"
        ).format(sql.Identifier(schema, table))
    ).fetchall()


def count(conn: psycopg.Connection, relation: str, where: str = "true") -> int:
    """Rows of `relation` (a trusted, already-qualified name from the test itself)."""
    row = conn.execute(f"select count(*) from {relation} where {where}").fetchone()
    assert row is not None
    return int(row[0])


def queue_rows(conn: psycopg.Connection, vectorizer_id: int) -> list[tuple[Any, ...]]:
    """(id, loading_retries, loading_retry_after) of a single-int-key queue, ordered."""
    return conn.execute(
        sql.SQL(
            "select id, loading_retries, loading_retry_after from {} order by id, loading_retries"
        ).format(sql.Identifier("ai", f"_vectorizer_q_{vectorizer_id}"))
    ).fetchall()


def queue_count(conn: psycopg.Connection, vectorizer_id: int) -> int:
    return count(conn, f"ai._vectorizer_q_{vectorizer_id}")


def failed_rows(conn: psycopg.Connection, vectorizer_id: int) -> list[tuple[Any, ...]]:
    """(id, failure_step) of a single-int-key failed queue, ordered."""
    return conn.execute(
        sql.SQL("select id, failure_step from {} order by id").format(
            sql.Identifier("ai", f"_vectorizer_q_failed_{vectorizer_id}")
        )
    ).fetchall()


def error_rows(conn: psycopg.Connection, vectorizer_id: int | None = None) -> list[tuple[Any, ...]]:
    """(id, message, details) of ai._vectorizer_errors, oldest first."""
    if vectorizer_id is None:
        return conn.execute(
            "select id, message, details from ai._vectorizer_errors order by recorded, message"
        ).fetchall()
    return conn.execute(
        "select id, message, details from ai._vectorizer_errors where id = %s"
        " order by recorded, message",
        (vectorizer_id,),
    ).fetchall()


def assert_vector(actual: Any, text: str, dims: int = DIMS) -> None:
    """The stored embedding is the fake's vector for exactly `text`."""
    np.testing.assert_allclose(np.asarray(actual), expected_vector(text, dims), rtol=1e-6)


def inputs_sent(fake: FakeOpenAI) -> list[str]:
    """Every input of every embeddings request answered with 200, in order of completion
    (including the driver's one-word probes after a rejected request)."""
    return [text for request in fake.embedded_requests for text in request.inputs]


def run_python(
    *args: str, env: Mapping[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`python args...` (e.g. `-m vectorizer install ...`) to completion, output captured."""
    return subprocess.run(
        [sys.executable, *args],
        env=dict(env),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def catalog_vectorizer(**config: Any) -> Vectorizer:
    """A catalog row of vectorizer 7 over public.docs (id int4), as the worker reads it: a
    column, no chunking, 4-d OpenAI embeddings; `config` replaces top-level config keys."""
    return Vectorizer.model_validate(
        {
            "id": 7,
            "name": "docs",
            "source_schema": "public",
            "source_table": "docs",
            "source_pk": [{"attname": "id", "typname": "int4", "attnum": 1, "pknum": 1}],
            "queue_schema": "ai",
            "queue_table": "_vectorizer_q_7",
            "queue_failed_table": "_vectorizer_q_failed_7",
            "disabled": False,
            "config": {
                "version": "0.12.1",
                "loading": {"implementation": "column", "column_name": "body"},
                "parsing": {"implementation": "auto"},
                "chunking": {"implementation": "none"},
                "formatting": {"implementation": "chunk_value"},
                "embedding": {
                    "implementation": "openai",
                    "model": "text-embedding-3-small",
                    "dimensions": 4,
                },
                "processing": {"implementation": "default"},
                "destination": {
                    "implementation": "table",
                    "target_schema": "public",
                    "target_table": "docs_store",
                },
                **config,
            },
        }
    )
