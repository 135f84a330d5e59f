"""Operability in SQL and in the terminal: `ai.vectorizer_status`'s own columns on real data,
`ai._vectorizer_count_rows`' bound, `ai.retry_failed`, and the `vectorizer status` and
`vectorizer retry-failed` commands run as subprocesses against a real Postgres."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    REPO_ROOT,
    count,
    create_source,
    create_vectorizer,
    doc_rows,
    failed_rows,
    queue_count,
    queue_rows,
    run_ok,
    worker_env,
)

MAX_BIGINT = 2**63 - 1
CLI_TIMEOUT = 30.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def status_row(conn: psycopg.Connection, vectorizer_id: int) -> dict[str, Any]:
    cursor = conn.execute("select * from ai.vectorizer_status where id = %s", (vectorizer_id,))
    names = [column.name for column in cursor.description or []]
    row = cursor.fetchone()
    assert row is not None, f"vectorizer {vectorizer_id} is not in ai.vectorizer_status"
    return dict(zip(names, row, strict=True))


def one(conn: psycopg.Connection, query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def cli(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vectorizer", *args],
        env=worker_env(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def add_failed(conn: psycopg.Connection, vectorizer_id: int, keys: list[int]) -> None:
    conn.execute(
        f"insert into ai._vectorizer_q_failed_{vectorizer_id} (id, failure_step)"
        " select k, 'embedding' from unnest(%s::int[]) k",
        (keys,),
    )


# --- ai.vectorizer_status --------------------------------------------------------------------


def test_status_columns_follow_a_table_destination_through_a_failing_run(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    long_body = "alpha beta gamma delta. epsilon zeta eta theta. iota kappa lambda mu."
    create_source(
        conn,
        rows=[(1, "a", long_body), (2, "b", "short one"), (3, "c", "a POISON row"), (4, "d", "x")],
    )
    vid = create_vectorizer(
        conn,
        name="docs_status",
        loading="ai.loading_column('body', retries => 0)",
        chunking="ai.chunking_recursive_character_text_splitter(chunk_size => 25,"
        " chunk_overlap => 0)",
    )
    conn.execute(f"update ai._vectorizer_q_{vid} set queued_at = now() - interval '2 hours'")

    before = status_row(conn, vid)
    assert before["name"] == "docs_status"
    assert before["pending_items"] == 4  # pgai's column, unchanged
    assert before["pending_items_estimate"] == 4
    assert before["failed_items"] == 0
    assert timedelta(hours=2) <= before["oldest_pending_age"] < timedelta(hours=2, minutes=1)
    assert (before["source_rows"], before["embedded_rows"]) == (4, 0)
    assert before["errors_last_hour"] == 0
    assert before["last_error_at"] is None and before["last_error_message"] is None
    assert before["last_success_at"] is None

    # an error from long ago counts as the latest error but not in the last hour
    conn.execute(
        "insert into ai._vectorizer_errors (id, message, details, recorded)"
        " values (%s, 'old trouble', '{\"error_reason\": \"ancient\"}', now() - interval '3h')",
        (vid,),
    )
    stale = status_row(conn, vid)
    assert stale["errors_last_hour"] == 0
    assert stale["last_error_message"] == "old trouble: ancient"

    run_ok(db_url, env=worker_env(fake))

    # the long row was stored as several chunks, yet counts as one embedded row
    assert count(conn, "docs_embedding_store", "id = 1") >= 3
    after = status_row(conn, vid)
    assert after["pending_items"] == 0
    assert after["pending_items_estimate"] == 0
    assert after["failed_items"] == 1
    assert after["oldest_pending_age"] is None
    assert (after["source_rows"], after["embedded_rows"]) == (4, 3)
    assert after["errors_last_hour"] == 1
    assert after["last_error_message"].startswith("embedding provider failed: ")
    assert "flagged as invalid" in after["last_error_message"]
    assert after["last_error_at"] > stale["last_error_at"]
    assert after["last_success_at"] is not None

    # a new row waits; an edited row's old chunks still count as embedded
    conn.execute("insert into docs values (5, 'e', 'fresh')")
    conn.execute("update docs set body = 'edited' where id = 2")
    later = status_row(conn, vid)
    assert later["pending_items_estimate"] == 2
    assert timedelta(0) <= later["oldest_pending_age"] < timedelta(minutes=1)
    assert (later["source_rows"], later["embedded_rows"]) == (5, 3)


def test_status_columns_for_a_column_destination(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(5))
    conn.execute("alter table docs add column embedding vector(8)")
    vid = create_vectorizer(conn, destination="ai.destination_column('embedding')")
    first = status_row(conn, vid)
    assert first["embedding_column"] == "embedding"
    assert first["target_table"] is None
    assert (first["pending_items_estimate"], first["failed_items"]) == (5, 0)
    assert (first["source_rows"], first["embedded_rows"]) == (5, 0)

    run_ok(db_url, env=worker_env(fake))

    done = status_row(conn, vid)
    assert (done["pending_items_estimate"], done["failed_items"]) == (0, 0)
    assert (done["source_rows"], done["embedded_rows"]) == (5, 5)
    assert done["oldest_pending_age"] is None
    assert done["errors_last_hour"] == 0
    assert done["last_success_at"] is not None

    # a row whose embedding is cleared is no longer covered
    conn.execute("update docs set embedding = null where id in (1, 2)")
    assert status_row(conn, vid)["embedded_rows"] == 3


def test_count_rows_is_exact_up_to_the_bound_then_estimated_never_the_sentinel(
    conn: psycopg.Connection,
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn)
    queue = f"_vectorizer_q_{vid}"
    count_rows = "select ai._vectorizer_count_rows('ai', %s, 5)"
    assert one(conn, count_rows, (queue,)) == 3

    conn.execute(f"insert into ai.{queue} (id) select generate_series(4, 12)")
    never_analyzed = one(conn, count_rows, (queue,))
    assert 5 < never_analyzed < MAX_BIGINT  # over the bound, without statistics: bound + 1
    assert never_analyzed == 6
    conn.execute(f"analyze ai.{queue}")
    assert one(conn, count_rows, (queue,)) == 12  # over the bound: the planner's estimate
    # a filter is applied before counting
    assert one(conn, "select ai._vectorizer_count_rows('ai', %s, 5, 'id <= 4')", (queue,)) == 4
    assert one(conn, "select ai._vectorizer_count_rows('ai', 'no_such_table', 5)") is None


def test_status_estimate_over_the_default_bound_is_not_the_sentinel(
    conn: psycopg.Connection,
) -> None:
    create_source(conn)
    vid = create_vectorizer(conn)
    conn.execute(f"insert into ai._vectorizer_q_{vid} (id) select generate_series(1, 100500)")
    conn.execute(f"analyze ai._vectorizer_q_{vid}")
    row = status_row(conn, vid)
    assert row["pending_items"] == MAX_BIGINT  # pgai's column keeps pgai's sentinel
    assert 100000 < row["pending_items_estimate"] < 200000


def test_status_for_a_viewer_who_may_not_read_the_tables(conn: psycopg.Connection) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn, name="private_vec")
    viewer = f"vz_status_{uuid.uuid4().hex[:10]}"
    conn.execute(sql.SQL("create role {}").format(sql.Identifier(viewer)))
    try:
        conn.execute("select ai.grant_vectorizer_usage(%s)", (viewer,))
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(viewer)))
        try:
            row = status_row(conn, vid)
        finally:
            conn.execute("reset role")
        # what the viewer may not read is unknown to them, not an error for the whole view
        assert row["name"] == "private_vec"
        unknown = ("pending_items", "pending_items_estimate", "failed_items", "oldest_pending_age")
        for column in (*unknown, "source_rows", "embedded_rows"):
            assert row[column] is None, column
        assert row["errors_last_hour"] == 0

        conn.execute(sql.SQL("grant select on docs to {}").format(sql.Identifier(viewer)))
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(viewer)))
        try:
            row = status_row(conn, vid)
        finally:
            conn.execute("reset role")
        assert row["source_rows"] == 3
        assert row["embedded_rows"] is None  # the store is still not readable
        assert row["pending_items_estimate"] is None
    finally:
        conn.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(viewer)))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(viewer)))


# --- ai.retry_failed -------------------------------------------------------------------------


def test_retry_failed_by_id_and_name_moves_keys_back(conn: psycopg.Connection, db_url: str) -> None:
    create_source(conn, "first", doc_rows(4))
    create_source(conn, "second", doc_rows(3))
    first = create_vectorizer(conn, "first", name="first_vec")
    second = create_vectorizer(conn, "second", name="second_vec")
    for vid in (first, second):
        conn.execute(f"delete from ai._vectorizer_q_{vid}")
    add_failed(conn, first, [1, 2, 3])
    add_failed(conn, second, [2, 3])
    conn.execute(f"insert into ai._vectorizer_q_{first} (id, loading_retries) values (4, 2)")

    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ai_vectorizer_queue")
        assert one(conn, "select ai.retry_failed(%s)", (first,)) == 3
        payloads = [notify.payload for notify in listener.notifies(timeout=2, stop_after=1)]
    assert payloads == [str(first)]  # a daemon worker wakes up for the requeued keys
    assert failed_rows(conn, first) == []
    assert [row[:2] for row in queue_rows(conn, first)] == [(1, 0), (2, 0), (3, 0), (4, 2)]
    assert failed_rows(conn, second) == [(2, "embedding"), (3, "embedding")]  # untouched

    assert one(conn, "select ai.retry_failed('second_vec')") == 2
    assert failed_rows(conn, second) == []
    assert [row[:2] for row in queue_rows(conn, second)] == [(2, 0), (3, 0)]
    # nothing left to move
    assert one(conn, "select ai.retry_failed('second_vec')") == 0
    assert queue_count(conn, second) == 2

    assert one(conn, "select ai.retry_failed('no_such_vectorizer')") is None
    with pytest.raises(errors.NoDataFound):
        conn.execute("select ai.retry_failed(999)")


# --- the CLI ---------------------------------------------------------------------------------


def _insert_worker(conn: psycopg.Connection, heartbeat_ago: str, successes: int) -> str:
    row = conn.execute(
        "insert into ai.vectorizer_worker_process"
        " (version, expected_heartbeat_interval, last_heartbeat, success_count, error_count)"
        " values ('9.9.9', interval '5 seconds', now() - %s::interval, %s, 7) returning id",
        (heartbeat_ago, successes),
    ).fetchone()
    assert row is not None
    return str(row[0]).split("-")[0]


def _row(text: str, first: str) -> list[str]:
    """The words of the one table row whose first word is `first`."""
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, f"expected one row starting with {first!r} in:\n{text}"
    return rows[0]


def test_status_command_shows_backlog_failures_coverage_and_workers(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[*doc_rows(3), (4, "p", "a POISON row")])
    vid = create_vectorizer(
        conn, name="cli_status_vec", loading="ai.loading_column('body', retries => 0)"
    )
    run_ok(db_url, env=worker_env(fake))
    conn.execute("insert into docs select i, 't', 'b' from generate_series(5, 9) i")
    conn.execute(f"update ai._vectorizer_q_{vid} set queued_at = now() - interval '10 minutes'")
    # the worker of that run is alive; one that stopped beating long ago is stale
    conn.execute("delete from ai.vectorizer_worker_process")
    alive = _insert_worker(conn, "1 second", 41)
    stale = _insert_worker(conn, "2 hours", 13)

    result = cli("status", "--db-url", db_url)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    # id, name, pending, oldest pending, failed, embedded/source rows, empty rows, errors in
    # the last hour, last success, index
    words = _row(out, str(vid))
    assert words[:9] == [str(vid), "cli_status_vec", "5", "10m", "1", "3/9", "(33.3%)", "0", "1"]
    assert words[10:] == ["ago", "none", "-"]  # executors: no live worker reported any
    [error_line] = [line for line in out.splitlines() if line.startswith("  ! cli_status_vec: ")]
    assert "embedding provider failed" in error_line and "flagged as invalid" in error_line
    assert CLEAR_SCREEN not in out  # drawn once, not as a screen
    assert _row(out, alive)[1:] == ["9.9.9", "alive", "1s", "ago", "41", "7"]
    assert _row(out, stale)[1:] == ["9.9.9", "stale", "2h", "ago", "13", "7"]
    assert all(line == line.rstrip() for line in out.splitlines())  # no padding at line ends


def test_status_command_on_an_empty_database_and_an_unreachable_one(db_url: str) -> None:
    result = cli("status", "--db-url", db_url)
    assert result.returncode == 0, result.stderr
    assert "(no vectorizers)" in result.stdout
    assert "(no worker has reported)" in result.stdout

    result = cli("status", "--db-url", "postgresql://someone:hunter2pw@127.0.0.1:1/nowhere")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "hunter2pw" not in result.stderr
    assert "Traceback" not in result.stderr


def test_retry_failed_command_by_name_and_id_and_unknown(
    conn: psycopg.Connection, db_url: str
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn, name="retry_cli_vec")
    conn.execute(f"delete from ai._vectorizer_q_{vid}")
    add_failed(conn, vid, [1, 2])

    by_name = cli("retry-failed", "--db-url", db_url, "retry_cli_vec")
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.strip() == "requeued 2 failed key(s) of vectorizer retry_cli_vec"
    assert failed_rows(conn, vid) == []
    assert [row[:2] for row in queue_rows(conn, vid)] == [(1, 0), (2, 0)]

    add_failed(conn, vid, [3])
    by_id = cli("retry-failed", "--db-url", db_url, str(vid))
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout.strip() == f"requeued 1 failed key(s) of vectorizer {vid}"
    assert [row[:2] for row in queue_rows(conn, vid)] == [(1, 0), (2, 0), (3, 0)]

    unknown_name = cli("retry-failed", "--db-url", db_url, "no_such_vec")
    assert unknown_name.returncode == 1
    assert "no vectorizer named 'no_such_vec'" in unknown_name.stderr
    assert unknown_name.stdout == ""
    unknown_id = cli("retry-failed", "--db-url", db_url, "999")
    assert unknown_id.returncode == 1
    assert "no vectorizer with id 999" in unknown_id.stderr
    for result in (unknown_name, unknown_id):
        assert "Traceback" not in result.stderr
    assert queue_count(conn, vid) == 3  # nothing else moved


@contextlib.contextmanager
def watching(conn: psycopg.Connection, db_url: str) -> Iterator[subprocess.Popen[str]]:
    """`vectorizer status --watch 0.2` over one vectorizer, killed at the end if still running."""
    create_source(conn, rows=doc_rows(2))
    create_vectorizer(conn, name="watched_vec")
    process = subprocess.Popen(
        [sys.executable, "-m", "vectorizer", "status", "--db-url", db_url, "--watch", "0.2"],
        env=worker_env(),
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_status_watch_finishes_the_screen_it_is_reading_when_interrupted(
    conn: psycopg.Connection, db_url: str
) -> None:
    with watching(conn, db_url) as process:
        time.sleep(1.5)  # a few screens drawn
        with conn.transaction():
            # the next screen's queries wait behind this lock: Ctrl-C lands mid-query
            conn.execute("lock table ai.vectorizer in access exclusive mode")
            time.sleep(0.5)
            process.send_signal(signal.SIGINT)
            time.sleep(1.0)
            assert process.poll() is None  # not cancelled: still reading that screen
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.split(CLEAR_SCREEN)[-1].startswith("Vectorizers\n")
    assert "watched_vec" in out.split(CLEAR_SCREEN)[-1]  # the last screen was drawn whole
    assert "Traceback" not in err


def test_status_watch_redraws_until_interrupted(conn: psycopg.Connection, db_url: str) -> None:
    with watching(conn, db_url) as process:
        time.sleep(1.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)  # a loaded CI machine is slow to start
    assert process.returncode == 0, err
    screens = out.split(CLEAR_SCREEN)
    assert screens[0] == ""  # every screen starts by clearing the terminal
    assert len(screens) - 1 >= 2  # drawn again after --watch 0.2, not once
    for screen in screens[1:]:
        assert screen.startswith("Vectorizers\n")
        assert "watched_vec" in screen
    assert "Traceback" not in err
