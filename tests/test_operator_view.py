"""What an operator sees of a run, through the real CLI: `vectorizer install`'s output, workers
in `vectorizer status` after they exit, error rows that name the failing step, the once-mode
progress bars as a terminal shows them, and the log lines of an idle daemon."""

from __future__ import annotations

import json
import signal

import psycopg
import pyte
import pytest

from tests.fake_openai import FakeOpenAI
from tests.test_observability import run_on_terminal
from tests.test_status import cli
from tests.worker_helpers import (
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    run_ok,
    run_python,
    store_rows,
    terminate,
    wait_for,
    wait_for_stderr,
    worker_command,
    worker_env,
)
from vectorizer.observability.progress import Progress

# --- install -----------------------------------------------------------------------------------


def test_install_prints_its_result_once(empty_db_url: str) -> None:
    for expected in ("installed", "is already installed"):
        result = run_python(
            "-m", "vectorizer", "install", "--db-url", empty_db_url, env=worker_env()
        )
        assert result.returncode == 0, result.stderr
        said = (result.stdout + result.stderr).splitlines()
        assert [line for line in said if "installed" in line] == [
            line for line in said if line.endswith(expected)
        ]
        assert len([line for line in said if "installed" in line]) == 1, said


# --- workers in `vectorizer status` --------------------------------------------------------------


def _worker_states(db_url: str) -> list[str]:
    result = cli("status", "--db-url", db_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("Workers (last 24h)")[1].strip().splitlines()[1:]
    return [line.split()[2] for line in lines]


def test_workers_that_exited_cleanly_show_as_stopped(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(3))
    create_vectorizer(conn)
    run_ok(db_url, env=worker_env(fake_openai))
    assert _worker_states(db_url) == ["stopped"]

    with daemon(db_url, "--poll-interval", "200ms", env=worker_env(fake_openai)) as running:
        wait_for(lambda: len(_worker_states(db_url)) == 2, 20, what="the daemon's process row")
        assert sorted(_worker_states(db_url)) == ["alive", "stopped"]
        code, _ = terminate(running)
    assert code == 0
    assert _worker_states(db_url) == ["stopped", "stopped"]

    with daemon(db_url, "--poll-interval", "200ms", env=worker_env(fake_openai)) as killed:
        wait_for(lambda: len(_worker_states(db_url)) == 3, 20, what="the daemon's process row")
        killed.signal(signal.SIGKILL)
        killed.wait(10)
    # a killed worker never says it stopped: it goes stale once its heartbeats are overdue
    stopped = conn.execute(
        "select count(*) filter (where stopped_at is null) from ai.vectorizer_worker_process"
    ).fetchone()
    assert stopped == (1,)


# --- the once-mode progress bar on a terminal --------------------------------------------------


def _screen(output: str) -> list[str]:
    screen = pyte.Screen(400, 60)  # wide enough that no log line wraps
    stream = pyte.Stream(screen)
    stream.feed(output)
    return [line.rstrip() for line in screen.display if line.strip()]


def test_progress_bar_ends_replaced_in_place_with_the_log_lines_above_it(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(6))
    create_vectorizer(conn, name="bar_vec", processing="ai.processing_default(batch_size => 2)")

    code, output = run_on_terminal(worker_command(db_url, "--once"), worker_env(fake_openai))

    assert code == 0, output
    lines = _screen(output)
    bars = [line for line in lines if line.startswith("bar_vec ")]
    assert len(bars) == 1, "\n".join(lines)  # one bar, redrawn in place to its last state
    assert "[########################] 6/6 rows 6 chunks" in bars[0] and bars[0].endswith("done")
    logs = [line for line in lines if not line.startswith("bar_vec ")]
    assert any("finished processing vectorizer items=6" in line for line in logs)
    assert any("once mode, exiting" in line for line in logs)
    # every log line is whole, none of them drawn over by the bar
    assert all(" INFO " in line or " WARNING " in line for line in logs), "\n".join(lines)
    assert len(store_rows(conn)) == 6


def test_a_bar_with_nothing_counted_yet_is_empty_until_done() -> None:
    bar = Progress(name="starting")
    assert "[........................] 0/0 rows" in bar.line()
    bar.finished = True
    assert "[########################] 0/0 rows" in bar.line()


# --- logs of an idle daemon ----------------------------------------------------------------------


def test_an_idle_daemon_says_nothing_at_info_and_reports_at_debug(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(2))
    vid = create_vectorizer(conn)
    flags = ("--poll-interval", "100ms", "--log-format", "json")
    with daemon(db_url, *flags, env=worker_env(fake_openai)) as quiet:
        wait_for(lambda: len(store_rows(conn)) == 2, 20, what="the backfill")
        wait_for_stderr(quiet, "finished processing vectorizer", 10)
        before = len(quiet.stderr().splitlines())
        # a second of polling: ten wake-ups that find nothing to do
        with pytest.raises(AssertionError):
            wait_for(lambda: not quiet.alive(), 1.0)
        after = quiet.stderr().splitlines()
        code, _ = terminate(quiet)
    assert code == 0
    assert len(after) == before, after[before:]
    records = [json.loads(line) for line in after]
    [finished] = [r for r in records if r["message"] == "finished processing vectorizer"]
    assert (finished["items"], finished["vectorizer_id"], finished["level"]) == (2, vid, "info")

    with daemon(db_url, *flags, "--log-level", "debug", env=worker_env(fake_openai)) as chatty:
        wait_for_stderr(chatty, '"items": 0', 10)
        records = [json.loads(line) for line in chatty.stderr().splitlines()]
        terminate(chatty)
    idle = [r for r in records if r["message"] == "finished processing vectorizer"]
    assert idle and all(r["level"] == "debug" and r["items"] == 0 for r in idle)
    running = [r for r in records if r["message"] == "running vectorizer"]
    assert running and all(r["vectorizer_id"] == vid and r["level"] == "debug" for r in running)
