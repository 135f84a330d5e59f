"""Issue 9 item 5: /healthz and the queue metrics cover only the vectorizers this worker serves,
and a misconfigured vectorizer is reported per vectorizer, never as a dead worker (which would
put a container health check into a restart loop). Real worker subprocess, real Postgres, real
HTTP to the fake OpenAI server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.fake_openai import FakeOpenAI
from tests.test_observability import daemon_flags, free_port, http_get, samples, value
from tests.worker_helpers import (
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    error_rows,
    queue_count,
    store_rows,
    wait_for,
    worker_env,
)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def test_health_and_metrics_cover_only_served_vectorizers_and_a_misconfigured_one_is_failing(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, "good_docs", doc_rows(3))
    create_source(conn, "broken_docs", doc_rows(2))
    create_source(conn, "other_docs", doc_rows(4))
    good = create_vectorizer(conn, "good_docs", name="good_vec")
    # its key's variable is not set for the worker: a vectorizer-level error, every time
    broken = create_vectorizer(conn, "broken_docs", name="broken_vec", api_key_name="NO_SUCH_KEY")
    other = create_vectorizer(conn, "other_docs", name="other_vec")  # another worker's job

    port = free_port()
    flags = daemon_flags(port, "--health-stuck-after", "1s", "-i", str(good), "-i", str(broken))
    with daemon(db_url, *flags, env=worker_env(fake)) as handle:
        wait_for(lambda: len(store_rows(conn, "good_docs_embedding_store")) == 3, 20, what="good")
        wait_for(lambda: error_rows(conn, broken), 20, what="the broken vectorizer's error row")

        def polled() -> dict | None:
            status, body = http_get(port, "/healthz")
            report = json.loads(body) if status in (200, 503) else {}
            served = report.get("vectorizers", {})
            return report if set(served) == {"good_vec", "broken_vec"} else None

        wait_for(polled, 15, interval=0.1, what="the queue poll of the served vectorizers")
        time.sleep(1.5)  # longer than --health-stuck-after: the broken one still has 2 pending

        status, body = http_get(port, "/healthz")
        report = json.loads(body)
        assert status == 200, body  # the worker is alive and doing its job
        assert report["status"] == "ok" and report["problems"] == []
        assert set(report["vectorizers"]) == {"good_vec", "broken_vec"}  # not other_vec
        assert report["vectorizers"]["broken_vec"]["state"] == "failing"
        assert report["vectorizers"]["broken_vec"]["pending"] == 2
        assert report["vectorizers"]["good_vec"]["state"] == "idle"

        status, page = http_get(port, "/metrics")
        assert status == 200
        metrics = samples(page)
        depths = {
            dict(labels)["vectorizer"]
            for (name, labels) in metrics
            if name in ("vectorizer_queue_depth", "vectorizer_failed_queue_depth")
        }
        assert depths == {"good_vec", "broken_vec"}
        assert value(metrics, "vectorizer_queue_depth", vectorizer="broken_vec") == 2
        assert value(metrics, "vectorizer_failing", vectorizer="broken_vec") == 1
        assert value(metrics, "vectorizer_failing", vectorizer="good_vec") == 0
        assert value(metrics, "vectorizer_worker_healthy") == 1
        errors = {"vectorizer": "broken_vec", "step": "embedding", "kind": "vectorizer"}
        assert (value(metrics, "vectorizer_errors_total", **errors) or 0) >= 1
        assert handle.alive()

    assert queue_count(conn, other) == 4  # nobody touched the unserved vectorizer
    assert queue_count(conn, broken) == 2  # and nothing of the broken one was charged away
