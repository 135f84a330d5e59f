"""The worker as a long-running process: several workers on one queue, kill -9 and SIGTERM in
the middle of a batch, NOTIFY wake-ups, heartbeats, and one failing vectorizer among good ones.
Real CLI subprocesses, a real Postgres and real HTTP to tests/fake_openai.py."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    Daemon,
    assert_vector,
    count,
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    error_rows,
    inputs_sent,
    insert_rows,
    queue_count,
    run_ok,
    store_rows,
    terminate,
    wait_for,
    wait_for_stderr,
    worker_command,
    worker_env,
)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _stored_ids(conn: psycopg.Connection, table: str = "docs_embedding_store") -> set[int]:
    return {row[0] for row in conn.execute(f"select id from {table}").fetchall()}


def _queued_ids(conn: psycopg.Connection, vectorizer_id: int) -> set[int]:
    rows = conn.execute(f"select id from ai._vectorizer_q_{vectorizer_id}").fetchall()
    return {row[0] for row in rows}


def _batch_open(conn: psycopg.Connection, vectorizer_id: int) -> bool:
    """A batch of the worker is in flight: some queued keys carry its lease (claimed, not
    written yet). No transaction is open while a batch waits for the provider, so the
    backend's state cannot tell."""
    row = conn.execute(
        sql.SQL("select exists (select from ai.{} where lease_token is not null)").format(
            sql.Identifier(f"_vectorizer_q_{vectorizer_id}")
        )
    ).fetchone()
    return bool(row and row[0])


def _worker_backends(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "select count(*) from pg_stat_activity"
        " where datname = current_database() and application_name like 'vectorizer-worker%'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _listening(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "select count(*) from pg_stat_activity where datname = current_database()"
        " and application_name = 'vectorizer-worker-listen' and query ilike 'listen%'"
    ).fetchone()
    return bool(row and row[0])


def _process_row(conn: psycopg.Connection) -> tuple[int, int, int]:
    """(heartbeat_count, success_count, error_count) of the only worker process."""
    row = conn.execute(
        "select heartbeat_count, success_count, error_count from ai.vectorizer_worker_process"
    ).fetchone()
    assert row is not None
    return row


def _no_duplicates(conn: psycopg.Connection, table: str = "docs_embedding_store") -> None:
    row = conn.execute(f"select count(*), count(distinct (id, chunk_seq)) from {table}").fetchone()
    assert row is not None and row[0] == row[1]


# --- scaling out -------------------------------------------------------------------------------


