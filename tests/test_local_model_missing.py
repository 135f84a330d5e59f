"""A local model name that is neither on disk nor in the HuggingFace cache fails at once, as a
vectorizer-level error that names `vectorizer download-models`, instead of spending minutes on
the hub libraries' download retries: with HF_HUB_OFFLINE, with no network (a closed port as
the hub), and with a hub that does not know the name (a local HTTP server answering 401 as
huggingface.co does). Real worker CLI, real Postgres; nothing leaves the machine."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.worker_helpers import (
    create_source,
    create_vectorizer,
    doc_rows,
    error_rows,
    failed_rows,
    queue_rows,
    run_python,
    run_worker,
    worker_env,
)

TYPO = "sentence-transformers/all-MiniLM-L6-v3"
HINT = (
    f"model '{TYPO}' is not in the local cache; check the name or run "
    f"`vectorizer download-models {TYPO}`"
)
# the worker's start (torch is never imported on this path) and one error: well under the
# minutes the hub's retries took
FAST = 30.0


class _UnknownModels(http.server.BaseHTTPRequestHandler):
    """Answers like the hub does for a repository it does not have (or may not show)."""

    requests: list[str] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        body = b'{"error":"Repository Not Found"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _UnknownModels)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _UnknownModels.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _typo_vectorizer(conn: psycopg.Connection) -> int:
    create_source(conn, rows=doc_rows(3))
    return create_vectorizer(
        conn, embedding=f"ai.embedding_sentence_transformers('{TYPO}', 384)", dimensions=384
    )


def _run(db_url: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_worker(db_url, env=worker_env(**env), timeout=120)
    return result, time.monotonic() - started


def _assert_nothing_charged(conn: psycopg.Connection, vid: int) -> str:
    assert [row[:2] for row in queue_rows(conn, vid)] == [(1, 0), (2, 0), (3, 0)]
    assert failed_rows(conn, vid) == []
    [(_, message, details)] = error_rows(conn, vid)
    assert message == "embedding provider failed"
    assert details["provider"] == "sentence_transformers"
    return str(details["error_reason"])


def test_offline_a_misspelled_model_fails_at_once_naming_download_models(
    conn: psycopg.Connection, db_url: str
) -> None:
    vid = _typo_vectorizer(conn)

    result, seconds = _run(db_url, HF_HUB_OFFLINE="1")

    assert result.returncode == 1, result.stderr
    assert seconds < FAST, (seconds, result.stderr)
    reason = _assert_nothing_charged(conn, vid)
    assert reason.startswith(HINT) and "HF_HUB_OFFLINE is set" in reason
    assert result.stderr.count(HINT) == 1, result.stderr  # said once, not per retry
    assert "Retrying in" not in result.stderr

    # the hint is a command that runs: offline it fails at once too, naming the model
    fetch = run_python(
        "-m", "vectorizer", "download-models", TYPO, env=worker_env(HF_HUB_OFFLINE="1")
    )
    assert fetch.returncode == 1
    assert f"error: {TYPO}: " in fetch.stderr


def test_without_network_a_misspelled_model_fails_at_once(
    conn: psycopg.Connection, db_url: str
) -> None:
    vid = _typo_vectorizer(conn)
    nowhere = f"http://127.0.0.1:{_closed_port()}"

    result, seconds = _run(db_url, HF_HUB_OFFLINE="", TRANSFORMERS_OFFLINE="", HF_ENDPOINT=nowhere)

    assert result.returncode == 1, result.stderr
    assert seconds < FAST, (seconds, result.stderr)
    reason = _assert_nothing_charged(conn, vid)
    assert reason.startswith(HINT) and f"Hugging Face ({nowhere}) can't be reached" in reason
    assert "Retrying in" not in result.stderr


def test_a_name_the_hub_does_not_know_fails_at_once(
    conn: psycopg.Connection, db_url: str, hub: str
) -> None:
    vid = _typo_vectorizer(conn)

    result, seconds = _run(db_url, HF_HUB_OFFLINE="", TRANSFORMERS_OFFLINE="", HF_ENDPOINT=hub)

    assert result.returncode == 1, result.stderr
    assert seconds < FAST, (seconds, result.stderr)
    reason = _assert_nothing_charged(conn, vid)
    assert "does not know it; check the name" in reason
    assert _UnknownModels.requests == [f"/api/models/{TYPO}"]  # one question, no retries


LIBRARY_WARNINGS = """
import logging
from vectorizer.embedders.sentence_transformers import load_model
from vectorizer.observability.logging import configure_logging

configure_logging("INFO", "text")
load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")  # imports the libraries
from transformers.utils import logging as transformers_logging

transformers_logging.get_logger("transformers.modeling_utils").warning("a transformers warning")
logging.getLogger("huggingface_hub.utils._http").warning("a hub warning")
logging.getLogger("sentence_transformers.models").warning("a sentence-transformers warning")
"""


def test_library_warnings_are_printed_once_through_the_worker_log() -> None:
    result = run_python("-c", LIBRARY_WARNINGS, env=worker_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    for library, text in [
        ("transformers.modeling_utils", "a transformers warning"),
        ("huggingface_hub.utils._http", "a hub warning"),
        ("sentence_transformers.models", "a sentence-transformers warning"),
    ]:
        lines = [line for line in result.stderr.splitlines() if text in line]
        assert len(lines) == 1, result.stderr
        assert f" WARNING {library}: {text}" in lines[0]  # the worker's own format
