"""The worker-tracking functions: ai._worker_start, ai._worker_heartbeat, ai._worker_progress."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors

from vectorizer import tracking as tracking_module
from vectorizer.tracking import WorkerTracking


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def process(conn: psycopg.Connection, worker_id: uuid.UUID) -> dict[str, Any]:
    return one(
        conn,
        "select to_jsonb(p) - 'id' from ai.vectorizer_worker_process p where p.id = %s",
        (worker_id,),
    )


def process_times(conn: psycopg.Connection, worker_id: uuid.UUID) -> tuple[Any, ...]:
    row = conn.execute(
        "select started, last_heartbeat, last_error_at from ai.vectorizer_worker_process"
        " where id = %s",
        (worker_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def progress(conn: psycopg.Connection, vectorizer_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        "select to_jsonb(p) from ai.vectorizer_worker_progress p where p.vectorizer_id = %s",
        (vectorizer_id,),
    ).fetchone()
    return row[0] if row else None


def start(
    conn: psycopg.Connection, version: str = "0.1.0", interval: str = "1 minute"
) -> uuid.UUID:
    worker_id = one(conn, "select ai._worker_start(%s, %s::interval)", (version, interval))
    assert isinstance(worker_id, uuid.UUID)
    return worker_id


def heartbeat(
    conn: psycopg.Connection,
    worker_id: uuid.UUID,
    successes: int,
    failures: int,
    message: str | None,
) -> None:
    conn.execute(
        "select ai._worker_heartbeat(%s, %s, %s, %s)", (worker_id, successes, failures, message)
    )


def report(
    conn: psycopg.Connection,
    worker_id: uuid.UUID,
    vectorizer_id: int,
    successes: int,
    message: str | None,
) -> None:
    conn.execute(
        "select ai._worker_progress(%s, %s, %s, %s)", (worker_id, vectorizer_id, successes, message)
    )


@pytest.fixture
def vectorizer_id(conn: psycopg.Connection) -> int:
    conn.execute("create table public.blog (id int primary key, body text)")
    return one(
        conn,
        "select ai.create_vectorizer('public.blog'::regclass, loading => ai.loading_column('body')"
        ", embedding => ai.embedding_openai('m', 3))",
    )


# --- _worker_start ---------------------------------------------------------------------------


def test_worker_start_inserts_a_process_row(conn: psycopg.Connection) -> None:
    before = one(conn, "select clock_timestamp()")
    worker_id = start(conn, "1.2.3", "90 seconds")
    after = one(conn, "select clock_timestamp()")
    state = process(conn, worker_id)
    assert {k: v for k, v in state.items() if k not in ("started", "last_heartbeat")} == {
        "version": "1.2.3",
        "expected_heartbeat_interval": "00:01:30",
        "heartbeat_count": 0,
        "error_count": 0,
        "success_count": 0,
        "last_error_at": None,
        "last_error_message": None,
        "stopped_at": None,  # ours, after pgai's columns
    }
    started, last_heartbeat, last_error_at = process_times(conn, worker_id)
    assert before <= started <= after
    assert before <= last_heartbeat <= after
    assert last_error_at is None


def test_each_start_is_a_new_process(conn: psycopg.Connection) -> None:
    first, second = start(conn), start(conn)
    assert first != second
    assert one(conn, "select count(*) from ai.vectorizer_worker_process") == 2


# --- _worker_heartbeat -----------------------------------------------------------------------


def test_heartbeat_adds_counts(conn: psycopg.Connection) -> None:
    worker_id = start(conn)
    heartbeat(conn, worker_id, 5, 0, None)
    heartbeat(conn, worker_id, 3, 2, None)
    state = process(conn, worker_id)
    assert (state["heartbeat_count"], state["success_count"], state["error_count"]) == (2, 8, 2)
    # no message given: the error columns stay empty even though errors were counted
    assert state["last_error_message"] is None
    assert state["last_error_at"] is None


def test_heartbeat_moves_last_heartbeat(conn: psycopg.Connection) -> None:
    worker_id = start(conn)
    _, first, _ = process_times(conn, worker_id)
    heartbeat(conn, worker_id, 0, 0, None)
    _, second, _ = process_times(conn, worker_id)
    heartbeat(conn, worker_id, 0, 0, None)
    _, third, _ = process_times(conn, worker_id)
    assert first < second < third
    assert process(conn, worker_id)["heartbeat_count"] == 2


def test_heartbeat_with_an_error_message(conn: psycopg.Connection) -> None:
    worker_id = start(conn)
    heartbeat(conn, worker_id, 1, 1, "embedding failed")
    state = process(conn, worker_id)
    assert state["last_error_message"] == "embedding failed"
    _, last_heartbeat, last_error_at = process_times(conn, worker_id)
    assert last_error_at == last_heartbeat

    # a later heartbeat without a message keeps the last error
    heartbeat(conn, worker_id, 4, 0, None)
    state = process(conn, worker_id)
    assert state["last_error_message"] == "embedding failed"
    _, later_heartbeat, still_error_at = process_times(conn, worker_id)
    assert still_error_at == last_error_at
    assert later_heartbeat > last_error_at

    # and a new message replaces it
    heartbeat(conn, worker_id, 0, 3, "database gone")
    state = process(conn, worker_id)
    assert state["last_error_message"] == "database gone"
    assert (state["heartbeat_count"], state["success_count"], state["error_count"]) == (3, 5, 4)
    _, newest_heartbeat, newest_error_at = process_times(conn, worker_id)
    assert newest_error_at == newest_heartbeat > still_error_at


def test_heartbeat_touches_only_its_worker(conn: psycopg.Connection) -> None:
    first, second = start(conn), start(conn)
    heartbeat(conn, first, 7, 1, "oops")
    assert process(conn, second)["heartbeat_count"] == 0
    assert process(conn, second)["success_count"] == 0
    assert process(conn, second)["last_error_message"] is None


def test_heartbeat_of_an_unknown_worker_changes_nothing(conn: psycopg.Connection) -> None:
    heartbeat(conn, uuid.uuid4(), 1, 1, "x")
    assert one(conn, "select count(*) from ai.vectorizer_worker_process") == 0


# --- _worker_progress ------------------------------------------------------------------------


def test_progress_success_creates_the_row(conn: psycopg.Connection, vectorizer_id: int) -> None:
    worker_id = start(conn)
    assert progress(conn, vectorizer_id) is None
    before = one(conn, "select clock_timestamp()")
    report(conn, worker_id, vectorizer_id, 10, None)
    state = progress(conn, vectorizer_id)
    assert state is not None
    assert {k: v for k, v in state.items() if k != "last_success_at"} == {
        "vectorizer_id": vectorizer_id,
        "success_count": 10,
        "error_count": 0,
        "last_success_process_id": str(worker_id),
        "last_error_at": None,
        "last_error_message": None,
        "last_error_process_id": None,
    }
    last_success_at = one(
        conn,
        "select last_success_at from ai.vectorizer_worker_progress where vectorizer_id = %s",
        (vectorizer_id,),
    )
    assert last_success_at >= before


def test_progress_error_path(conn: psycopg.Connection, vectorizer_id: int) -> None:
    first, second = start(conn), start(conn)
    report(conn, first, vectorizer_id, 4, None)
    success_at = progress(conn, vectorizer_id)["last_success_at"]  # type: ignore[index]
    report(conn, second, vectorizer_id, 3, "loading failed")
    state = progress(conn, vectorizer_id)
    assert state is not None
    assert state["success_count"] == 7
    assert state["error_count"] == 1
    assert state["last_error_message"] == "loading failed"
    assert state["last_error_process_id"] == str(second)
    assert state["last_error_at"] is not None
    # the success columns keep the earlier success
    assert state["last_success_at"] == success_at
    assert state["last_success_process_id"] == str(first)

    report(conn, first, vectorizer_id, 0, "embedding failed")
    state = progress(conn, vectorizer_id)
    assert state is not None
    assert (state["success_count"], state["error_count"]) == (7, 2)
    assert state["last_error_message"] == "embedding failed"
    assert state["last_error_process_id"] == str(first)


def test_progress_error_first_creates_the_row(conn: psycopg.Connection, vectorizer_id: int) -> None:
    worker_id = start(conn)
    report(conn, worker_id, vectorizer_id, 2, "boom")
    state = progress(conn, vectorizer_id)
    assert state is not None
    assert (state["success_count"], state["error_count"]) == (2, 1)
    assert state["last_success_at"] is None
    assert state["last_success_process_id"] is None
    error_at = one(
        conn,
        "select last_error_at from ai.vectorizer_worker_progress where vectorizer_id = %s",
        (vectorizer_id,),
    )
    assert abs(error_at - one(conn, "select now()")) < dt.timedelta(minutes=1)


def test_progress_success_times_advance(conn: psycopg.Connection, vectorizer_id: int) -> None:
    worker_id = start(conn)
    query = "select last_success_at from ai.vectorizer_worker_progress where vectorizer_id = %s"
    report(conn, worker_id, vectorizer_id, 1, None)
    first = one(conn, query, (vectorizer_id,))
    report(conn, worker_id, vectorizer_id, 1, None)
    assert one(conn, query, (vectorizer_id,)) > first
    assert progress(conn, vectorizer_id)["success_count"] == 2  # type: ignore[index]


def test_progress_rows_are_per_vectorizer(conn: psycopg.Connection, vectorizer_id: int) -> None:
    other = one(
        conn,
        "select ai.create_vectorizer('public.blog'::regclass, loading => ai.loading_column('body')"
        ", embedding => ai.embedding_openai('m', 3), destination => ai.destination_column('e')"
        ", chunking => ai.chunking_none())",
    )
    worker_id = start(conn)
    report(conn, worker_id, vectorizer_id, 5, None)
    report(conn, worker_id, other, 0, "bad key")
    assert progress(conn, vectorizer_id)["error_count"] == 0  # type: ignore[index]
    assert progress(conn, other)["error_count"] == 1  # type: ignore[index]
    assert progress(conn, other)["success_count"] == 0  # type: ignore[index]


def test_progress_of_an_unknown_vectorizer_fails(conn: psycopg.Connection) -> None:
    worker_id = start(conn)
    with pytest.raises(errors.ForeignKeyViolation):
        report(conn, worker_id, 4711, 1, None)


def test_progress_with_an_unknown_process_is_recorded(
    conn: psycopg.Connection, vectorizer_id: int
) -> None:
    # no foreign key to the process: its row may have been pruned
    ghost = uuid.uuid4()
    report(conn, ghost, vectorizer_id, 1, None)
    assert progress(conn, vectorizer_id)["last_success_process_id"] == str(ghost)  # type: ignore[index]


# --- _worker_stop (ours) -----------------------------------------------------------------------


def test_worker_stop_marks_only_its_process_row(conn: psycopg.Connection) -> None:
    worker_id = start(conn, "1.2.3", "5 seconds")
    other = start(conn, "1.2.3", "5 seconds")
    before = one(conn, "select clock_timestamp()")
    conn.execute("select ai._worker_stop(%s)", (worker_id,))
    stopped = one(
        conn, "select stopped_at from ai.vectorizer_worker_process where id = %s", (worker_id,)
    )
    assert stopped is not None and stopped >= before
    assert process(conn, other)["stopped_at"] is None
    conn.execute("select ai._worker_stop(%s)", (uuid.uuid4(),))  # an unknown worker: no error


# --- the worker's coalesced progress writes (vectorizer.tracking) ---------------------------


async def test_successes_are_written_at_most_once_an_interval_and_on_flush(
    conn: psycopg.Connection, db_url: str, vectorizer_id: int
) -> None:
    tracking = WorkerTracking(db_url, dt.timedelta(minutes=1))
    await tracking.start()
    try:
        await tracking.record_progress(vectorizer_id, 5)  # the first: written at once
        first = progress(conn, vectorizer_id)
        assert first is not None and first["success_count"] == 5
        for _ in range(10):
            await tracking.record_progress(vectorizer_id, 1)
        unchanged = progress(conn, vectorizer_id)
        assert unchanged is not None and unchanged["success_count"] == 5  # counted, not sent
        await tracking.flush_progress(vectorizer_id)
        flushed = progress(conn, vectorizer_id)
        assert flushed is not None and flushed["success_count"] == 15
        assert flushed["last_success_at"] > first["last_success_at"]
        await tracking.flush_progress()  # nothing pending: nothing written
        again = progress(conn, vectorizer_id)
        assert again is not None and again["last_success_at"] == flushed["last_success_at"]
        await tracking.record_progress(vectorizer_id, 2)
    finally:
        await tracking.stop()  # the final heartbeat writes what is pending
    stopped = progress(conn, vectorizer_id)
    assert stopped is not None and stopped["success_count"] == 17


async def test_successes_after_the_interval_are_written_with_the_batch(
    conn: psycopg.Connection, db_url: str, vectorizer_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracking_module, "PROGRESS_INTERVAL", 0.0)
    tracking = WorkerTracking(db_url, dt.timedelta(minutes=1))
    await tracking.start()
    try:
        for count in range(1, 4):
            await tracking.record_progress(vectorizer_id, 1)
            row = progress(conn, vectorizer_id)
            assert row is not None and row["success_count"] == count
    finally:
        await tracking.stop()
