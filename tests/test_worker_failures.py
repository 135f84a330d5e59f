"""The worker's failure handling end to end (real CLI, real Postgres, real HTTP to the fake):
row-level failures are charged per key and end in the failed queue, vectorizer-level ones
charge nothing and leave other vectorizers alone, transient ones consume nothing, and setup
problems exit 1 with a message that says what to do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg
import pytest

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    MODEL,
    assert_vector,
    create_source,
    create_vectorizer,
    doc_rows,
    error_rows,
    failed_rows,
    inputs_sent,
    queue_count,
    queue_rows,
    run_ok,
    run_worker,
    store_rows,
    worker_env,
)

GOOD_KEY = "good-key-0123456789abcdefGOOD"
# Not shaped like an OpenAI key, so only the worker's knowledge of its own secret can mask it.
WRONG_KEY = "wrongkey-0123456789abcdefWRONG"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _db_now(conn: psycopg.Connection) -> datetime:
    row = conn.execute("select now()").fetchone()
    assert row is not None
    return row[0]


def _make_due(conn: psycopg.Connection, vectorizer_id: int) -> None:
    """Fast-forward the backoff: every queued key is due now."""
    conn.execute(f"update ai._vectorizer_q_{vectorizer_id} set loading_retry_after = now()")


def _ids(rows: list[tuple[object, ...]]) -> list[object]:
    return sorted({row[0] for row in rows})


# --- row-level failures ------------------------------------------------------------------------


def test_poison_row_is_charged_per_run_then_failed_while_good_rows_land(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(1, "a", "good one"), (2, "b", "a POISON row"), (3, "c", "good 3")])
    vid = create_vectorizer(conn, loading="ai.loading_column('body', retries => 2)")
    env = worker_env(fake)

    # attempt 1: the good rows commit, the poison key is requeued with a 10 min backoff
    run_ok(db_url, "--retry-backoff", "10m", env=env)
    assert [(key, seq, chunk) for key, seq, chunk, _ in store_rows(conn)] == [
        (1, 0, "good one"),
        (3, 0, "good 3"),
    ]
    [(key, attempts, retry_after)] = queue_rows(conn, vid)
    assert (key, attempts) == (2, 1)
    assert timedelta(minutes=9) < retry_after - _db_now(conn) <= timedelta(minutes=10)
    assert failed_rows(conn, vid) == []

    # not due yet: a run leaves it alone and sends nothing
    before = len(fake.requests)
    run_ok(db_url, "--retry-backoff", "10m", env=env)
    assert [row[:2] for row in queue_rows(conn, vid)] == [(2, 1)]
    assert len(fake.requests) == before

    # attempt 2: the backoff doubles
    _make_due(conn, vid)
    run_ok(db_url, "--retry-backoff", "10m", env=env)
    [(key, attempts, retry_after)] = queue_rows(conn, vid)
    assert (key, attempts) == (2, 2)
    assert timedelta(minutes=19) < retry_after - _db_now(conn) <= timedelta(minutes=20)

    # attempt 3 = retries exhausted: the failed queue, at the embedding step
    _make_due(conn, vid)
    run_ok(db_url, "--retry-backoff", "10m", env=env)
    assert queue_rows(conn, vid) == []
    assert failed_rows(conn, vid) == [(2, "embedding")]
    assert _ids(store_rows(conn)) == [1, 3]

    errors = error_rows(conn, vid)
    assert [message for _, message, _ in errors] == ["embedding provider failed"] * 3
    assert [details["attempts"] for _, _, details in errors] == [1, 2, 3]
    assert [details["is_retryable"] for _, _, details in errors] == [True, True, False]
    for _, _, details in errors:
        assert details["provider"] == "openai"
        assert details["step"] == "embedding"
        assert details["pk"] == {"id": 2}
        assert "flagged as invalid" in details["error_reason"]
    # the good rows were embedded exactly once
    assert inputs_sent(fake).count("good one") == 1
    # each run's process row counted its successes and charged keys
    totals = conn.execute(
        "select sum(success_count), sum(error_count) from ai.vectorizer_worker_process"
    ).fetchone()
    assert totals == (2, 3)


def test_zero_backoff_from_env_retries_a_poison_row_within_one_run(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(7))
    vid = create_vectorizer(conn, loading="ai.loading_column('body', retries => 2)")
    env = worker_env(fake, VECTORIZER_RETRY_BACKOFF="0")
    run_ok(db_url, env=env)
    assert _ids(store_rows(conn)) == [1, 2, 3, 4, 5, 6, 7]

    conn.execute("update docs set body = 'POISON here' where id = 7")
    conn.execute("update docs set body = 'fine edit' where id = 6")
    run_ok(db_url, env=env)

    assert queue_count(conn, vid) == 0
    assert failed_rows(conn, vid) == [(7, "embedding")]
    attempts = [details["attempts"] for _, _, details in error_rows(conn, vid)]
    assert attempts == [1, 2, 3]
    # the failing row keeps its old embeddings; the other edit landed
    stored = {key: chunk for key, _, chunk, _ in store_rows(conn)}
    assert stored[7] == "body of document 7"
    assert stored[6] == "fine edit"


def test_document_that_cannot_be_parsed_fails_at_parsing(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    # a markdown file parses as text; bytes of no known type cannot be parsed by anything
    conn.execute("create table files (id int primary key, data bytea)")
    conn.execute(
        "insert into files values (1, convert_to('# notes\nplain markdown text', 'UTF8')),"
        " (2, '\\x00010203ff00'::bytea), (3, ''::bytea)"
    )
    vid = create_vectorizer(conn, "files", loading="ai.loading_column('data', retries => 0)")

    run_ok(db_url, env=worker_env(fake))

    assert [row[:3] for row in store_rows(conn, "files_embedding_store")] == [
        (1, 0, "# notes\nplain markdown text")
    ]
    assert failed_rows(conn, vid) == [(2, "parsing")]
    assert queue_count(conn, vid) == 0
    [(_, message, details)] = error_rows(conn, vid)
    assert message == "parsing failed"
    assert (details["step"], details["pk"], details["attempts"]) == ("parsing", {"id": 2}, 1)
    assert details["is_retryable"] is False
    assert "No file extension could be determined" in details["error_reason"]


def test_batch_of_only_deleted_rows_does_not_stop_the_run(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(12))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 2)")
    conn.execute("delete from docs where id <= 5")  # the first batches hold only deleted keys
    assert queue_count(conn, vid) == 12

    run_ok(db_url, "--concurrency", "1", env=worker_env(fake))

    assert _ids(store_rows(conn)) == list(range(6, 13))
    assert queue_count(conn, vid) == 0
    assert failed_rows(conn, vid) == []
    assert error_rows(conn, vid) == []


# --- vectorizer-level failures -----------------------------------------------------------------


def test_wrong_api_key_charges_nothing_and_spares_other_vectorizers(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    fake.configure(api_key=GOOD_KEY)
    create_source(conn, "bad_docs", doc_rows(5))
    create_source(conn, "good_docs", doc_rows(5))
    bad = create_vectorizer(conn, "bad_docs")
    good = create_vectorizer(conn, "good_docs", api_key_name="GOOD_OPENAI_KEY")

    result = run_worker(
        db_url,
        "--log-level",
        "debug",
        env=worker_env(fake, api_key=WRONG_KEY, GOOD_OPENAI_KEY=GOOD_KEY),
    )

    assert result.returncode == 1, result.stderr  # once mode exits 1 on an error...
    assert _ids(store_rows(conn, "good_docs_embedding_store")) == [1, 2, 3, 4, 5]  # ...not early
    assert queue_count(conn, good) == 0
    assert store_rows(conn, "bad_docs_embedding_store") == []
    assert [row[:2] for row in queue_rows(conn, bad)] == [(i, 0) for i in range(1, 6)]
    assert all(retry_after is None for _, _, retry_after in queue_rows(conn, bad))
    assert failed_rows(conn, bad) == []
    [(_, message, details)] = error_rows(conn, bad)
    assert message == "embedding provider failed"
    assert details["provider"] == "openai"
    assert "401" in details["error_reason"]
    assert "Incorrect API key" in details["error_reason"]
    assert error_rows(conn, good) == []
    # the key never leaks: not in the log, not in an error row, not in tracking
    assert WRONG_KEY not in result.stderr
    assert GOOD_KEY not in result.stderr
    tracking = conn.execute(
        "select coalesce(string_agg(last_error_message, ' '), '') from ("
        " select last_error_message from ai.vectorizer_worker_process"
        " union all select last_error_message from ai.vectorizer_worker_progress) t"
    ).fetchone()
    assert tracking is not None and "Incorrect API key" in tracking[0]
    for text in (str(error_rows(conn)), tracking[0]):
        assert WRONG_KEY not in text
        assert GOOD_KEY not in text


def test_missing_api_key_is_a_vectorizer_error_naming_the_variable(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(2))
    vid = create_vectorizer(conn, api_key_name="NO_SUCH_KEY_VAR")

    result = run_worker(db_url, env=worker_env(fake))

    assert result.returncode == 1
    assert "NO_SUCH_KEY_VAR" in result.stderr
    [(_, message, details)] = error_rows(conn, vid)
    assert message == "embedding provider failed"
    assert "api_key_name=NO_SUCH_KEY_VAR" in details["error_reason"]
    assert [row[:2] for row in queue_rows(conn, vid)] == [(1, 0), (2, 0)]
    assert fake.requests == []


def test_dimension_mismatch_is_a_vectorizer_error_that_charges_nothing(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    fake.configure(extra_dimensions=3)
    create_source(conn, rows=doc_rows(4))
    vid = create_vectorizer(conn)

    result = run_worker(db_url, env=worker_env(fake))

    assert result.returncode == 1
    [(_, message, details)] = error_rows(conn, vid)
    assert message == "embedding provider failed"
    assert details["provider"] == "openai"
    assert "returned 11 dimensions, the vectorizer expects 8" in details["error_reason"]
    assert [row[:2] for row in queue_rows(conn, vid)] == [(i, 0) for i in range(1, 5)]
    assert failed_rows(conn, vid) == []
    assert store_rows(conn) == []


def test_parameter_the_provider_rejects_is_a_vectorizer_error(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    # Every request is a 400, even the tiny probe: the config is at fault, not the rows.
    fake.configure(dimensions_unsupported=frozenset({MODEL}))
    create_source(conn, rows=doc_rows(4))
    vid = create_vectorizer(conn)

    result = run_worker(db_url, env=worker_env(fake))

    assert result.returncode == 1
    [(_, message, details)] = error_rows(conn, vid)
    assert message == "embedding provider failed"
    assert "does not support specifying dimensions" in details["error_reason"]
    assert [row[:2] for row in queue_rows(conn, vid)] == [(i, 0) for i in range(1, 5)]
    assert failed_rows(conn, vid) == []
    assert len(fake.requests) <= 3  # no request per row to find a culprit


def test_provider_outage_beyond_the_retry_budget_charges_nothing(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    fake.fail_next(503, count=10_000)
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn)

    result = run_worker(db_url, env=worker_env(fake, VECTORIZER_TRANSIENT_RETRY_BUDGET="1.5"))

    assert result.returncode == 1
    [(_, message, details)] = error_rows(conn, vid)
    assert message == "embedding provider failed"
    assert "503" in details["error_reason"]
    assert [row[:2] for row in queue_rows(conn, vid)] == [(1, 0), (2, 0), (3, 0)]
    assert failed_rows(conn, vid) == []
    assert len(fake.requests) >= 2  # retried in place first


def test_exit_on_error_false_exits_0_in_once_mode(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    fake.configure(api_key=GOOD_KEY)
    create_source(conn, rows=doc_rows(2))
    vid = create_vectorizer(conn)

    result = run_worker(db_url, "--exit-on-error=false", env=worker_env(fake, api_key=WRONG_KEY))

    assert result.returncode == 0, result.stderr
    assert [message for _, message, _ in error_rows(conn, vid)] == ["embedding provider failed"]
    assert queue_count(conn, vid) == 2


# --- transient failures ------------------------------------------------------------------------


def test_429_storm_is_waited_out_without_charging_anything(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(20))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 5)")
    fake.fail_next(500, count=2)
    fake.fail_next(429, count=25, retry_after="0")
    fake.fail_next(429, count=5, retry_after_ms="20")

    started = time.monotonic()
    run_ok(db_url, "--concurrency", "2", env=worker_env(fake))
    elapsed = time.monotonic() - started

    statuses = [request.status for request in fake.requests]
    assert statuses.count(429) == 30 and statuses.count(500) == 2
    assert _ids(store_rows(conn)) == list(range(1, 21))
    for _, _, chunk, embedding in store_rows(conn):
        assert_vector(embedding, chunk)
    assert queue_count(conn, vid) == 0
    assert failed_rows(conn, vid) == []
    assert error_rows(conn, vid) == []
    assert elapsed < 30


# --- setup problems: exit 1 with a clear message -----------------------------------------------


def test_bad_db_url_exits_1_with_a_clear_message(fake: FakeOpenAI) -> None:
    result = run_worker(
        "postgresql://nobody:s3cretpw@127.0.0.1:1/nowhere", env=worker_env(fake), timeout=30
    )
    assert result.returncode == 1
    assert "unable to connect to database" in result.stderr
    assert "s3cretpw" not in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_schema_says_to_run_install(empty_db_url: str, fake: FakeOpenAI) -> None:
    result = run_worker(empty_db_url, env=worker_env(fake), timeout=30)
    assert result.returncode == 1
    assert "vectorizer install" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_vectorizer_id_exits_1(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(1))
    vid = create_vectorizer(conn)
    result = run_worker(db_url, "-i", "999", env=worker_env(fake), timeout=30)
    assert result.returncode == 1
    assert "invalid vectorizers" in result.stderr
    assert "999" in result.stderr
    assert queue_count(conn, vid) == 1  # nothing ran
    result = run_worker(db_url, "-i", "no_such_name", env=worker_env(fake), timeout=30)
    assert result.returncode == 1
    assert "invalid vectorizers" in result.stderr and "no_such_name" in result.stderr


def test_a_failed_key_leaves_the_failed_queue_once_it_embeds(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[(1, "a", "good one"), (2, "b", "a POISON row")])
    vid = create_vectorizer(conn, loading="ai.loading_column('body', retries => 0)")
    env = worker_env(fake)
    run_ok(db_url, env=env)
    assert failed_rows(conn, vid) == [(2, "embedding")]

    # failing again does not list the key twice
    conn.execute("update docs set body = 'still POISON' where id = 2")
    run_ok(db_url, env=env)
    assert failed_rows(conn, vid) == [(2, "embedding")]

    # the user fixes the row: it embeds and is no longer reported as failed
    conn.execute("update docs set body = 'fixed now' where id = 2")
    run_ok(db_url, env=env)
    assert failed_rows(conn, vid) == []
    assert _ids(store_rows(conn)) == [1, 2]


def test_target_column_of_another_size_is_a_vectorizer_error(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn)
    # someone changed the destination behind the vectorizer's back
    conn.execute("drop view docs_embedding")
    conn.execute("alter table docs_embedding_store alter column embedding type vector(5)")

    result = run_worker(db_url, env=worker_env(fake))

    assert result.returncode == 1
    [(_, message, details)] = error_rows(conn, vid)
    assert message == "vectorizer failed with unexpected error"
    assert details["step"] == "writing"
    assert "expected 5 dimensions" in details["error_reason"]
    # nothing charged, nothing failed: the keys wait for the fix
    assert [row[:2] for row in queue_rows(conn, vid)] == [(i, 0) for i in range(1, 4)]
    assert failed_rows(conn, vid) == []
