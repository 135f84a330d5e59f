"""Adaptive concurrency end to end: a daemon with default settings grows its executors while
throughput grows; an explicit concurrency is left alone. Real CLI, Postgres and fake server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    count,
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    wait_for,
    wait_for_stderr,
    worker_env,
)
from vectorizer.status import render, snapshot

# a provider this slow makes one executor wait most of the time: more executors pay at once
LATENCY = 0.2


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        server.configure(latency=LATENCY)
        yield server


def _levels(stderr: str) -> list[int]:
    return [int(new) for new in re.findall(r"concurrency \d+ -> (\d+)", stderr)]


def test_default_settings_grow_the_executors_above_one(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(600))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 5)")
    with daemon(db_url, "--poll-interval", "1s", env=worker_env(fake)) as handle:
        wait_for_stderr(handle, "concurrency 8 -> 12", 60)
        wait_for(lambda: count(conn, "docs_embedding_store") == 600, 60, what="the backfill")
        # `vectorizer status` shows the level the live worker reported with its heartbeat
        executors, adaptive = wait_for(
            lambda: snapshot(conn).concurrency.get(vid), 30, what="the reported executors"
        )
        assert adaptive and executors >= 2
        assert f"{executors} (adaptive)" in render(snapshot(conn), datetime.now(UTC))
        assert handle.alive(), handle.stderr()
        stderr = handle.stderr()
    # slow start from 8: the first doubling pays at this latency, up to the default budget's
    # 12 executors
    assert _levels(stderr)[0] == 12, stderr


def test_explicit_concurrency_wins(conn: psycopg.Connection, db_url: str, fake: FakeOpenAI) -> None:
    create_source(conn, rows=doc_rows(40))
    vid = create_vectorizer(
        conn, processing="ai.processing_default(batch_size => 5, concurrency => 2)"
    )
    with daemon(db_url, "--poll-interval", "1s", env=worker_env(fake)) as handle:
        wait_for(lambda: count(conn, "docs_embedding_store") == 40, 60, what="the backfill")
        reported = wait_for(
            lambda: snapshot(conn).concurrency.get(vid), 30, what="the reported executors"
        )
        assert handle.alive(), handle.stderr()
        stderr = handle.stderr()
    assert _levels(stderr) == []
    assert reported == (2, False)