def test_two_workers_share_one_queue_and_embed_every_row_once(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    rows = 3000
    fake.configure(latency=0.02, log_inputs=True)
    create_source(conn, rows=doc_rows(rows))
    vid = create_vectorizer(conn)
    # Keys up to `duplicated` are queued three times in a row, so batches that split a key's
    # copies race for it: the per-key lock must keep two workers off one key at once.
    duplicated = 1500
    conn.execute(f"delete from ai._vectorizer_q_{vid}")
    conn.execute(
        f"insert into ai._vectorizer_q_{vid} (id)"
        " select id from docs, generate_series(1, case when id <= %s then 3 else 1 end)"
        " order by id",
        (duplicated,),
    )
    env = worker_env(fake)
    command = worker_command(db_url, "--once", "--concurrency", "2")

    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        outputs = [worker.communicate(timeout=120)[1].decode() for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()

    for worker, stderr in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    assert count(conn, "docs_embedding_store") == rows
    _no_duplicates(conn)
    assert _stored_ids(conn) == set(range(1, rows + 1))
    assert queue_count(conn, vid) == 0
    # no key was charged: two workers never wrote one key at the same time
    assert error_rows(conn, vid) == []
    assert count(conn, f"ai._vectorizer_q_failed_{vid}") == 0
    # a key queued once was embedded once, not once per worker
    sent = Counter(inputs_sent(fake))
    assert set(sent) == {f"body of document {i}" for i in range(1, rows + 1)}
    assert all(sent[f"body of document {i}"] == 1 for i in range(duplicated + 1, rows + 1))
    # both workers took part
    successes = [
        row[0] for row in conn.execute("select success_count from ai.vectorizer_worker_process")
    ]
    assert len(successes) == 2
    # a key whose copies two batches split is processed twice; the second time its text is
    # already stored (chunk reuse), so it counts as a success without sending anything
    [unchanged] = conn.execute(
        "select rows_unchanged from ai.vectorizer_status where id = %s", (vid,)
    ).fetchone()
    assert sum(successes) == sum(sent.values()) + unchanged
    assert min(successes) > 0
    assert fake.max_in_flight >= 2


# --- crashes and signals -------------------------------------------------------------------


def _start_slow_backfill(
    conn: psycopg.Connection, fake: FakeOpenAI, rows: int, latency: float
) -> int:
    fake.configure(latency=latency)
    create_source(conn, rows=doc_rows(rows))
    return create_vectorizer(conn, processing="ai.processing_default(batch_size => 5)")


def _wait_mid_batch(conn: psycopg.Connection, handle: Daemon, vectorizer_id: int) -> None:
    """Until a batch has committed and the next one is open (its HTTP request in flight)."""

    def ready() -> bool:
        assert handle.alive(), handle.stderr()
        return bool(_stored_ids(conn)) and _batch_open(conn, vectorizer_id)

    wait_for(ready, 30, what="a committed batch and another in flight")


def test_kill_9_mid_batch_loses_nothing_and_a_rerun_completes(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    rows = 60
    vid = _start_slow_backfill(conn, fake, rows, latency=0.4)
    everything = set(range(1, rows + 1))

    with daemon(db_url, "--concurrency", "2", env=worker_env(fake)) as handle:
        _wait_mid_batch(conn, handle, vid)
        handle.process.send_signal(signal.SIGKILL)
        assert handle.wait(10) == -signal.SIGKILL

    # the server rolls the open batches back as soon as it sees the connections drop
    wait_for(lambda: _worker_backends(conn) == 0, 10, what="the killed worker's sessions")
    stored, queued = _stored_ids(conn), _queued_ids(conn, vid)
    assert stored and queued
    assert stored | queued == everything
    assert not stored & queued
    assert count(conn, "pg_locks", "locktype = 'advisory'") == 0

    fake.configure(latency=0.0)
    run_ok(db_url, env=worker_env(fake))
    assert _stored_ids(conn) == everything
    assert count(conn, "docs_embedding_store") == rows
    _no_duplicates(conn)
    assert queue_count(conn, vid) == 0
    for key, _, chunk, embedding in store_rows(conn):
        assert chunk == f"body of document {key}"
        assert_vector(embedding, chunk)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_the_batch_in_hand_and_exits_0(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, signum: signal.Signals
) -> None:
    rows = 60
    vid = _start_slow_backfill(conn, fake, rows, latency=0.3)

    # two batches in flight: adaptive concurrency could otherwise claim all twelve before
    # the signal lands, leaving nothing for the assertion that claiming stopped
    args = ("--poll-interval", "1m", "--concurrency", "2")
    with daemon(db_url, *args, env=worker_env(fake)) as handle:
        _wait_mid_batch(conn, handle, vid)
        started = time.monotonic()
        handle.signal(signum)
        code = handle.wait(10)
        elapsed = time.monotonic() - started
        stderr = handle.stderr()

    assert code == 0, stderr
    assert elapsed < 5
    assert "Traceback" not in stderr
    assert "shutdown requested" in stderr
    stored, queued = _stored_ids(conn), _queued_ids(conn, vid)
    assert stored | queued == set(range(1, rows + 1))
    assert not stored & queued
    assert queued  # it stopped claiming rather than finishing the backfill
    assert len(stored) % 5 == 0  # whole batches only
    assert _worker_backends(conn) == 0
    # the final heartbeat (the periodic one is a minute away) carried every success
    heartbeats, successes, errors = _process_row(conn)
    assert heartbeats >= 1
    assert successes == len(stored)
    assert errors == 0


# --- waking up -------------------------------------------------------------------------------


def test_notify_wakes_the_daemon_within_a_second(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn)
    with daemon(db_url, "--poll-interval", "1m", env=worker_env(fake)) as handle:
        wait_for_stderr(handle, "no vectorizers found", 30)
        wait_for(lambda: _listening(conn), 10, what="the LISTEN connection")

        # a vectorizer created while the daemon runs is discovered through its NOTIFY
        insert_rows(conn, "docs", doc_rows(2))
        create_vectorizer(conn)
        wait_for(lambda: _stored_ids(conn) == {1, 2}, 15, what="the new vectorizer's backfill")

        latencies = []
        for key in (3, 4, 5):
            started = time.monotonic()
            insert_rows(conn, "docs", [(key, "t", f"fresh row {key}")])
            wait_for(lambda k=key: k in _stored_ids(conn), 5, interval=0.01, what=f"row {key}")
            latencies.append(time.monotonic() - started)
        assert handle.alive(), handle.stderr()

    assert max(latencies) < 1.5, latencies
    assert [chunk for key, _, chunk, _ in store_rows(conn) if key >= 3] == [
        f"fresh row {key}" for key in (3, 4, 5)
    ]


def _executor_pids(conn: psycopg.Connection, vectorizer_id: int) -> set[int]:
    rows = conn.execute(
        "select pid from pg_stat_activity where datname = current_database()"
        " and application_name like %s",
        (f"vectorizer-worker[{vectorizer_id}]: executor%",),
    ).fetchall()
    return {pid for (pid,) in rows}


def test_wake_ups_reuse_the_runners_connections(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(2))
    vid = create_vectorizer(conn)
    with daemon(db_url, "--poll-interval", "1m", env=worker_env(fake)) as handle:
        wait_for(lambda: _stored_ids(conn) == {1, 2}, 15, what="the backfill")
        wait_for(lambda: _executor_pids(conn, vid), 5, what="the idle executor connection")
        first = _executor_pids(conn, vid)

        # every commit wakes the runner; each drain takes the same idle connection again
        for key in range(3, 9):
            insert_rows(conn, "docs", [(key, "t", f"row {key}")])
            wait_for(lambda k=key: k in _stored_ids(conn), 5, interval=0.01, what=f"row {key}")
        assert handle.alive(), handle.stderr()
        assert _executor_pids(conn, vid) == first

    assert len(first) == 1  # concurrency 1: one connection serves the config read and batches


def test_fractional_poll_interval_drives_heartbeats_and_polling(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn)
    with daemon(db_url, "--poll-interval", "500ms", env=worker_env(fake)) as handle:
        wait_for(lambda: _stored_ids(conn) == {1, 2, 3}, 20, what="the backfill")
        # heartbeats every half second
        wait_for(lambda: _process_row(conn)[0] >= 3, 5, interval=0.1, what="3 heartbeats")
        assert _process_row(conn)[1] == 3

        # a key queued without a NOTIFY (triggers off) is found by the next poll
        conn.execute("set session_replication_role = replica")
        insert_rows(conn, "docs", [(4, "t", "queued quietly")])
        conn.execute(f"insert into ai._vectorizer_q_{vid} (id) values (4)")
        conn.execute("set session_replication_role = origin")
        started = time.monotonic()
        wait_for(lambda: 4 in _stored_ids(conn), 5, interval=0.02, what="the polled row")
        assert time.monotonic() - started < 2.0
        assert handle.alive(), handle.stderr()
        code, _ = terminate(handle)
    assert code == 0
    assert _process_row(conn)[1] == 4


def test_daemon_keeps_other_vectorizers_going_when_one_fails(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, "bad_docs", doc_rows(3))
    create_source(conn, "good_docs", doc_rows(3))
    bad = create_vectorizer(conn, "bad_docs", api_key_name="MISSING_KEY_VAR")
    good = create_vectorizer(conn, "good_docs")

    with daemon(db_url, "--poll-interval", "200ms", env=worker_env(fake)) as handle:
        wait_for(
            lambda: _stored_ids(conn, "good_docs_embedding_store") == {1, 2, 3},
            20,
            what="the good vectorizer's backfill",
        )
        wait_for(lambda: error_rows(conn, bad), 10, what="the bad vectorizer's error row")
        insert_rows(conn, "good_docs", [(4, "t", "later")])
        insert_rows(conn, "bad_docs", [(4, "t", "later")])
        wait_for(lambda: 4 in _stored_ids(conn, "good_docs_embedding_store"), 5, what="a later row")
        time.sleep(1.0)  # several poll intervals: the open breaker must not retry each time
        assert handle.alive(), handle.stderr()
        code, _ = terminate(handle)
        stderr = handle.stderr()

    assert code == 0, stderr
    [(_, message, details)] = error_rows(conn, bad)
    assert message == "embedding provider failed"
    assert "MISSING_KEY_VAR" in details["error_reason"]
    assert _queued_ids(conn, bad) == {1, 2, 3, 4}
    assert count(conn, f"ai._vectorizer_q_failed_{bad}") == 0
    assert error_rows(conn, good) == []
    assert queue_count(conn, good) == 0
    assert inputs_sent(fake).count("later") == 1


@pytest.mark.parametrize("once", [False, True], ids=["daemon", "once"])
def test_sigterm_while_throttled_rolls_the_batch_back_promptly(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, once: bool
) -> None:
    # The provider keeps answering 429 "retry in 3 s": the batch in hand cannot finish, so the
    # worker must give up on it (rolling back, nothing charged) well before `docker stop` kills.
    create_source(conn, rows=doc_rows(10))
    vid = create_vectorizer(conn)
    fake.fail_next(429, count=1000, retry_after="3")

    with daemon(db_url, "--poll-interval", "1m", env=worker_env(fake), once=once) as handle:
        wait_for(lambda: fake.requests, 20, what="the first throttled request")
        code, elapsed = terminate(handle, timeout=40)
        stderr = handle.stderr()

    assert code == 0, stderr
    assert elapsed < 8, f"took {elapsed:.1f}s to exit"
    assert "Traceback" not in stderr
    assert [
        row[:2]
        for row in conn.execute(
            f"select id, loading_retries from ai._vectorizer_q_{vid} order by id"
        ).fetchall()
    ] == [(i, 0) for i in range(1, 11)]
    assert error_rows(conn, vid) == []
    assert count(conn, "docs_embedding_store") == 0
    assert _worker_backends(conn) == 0
    heartbeats, successes, errors = _process_row(conn)
    assert (heartbeats >= 1, successes, errors) == (True, 0, 0)


def test_rows_committed_while_listen_was_down_are_caught_up(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(1))
    create_vectorizer(conn)
    with daemon(db_url, "--poll-interval", "1m", env=worker_env(fake)) as handle:
        wait_for(lambda: _stored_ids(conn) == {1}, 20, what="the backfill")
        wait_for(lambda: _listening(conn), 10, what="the LISTEN connection")
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and application_name = 'vectorizer-worker-listen'"
        )
        # committed while nobody listens: its NOTIFY is lost, the poll is a minute away
        insert_rows(conn, "docs", [(2, "t", "in the gap")])
        started = time.monotonic()
        wait_for(lambda: 2 in _stored_ids(conn), 10, what="the row committed in the gap")
        caught_up = time.monotonic() - started
        wait_for(lambda: _listening(conn), 10, what="the LISTEN connection again")
        insert_rows(conn, "docs", [(3, "t", "after the reconnect")])
        started = time.monotonic()
        wait_for(lambda: 3 in _stored_ids(conn), 5, interval=0.01, what="the next row")
        woken = time.monotonic() - started
        assert handle.alive(), handle.stderr()
        assert "LISTEN connection lost" in handle.stderr()

    assert caught_up < 5
    assert woken < 1.5


def test_daemon_with_exit_on_error_exits_1_on_a_vectorizer_error(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(2))
    vid = create_vectorizer(conn, api_key_name="MISSING_KEY_VAR")
    with daemon(
        db_url, "--poll-interval", "1m", "--exit-on-error=true", env=worker_env(fake)
    ) as handle:
        code = handle.wait(20)
        stderr = handle.stderr()
    assert code == 1, stderr
    assert "MISSING_KEY_VAR" in stderr
    assert len(error_rows(conn, vid)) == 1
    assert queue_count(conn, vid) == 2


def test_a_vectorizer_error_stops_all_of_its_executors_while_it_backs_off(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    # One executor of four hits a 401: the vectorizer backs off as a whole, none of its other
    # executors goes on claiming batches behind the breaker's back.
    fake.configure(latency=0.2)
    create_source(conn, rows=doc_rows(200))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 5)")
    fake.fail_next(401, count=1)

    with daemon(
        db_url, "--poll-interval", "200ms", "--concurrency", "4", env=worker_env(fake)
    ) as handle:
        wait_for(lambda: error_rows(conn, vid), 20, what="the error row")
        time.sleep(0.5)  # batches in hand when the error came are rolled back or done by now
        backed_off_at = queue_count(conn, vid)
        time.sleep(1.5)
        assert queue_count(conn, vid) == backed_off_at > 0
        assert handle.alive(), handle.stderr()
        code, _ = terminate(handle)
    assert code == 0
    assert len(error_rows(conn, vid)) == 1
    stored, queued = _stored_ids(conn), _queued_ids(conn, vid)
    assert stored | queued == set(range(1, 201))


def test_dropping_a_selected_vectorizer_leaves_the_others_running(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, "first_docs", doc_rows(2))
    create_source(conn, "second_docs", doc_rows(2))
    first = create_vectorizer(conn, "first_docs", name="first")
    second = create_vectorizer(conn, "second_docs", name="second")
    with daemon(
        db_url, "--poll-interval", "200ms", "-i", "first", "-i", str(second), env=worker_env(fake)
    ) as handle:
        wait_for(
            lambda: queue_count(conn, first) + queue_count(conn, second) == 0,
            20,
            what="both backfills",
        )
        conn.execute("select ai.drop_vectorizer(%s, drop_all => true)", (first,))
        time.sleep(0.6)  # a few polls: the worker notices the vectorizer is gone
        insert_rows(conn, "second_docs", [(3, "t", "after the drop")])
        wait_for(
            lambda: 3 in _stored_ids(conn, "second_docs_embedding_store"),
            5,
            what="the remaining vectorizer's new row",
        )
        assert handle.alive(), handle.stderr()
        code, _ = terminate(handle)
        stderr = handle.stderr()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "invalid vectorizers" in stderr


def test_tracking_survives_a_dropped_tracking_connection(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn)
    with daemon(db_url, "--poll-interval", "1m", env=worker_env(fake)) as handle:
        wait_for(lambda: _stored_ids(conn) == {1, 2, 3}, 20, what="the backfill")
        wait_for(lambda: _progress_successes(conn, vid) == 3, 5, what="the progress row")
        # e.g. a database restart or an idle-session timeout took the tracking session
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database()"
            " and application_name like 'vectorizer-worker-tracking%'"
        )
        insert_rows(conn, "docs", [(4, "t", "after the blip")])
        wait_for(lambda: 4 in _stored_ids(conn), 5, what="the next row")
        wait_for(lambda: _progress_successes(conn, vid) == 4, 5, what="its progress")
        code, _ = terminate(handle)
    assert code == 0
    assert _process_row(conn)[1] == 4


def _progress_successes(conn: psycopg.Connection, vectorizer_id: int) -> int | None:
    row = conn.execute(
        "select success_count from ai.vectorizer_worker_progress where vectorizer_id = %s",
        (vectorizer_id,),
    ).fetchone()
    return row[0] if row else None


def test_disable_enable_and_drop_while_the_daemon_runs(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(2))
    vid = create_vectorizer(conn)
    with daemon(db_url, "--poll-interval", "1m", env=worker_env(fake)) as handle:
        wait_for(lambda: _stored_ids(conn) == {1, 2}, 20, what="the backfill")
        # the drain is over (its last, empty claim done): a row queued now waits for a wake-up
        wait_for_stderr(handle, "finished processing vectorizer", 20)
        conn.execute("select ai.disable_vectorizer_schedule(%s)", (vid,))
        insert_rows(conn, "docs", [(3, "t", "while disabled")])
        time.sleep(1.0)
        assert _stored_ids(conn) == {1, 2}
        assert _queued_ids(conn, vid) == {3}

        started = time.monotonic()
        conn.execute("select ai.enable_vectorizer_schedule(%s)", (vid,))  # NOTIFYs
        wait_for(lambda: 3 in _stored_ids(conn), 5, interval=0.02, what="the queued row")
        assert time.monotonic() - started < 1.5

        conn.execute("select ai.drop_vectorizer(%s, drop_all => true)", (vid,))
        insert_rows(conn, "docs", [(4, "t", "after the drop")])
        time.sleep(0.5)
        assert handle.alive(), handle.stderr()
        code, _ = terminate(handle)
        stderr = handle.stderr()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_a_disable_during_a_drain_stops_it_after_the_batches_in_flight(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(200))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 5)")
    fake.configure(latency=0.1)
    with daemon(db_url, "--poll-interval", "1m", "-c", "2", env=worker_env(fake)) as handle:
        wait_for(lambda: len(_stored_ids(conn)) >= 10, 20, what="the drain under way")
        conn.execute("select ai.disable_vectorizer_schedule(%s)", (vid,))
        # each executor finishes the batch it holds (5 rows, ~0.1 s), then sees the flag
        time.sleep(1.0)
        stopped_at = len(_stored_ids(conn))
        time.sleep(1.0)
        assert len(_stored_ids(conn)) == stopped_at
        assert stopped_at < 200 and len(_queued_ids(conn, vid)) == 200 - stopped_at

        conn.execute("select ai.enable_vectorizer_schedule(%s)", (vid,))  # NOTIFYs
        wait_for(lambda: len(_stored_ids(conn)) == 200, 60, what="the rest after enabling")
        code, _ = terminate(handle)
    assert code == 0
