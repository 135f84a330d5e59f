"""A pgai deployment switching to this worker: pgai's command-line contract (exit codes and
messages of its own worker tests), pgai's environment names, and the in-process
`vectorizer.Worker` API shaped like pgai's. Real worker subprocesses and a real Postgres."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

import vectorizer
from tests.fake_openai import TEST_API_KEY, FakeOpenAI
from tests.worker_helpers import (
    REPO_ROOT,
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    queue_count,
    run_worker,
    store_rows,
    wait_for,
    wait_for_stderr,
    worker_env,
)
from vectorizer.install import install
from vectorizer.worker import WorkerSetupError


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


# --- exit codes and messages, as pgai 0.12.1's cli/test_vectorizer_core.py asserts them -------


def test_missing_schema_exits_1_and_with_exit_on_error_false_logs_and_exits_0(
    empty_db_url: str, fake: FakeOpenAI
) -> None:
    failed = run_worker(empty_db_url, env=worker_env(fake), timeout=30)
    tolerated = run_worker(empty_db_url, "--exit-on-error=false", env=worker_env(fake), timeout=30)

    assert failed.returncode == 1
    assert tolerated.returncode == 0, tolerated.stderr
    for result in (failed, tolerated):
        assert "pgai is not installed in the database" in result.stderr  # pgai's words
        assert "vectorizer install" in result.stderr  # and what to do
        assert "Traceback" not in result.stderr


def test_unknown_vectorizer_ids_are_numbers_in_pgais_message(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(1))
    vid = create_vectorizer(conn)

    failed = run_worker(db_url, "-i", "0", env=worker_env(fake), timeout=30)
    tolerated = run_worker(db_url, "-i", "0", "--exit-on-error=false", env=worker_env(fake))
    mixed = run_worker(db_url, "-i", "0", "-i", str(vid), env=worker_env(fake), timeout=30)

    assert failed.returncode == 1
    assert tolerated.returncode == 0, tolerated.stderr
    for result in (failed, tolerated):
        assert "invalid vectorizers, wanted: [0], got: []" in result.stderr
    assert f"invalid vectorizers, wanted: [0, {vid}], got: [{vid}] (unknown: [0])" in mixed.stderr
    assert mixed.returncode == 1
    assert queue_count(conn, vid) == 1  # nothing ran


def test_a_daemon_started_before_install_waits_for_the_schema_then_works(
    empty_db_url: str, fake: FakeOpenAI
) -> None:
    flags = ["--poll-interval", "300ms"]
    with daemon(empty_db_url, *flags, env=worker_env(fake)) as handle:
        wait_for_stderr(handle, "pgai is not installed in the database", 20)
        install(empty_db_url)
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            create_source(conn, rows=doc_rows(3))
            vid = create_vectorizer(conn)
            wait_for(lambda: len(store_rows(conn)) == 3, 30, what="the rows embedded")
            assert queue_count(conn, vid) == 0
        handle.signal(signal.SIGTERM)
        assert handle.wait(15) == 0


# --- pgai's environment names ------------------------------------------------------------------


def test_pgai_environment_variables_run_the_worker(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(12))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 2)")
    create_source(conn, "skipped", doc_rows(2))
    other = create_vectorizer(conn, "skipped")
    env = worker_env(
        fake,
        PGAI_VECTORIZER_WORKER_DB_URL=db_url,
        PGAI_VECTORIZER_WORKER_ONCE="true",
        PGAI_VECTORIZER_WORKER_VECTORIZER_IDS=str(vid),
        PGAI_VECTORIZER_WORKER_CONCURRENCY="3",
        PGAI_VECTORIZER_WORKER_POLL_INTERVAL="750ms",
        PGAI_VECTORIZER_WORKER_LOG_LEVEL="debug",
    )
    result = run_worker(None, env=env, once=False, timeout=60)

    assert result.returncode == 0, result.stderr
    assert f"vectorizer_id={vid} concurrency=3" in result.stderr
    assert " DEBUG " in result.stderr
    assert "once mode, exiting" in result.stderr
    assert len(store_rows(conn)) == 12
    assert queue_count(conn, other) == 2  # only the vectorizer named by pgai's id list
    interval = conn.execute(
        "select expected_heartbeat_interval from ai.vectorizer_worker_process"
    ).fetchone()
    assert interval == (timedelta(milliseconds=750),)

    # pgai's command with only the program's name changed; ours win over pgai's variables
    conn.execute("insert into docs values (100, 't', 'one more')")
    ours = subprocess.run(
        [sys.executable, "-m", "vectorizer", "vectorizer", "worker"],
        env={**env, "VECTORIZER_CONCURRENCY": "2"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ours.returncode == 0, ours.stderr
    assert f"vectorizer_id={vid} concurrency=2" in ours.stderr
    assert len(store_rows(conn)) == 13
    # a bad pgai value is named as such
    bad = run_worker(
        None, env={**env, "PGAI_VECTORIZER_WORKER_CONCURRENCY": "many"}, once=False, timeout=60
    )
    assert bad.returncode != 0
    assert "PGAI_VECTORIZER_WORKER_CONCURRENCY" in bad.stderr and "many" in bad.stderr


def test_pgai_db_url_variable_reaches_install_and_status(empty_db_url: str) -> None:
    env = {**worker_env(), "PGAI_VECTORIZER_WORKER_DB_URL": empty_db_url}
    for command in (["install"], ["status"]):
        result = subprocess.run(
            [sys.executable, "-m", "vectorizer", *command],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert "Vectorizers" in result.stdout


# --- the in-process API ------------------------------------------------------------------------


def test_in_process_worker_run_and_await(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
    create_source(conn, rows=doc_rows(5))
    vid = create_vectorizer(conn)

    assert vectorizer.Worker(db_url, once=True, vectorizer_ids=[vid]).run() is None
    assert len(store_rows(conn)) == 5

    async def daemon_then_shutdown() -> tuple[Exception | None, int]:
        worker = vectorizer.Worker(db_url, poll_interval=timedelta(milliseconds=200))
        running = asyncio.ensure_future(worker.arun())
        conn.execute("insert into docs values (6, 't', 'a sixth row')")
        for _ in range(200):
            if len(store_rows(conn)) == 6:
                break
            await asyncio.sleep(0.05)
        await worker.request_graceful_shutdown()
        return await asyncio.wait_for(running, 15), len(store_rows(conn))

    assert asyncio.run(daemon_then_shutdown()) == (None, 6)

    async def unknown() -> Exception | None:
        return await vectorizer.Worker(db_url, once=True, vectorizer_ids=[999])

    error = asyncio.run(unknown())
    assert isinstance(error, WorkerSetupError)
    assert "invalid vectorizers, wanted: [999], got: []" in str(error)
    with pytest.raises(ValueError, match="poll_interval must be positive"):
        vectorizer.Worker(db_url, poll_interval=0)
