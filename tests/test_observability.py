"""Metrics, health, logs, progress bars and tracing of the real worker: daemons and once runs as
subprocesses (real Postgres, real HTTP to tests/fake_openai.py), and one in-process run traced
into an in-memory OpenTelemetry exporter."""

from __future__ import annotations

import asyncio
import io
import json
import os
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    REPO_ROOT,
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    failed_rows,
    insert_rows,
    queue_count,
    run_ok,
    run_worker,
    store_rows,
    wait_for,
    worker_command,
    worker_env,
)
from vectorizer.observability import tracing
from vectorizer.observability.progress import Progress, ProgressDisplay

GOOD_KEY = "good-key-0123456789abcdefGOOD"
WRONG_KEY = "wrongkey-json-0123456789abcdefWRONG"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:port/path; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return 0, str(exc)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page by (name, labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(page: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str):
    return page.get((name, frozenset(labels.items())))


def daemon_flags(port: int, *extra: str) -> list[str]:
    return [
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        "--poll-interval",
        "300ms",
        *extra,
    ]


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_after_a_backfill_with_a_poison_row_and_a_429(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=[*doc_rows(6), (7, "p", "a POISON row")])
    vid = create_vectorizer(
        conn,
        name="metrics_vec",
        loading="ai.loading_column('body', retries => 0)",
        processing="ai.processing_default(batch_size => 3)",
    )
    fake.fail_next(429, retry_after_ms="400")
    port = free_port()
    with daemon(db_url, *daemon_flags(port), env=worker_env(fake)) as handle:
        wait_for(lambda: failed_rows(conn, vid) and queue_count(conn, vid) == 0, 20, what="done")

        def settled() -> dict[Any, float] | None:
            status, body = http_get(port, "/metrics")
            assert status == 200, body
            page = samples(body)
            depth = value(page, "vectorizer_queue_depth", vectorizer="metrics_vec")
            failed = value(page, "vectorizer_failed_queue_depth", vectorizer="metrics_vec")
            return page if (depth, failed) == (0, 1) else None

        page = wait_for(settled, 10, interval=0.1, what="queue depths polled after the backfill")
        assert handle.alive()

    assert sorted(row[0] for row in store_rows(conn)) == [1, 2, 3, 4, 5, 6]
    answered = fake.embedded_requests
    assert value(page, "vectorizer_rows_total", vectorizer="metrics_vec") == 6
    assert value(page, "vectorizer_chunks_total", vectorizer="metrics_vec") == 6
    openai = {"vectorizer": "metrics_vec", "provider": "openai"}
    # the provider's token counts, with or without the one-word canary sent before bisecting
    canary = sum(r.tokens for r in answered if r.inputs == ["ok"])
    tokens = value(page, "vectorizer_tokens_total", **openai)
    assert sum(r.tokens for r in answered) - canary <= tokens <= sum(r.tokens for r in answered)
    assert value(page, "vectorizer_requests_total", **openai) == len(fake.requests)
    calls = value(page, "vectorizer_embed_call_seconds_count", provider="openai")
    assert calls is not None and calls >= 3  # one per batch that had text to embed
    assert value(page, "vectorizer_embed_call_seconds_sum", provider="openai") >= 0.4
    assert value(page, "vectorizer_embed_call_seconds_bucket", provider="openai", le="+Inf") == (
        calls
    )
    assert value(page, "vectorizer_ratelimit_wait_seconds_total", provider="openai") >= 0.3
    errors = {"vectorizer": "metrics_vec", "step": "embedding", "kind": "row"}
    assert value(page, "vectorizer_errors_total", **errors) == 1
    assert value(page, "vectorizer_last_progress_timestamp_seconds") > time.time() - 60


# --- health ------------------------------------------------------------------------------------


def test_healthz_reports_a_stalled_vectorizer_while_another_idles_then_recovers(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, "quiet_docs")
    create_source(conn, "busy_docs")
    create_vectorizer(conn, "quiet_docs", name="quiet_vec")
    with FakeOpenAI() as slow:
        busy = create_vectorizer(conn, "busy_docs", name="busy_vec", base_url=slow.base_url)
        port = free_port()
        flags = daemon_flags(port, "--health-stuck-after", "1s")
        with daemon(db_url, *flags, env=worker_env(fake)) as handle:

            def started() -> bool:
                status, body = http_get(port, "/healthz")
                states = json.loads(body)["vectorizers"] if status in (200, 503) else {}
                # both runners are up (their provider imported): from here on, idling is all
                return len(states) == 2 and all(
                    state["seconds_since_progress"] is not None for state in states.values()
                )

            wait_for(started, 30, interval=0.1, what="both vectorizers' first drain")
            time.sleep(1.5)  # idle for longer than --health-stuck-after, with empty queues
            status, body = http_get(port, "/healthz")
            assert (status, json.loads(body)["status"]) == (200, "ok"), body
            assert http_get(port, "/nowhere")[0] == 404

            slow.stall_next(4.0)
            insert_rows(conn, "busy_docs", doc_rows(2))
            stalled_at = time.monotonic()
            _, body = wait_for(
                lambda: (got := http_get(port, "/healthz"))[0] == 503 and got,
                6,
                interval=0.1,
                what="/healthz to report the stalled provider",
            )
            report = json.loads(body)
            [problem] = report["problems"]
            assert "busy_vec" in problem and "pending but no progress" in problem
            assert report["vectorizers"]["busy_vec"]["state"] == "stalled"
            assert report["vectorizers"]["quiet_vec"]["state"] == "idle"
            assert store_rows(conn, "busy_docs_embedding_store") == []
            assert time.monotonic() - stalled_at < 4.0  # reported while the call still hangs

            wait_for(
                lambda: http_get(port, "/healthz")[0] == 200,
                10,
                interval=0.1,
                what="/healthz to recover",
            )
            assert sorted(row[0] for row in store_rows(conn, "busy_docs_embedding_store")) == [1, 2]
            assert queue_count(conn, busy) == 0
            assert handle.alive()


# --- logs --------------------------------------------------------------------------------------


def test_json_logs_parse_line_by_line_and_never_show_the_echoed_key(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    fake.configure(api_key=GOOD_KEY)
    create_source(conn, "good_docs", doc_rows(3))
    create_source(conn, "bad_docs", doc_rows(3))
    create_vectorizer(conn, "good_docs", api_key_name="GOOD_OPENAI_KEY")
    create_vectorizer(conn, "bad_docs")

    result = run_worker(
        db_url,
        "--log-format",
        "json",
        "--log-level",
        "debug",
        env=worker_env(fake, api_key=WRONG_KEY, GOOD_OPENAI_KEY=GOOD_KEY),
    )

    assert result.returncode == 1  # the bad vectorizer's error, once mode
    lines = result.stderr.splitlines()
    assert len(lines) >= 5
    records = []
    for line in lines:
        record = json.loads(line)  # every line, not just most
        assert isinstance(record, dict), line
        assert record["level"] in {"debug", "info", "warning", "error", "critical"}, line
        assert isinstance(record["message"], str) and record["message"], line
        records.append(record)
    messages = [record["message"] for record in records]
    assert any(r["level"] == "error" and "Incorrect API key" in r["message"] for r in records)
    # the facts are fields of their own, not words of the message
    finished = [r for r in records if r["message"] == "finished processing vectorizer"]
    assert [(r["items"], r["chunks"]) for r in finished if r["items"]] == [(3, 3)]
    assert all(isinstance(r["vectorizer_id"], int) and r["seconds"] >= 0 for r in finished)
    assert not any("=" in message for message in messages if "processing" in message)
    echoed = [m for m in messages if "Incorrect API key provided" in m]
    assert echoed and all("***" in m for m in echoed)  # echoed back, and masked
    assert WRONG_KEY not in result.stderr
    assert GOOD_KEY not in result.stderr
    assert WRONG_KEY[:12] not in result.stderr


# --- progress bars -----------------------------------------------------------------------------


def test_progress_line_shows_bar_rows_chunks_rate_and_eta() -> None:
    bar = Progress(name="docs", total=100, rows=25, chunks=40, started=time.monotonic() - 5)
    line = bar.line(width=20)
    assert line.startswith("docs" + " " * 24 + " [#####" + "." * 15 + "] ")
    assert " 25/100 rows 40 chunks " in line
    assert "    5.0 rows/s" in line
    assert line.endswith("eta   15s")

    bar.rows, bar.finished = 120, True  # more rows than estimated: the total follows
    line = bar.line(width=10)
    assert "[##########]" in line and "120/120 rows" in line
    assert line.endswith(" done")

    waiting = Progress(name="a-very-long-vectorizer-name-that-is-cut-short", total=10)
    line = waiting.line(width=10)
    assert line.startswith("a-very-long-vectorizer-name- [..........] 0/10 rows 0 chunks")
    assert line.endswith("eta    ?")


def test_progress_display_redraws_its_lines_in_place() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out)
    display.bars[2] = Progress(name="second", total=4, rows=4, finished=True)
    display.bars[1] = Progress(name="first", total=10, rows=5, chunks=9)

    display.draw()
    first = out.getvalue()
    lines = first.split("\n")
    assert lines[0].startswith("\x1b[2Kfirst ")  # ordered by vectorizer id
    assert lines[1].startswith("\x1b[2Ksecond ")
    assert lines[2] == ""
    assert "\x1b[" not in first.replace("\x1b[2K", "")  # nothing to move back over yet
    assert "5/10 rows 9 chunks" in lines[0] and "4/4 rows" in lines[1]

    display.bars[1].rows = 10
    display.draw()
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[2F\x1b[2Kfirst ")  # back up two lines, then redraw
    assert "10/10 rows" in second
    assert second.count("\x1b[2K") == 2 and second.endswith("\n")


def test_progress_bars_only_on_a_terminal(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(5))
    create_vectorizer(conn, name="bar_vec", processing="ai.processing_default(batch_size => 2)")
    env = worker_env(fake)

    plain = run_ok(db_url, env=env)
    assert "[#" not in plain.stderr and "\x1b[" not in plain.stderr
    assert "finished processing vectorizer items=5" in plain.stderr

    insert_rows(conn, "docs", doc_rows(4, start=6))
    code, screen = run_on_terminal(worker_command(db_url, "--once"), env)
    assert code == 0, screen
    assert "\x1b[2Kbar_vec " in screen
    assert "[########################] 4/4 rows 4 chunks" in screen
    assert " done" in screen
    assert "finished processing vectorizer items=4" in screen  # the log lines still show
    assert len(store_rows(conn)) == 9


def run_on_terminal(command: list[str], env: Mapping[str, str]) -> tuple[int, str]:
    """Runs `command` with a pseudo-terminal as its stderr; (exit code, what it wrote there)."""
    master, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
        )
        os.close(terminal)
        terminal = -1
        output = bytearray()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            output += data
        else:
            process.kill()
        return process.wait(10), output.decode(errors="replace")
    finally:
        os.close(master)
        if terminal != -1:
            os.close(terminal)


# --- tracing -----------------------------------------------------------------------------------


async def test_spans_for_batches_and_stages_with_opentelemetry(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    from vectorizer.worker import WorkerSettings, run_worker

    create_source(conn, rows=doc_rows(5))
    vid = create_vectorizer(conn, processing="ai.processing_default(batch_size => 2)")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert tracing.configure(tracer_provider=provider) == ["opentelemetry"]
    try:
        # one executor: the span counts below are per batch of a single claim sequence
        code = await run_worker(WorkerSettings(db_url=db_url, once=True, concurrency=1))
    finally:
        tracing.shutdown()
        loop = asyncio.get_running_loop()
        for sig, handler in handlers.items():  # run_worker's handlers end with the run
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)
    assert code == 0
    assert len(store_rows(conn)) == 5

    spans: list[ReadableSpan] = list(exporter.get_finished_spans())
    batches = [span for span in spans if span.name == "vectorizer.batch"]
    stages = [span for span in spans if span.name == "vectorizer.stage"]
    # three batches with rows (2 + 2 + 1) and the empty one that ends the drain
    assert len(batches) == 4
    assert all(span.attributes["vectorizer_id"] == vid for span in batches)
    by_id = {span.context.span_id: span for span in batches}
    per_batch: dict[int, list[str]] = {}
    for span in stages:
        assert span.parent is not None and span.parent.span_id in by_id
        assert span.context.trace_id == by_id[span.parent.span_id].context.trace_id
        per_batch.setdefault(span.parent.span_id, []).append(span.attributes["stage"])
    assert len(per_batch) == 3
    for names in per_batch.values():
        assert names == ["load_parse", "chunk_format", "embed", "write"]
    rows = sorted(span.attributes["rows"] for span in stages if span.attributes["stage"] == "embed")
    assert rows == [1, 2, 2]
    # one provider request per batch here, each inside its embed stage
    requests = [span for span in spans if span.name == "vectorizer.embed_request"]
    embed_stages = {s.context.span_id for s in stages if s.attributes["stage"] == "embed"}
    assert len(requests) == 3
    assert all(span.parent is not None and span.parent.span_id in embed_stages for span in requests)
    assert {span.attributes["provider"] for span in requests} == {"openai"}
    assert sorted(span.attributes["inputs"] for span in requests) == [1, 2, 2]
    assert tracing.configure() == []  # the explicit provider was for that one run


def test_unreachable_trace_collector_and_agent_do_not_slow_a_run(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(20))
    create_vectorizer(conn, processing="ai.processing_default(batch_size => 5)")

    started = time.monotonic()
    baseline = run_ok(db_url, env=worker_env(fake))
    untraced = time.monotonic() - started
    assert "tracing enabled" not in baseline.stderr

    insert_rows(conn, "docs", doc_rows(20, start=21))
    nowhere = "http://127.0.0.1:9"
    env = worker_env(
        fake,
        OTEL_EXPORTER_OTLP_ENDPOINT=nowhere,
        DD_TRACE_ENABLED="true",
        DD_TRACE_AGENT_URL=nowhere,
    )
    started = time.monotonic()
    traced = run_worker(db_url, "--log-format", "json", env=env, timeout=60)
    elapsed = time.monotonic() - started

    assert traced.returncode == 0, traced.stderr
    # the exporters' complaints come through the worker's own (JSON) log handler
    messages = [json.loads(line)["message"] for line in traced.stderr.splitlines()]
    assert "tracing enabled: opentelemetry, datadog" in messages
    assert len(store_rows(conn)) == 40
    assert elapsed < untraced + 6, (untraced, elapsed)
