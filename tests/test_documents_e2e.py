"""Documents end to end: the real worker CLI as a subprocess loads files, HTTP and S3 URIs
and bytea columns, parses them in parser processes and stores the chunks; failures end in
the failed queue with `loading failed` / parsing error rows.

Docling's model cache is an empty directory and the hub is offline (conftest), so images
take the "models missing" path: a tested error, never a download.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from tests import document_samples as samples
from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    create_source,
    create_vectorizer,
    error_rows,
    failed_rows,
    queue_count,
    run_ok,
    store_rows,
    worker_env,
)

BUCKET = "e2e-docs"
ROLE_ARN = "arn:aws:iam::123456789012:role/vectorizer-e2e"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory of sample documents, served over HTTP by `http_url`."""
    folder = tmp_path / "files"
    folder.mkdir()
    for file_type, name in [
        ("pdf", "report.pdf"),
        ("docx", "notes.docx"),
        ("html", "page.html"),
        ("epub", "book.epub"),
        ("md", "guide.md"),
        ("pptx", "deck.pptx"),
    ]:
        (folder / name).write_bytes(samples.build(file_type))
    return folder


@pytest.fixture
def http_url(files: Path) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(files)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def _env(fake: FakeOpenAI, tmp_path: Path, **extra: str) -> dict[str, str]:
    return worker_env(
        fake,
        VECTORIZER_DOCLING_CACHE_DIR=str(tmp_path / "no-models"),
        VECTORIZER_RETRY_BACKOFF="0s",
        **extra,
    )


def _chunks_by_id(conn: psycopg.Connection, table: str = "docs_embedding_store") -> dict[int, str]:
    stored: dict[int, str] = {}
    for key, _, chunk, _ in store_rows(conn, table):
        stored[key] = stored.get(key, "") + chunk
    return stored


def _assert_words(text: str, file_type: str) -> None:
    for word in samples.words(file_type):
        assert word.lower() in text.lower(), f"{word!r} missing from {file_type}: {text!r}"


def test_loading_uri_reads_paths_file_uris_http_and_s3(
    conn: psycopg.Connection,
    db_url: str,
    fake: FakeOpenAI,
    files: Path,
    http_url: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    boto3.client("s3").put_object(Bucket=BUCKET, Key="dir/guide.md", Body=samples.markdown())
    rows = [
        (1, "pdf", str(files / "report.pdf")),
        (2, "docx", (files / "notes.docx").as_uri()),
        (3, "html", f"{http_url}/page.html"),
        (4, "epub", f"{http_url}/book.epub?download=1"),
        (5, "md", f"s3://{BUCKET}/dir/guide.md"),
        (6, "none", None),
    ]
    create_source(conn, rows=rows)
    vid = create_vectorizer(conn, loading="ai.loading_uri('body')")

    run_ok(db_url, env=_env(fake, tmp_path, AWS_ENDPOINT_URL=s3_endpoint))

    stored = _chunks_by_id(conn)
    assert sorted(stored) == [1, 2, 3, 4, 5]  # the NULL URI has nothing to embed
    for key, file_type, _ in rows[:5]:
        _assert_words(stored[key], file_type)
    assert stored[1].startswith("# Aardvark report")  # Markdown, not bare text
    assert queue_count(conn, vid) == 0
    assert error_rows(conn, vid) == []


def test_loading_uri_through_an_assumed_role(
    conn: psycopg.Connection,
    db_url: str,
    fake: FakeOpenAI,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    client = boto3.client("s3")
    client.put_object(Bucket=BUCKET, Key="a.pdf", Body=samples.pdf())
    client.put_object(Bucket=BUCKET, Key="b.html", Body=samples.html())
    create_source(conn, rows=[(1, "a", f"s3://{BUCKET}/a.pdf"), (2, "b", f"s3://{BUCKET}/b.html")])
    vid = create_vectorizer(conn, loading=f"ai.loading_uri('body', aws_role_arn => '{ROLE_ARN}')")

    result = run_ok(
        db_url,
        env=_env(
            fake,
            tmp_path,
            AWS_ENDPOINT_URL=s3_endpoint,
            AWS_ASSUME_ROLE_EXTERNAL_ID="e2e-tenant",
        ),
    )

    assert f"assumed role {ROLE_ARN}" in result.stderr
    stored = _chunks_by_id(conn)
    _assert_words(stored[1], "pdf")
    _assert_words(stored[2], "html")
    assert queue_count(conn, vid) == 0


def test_missing_and_oversize_documents_end_in_the_failed_queue(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, files: Path, tmp_path: Path
) -> None:
    missing = files / "missing.pdf"
    rows = [
        (1, "ok", str(files / "guide.md")),
        (2, "missing", str(missing)),
        (3, "big", str(files / "deck.pptx")),
    ]
    create_source(conn, rows=rows)
    vid = create_vectorizer(conn, loading="ai.loading_uri('body', retries => 1)")

    run_ok(db_url, env=_env(fake, tmp_path, VECTORIZER_MAX_DOCUMENT_BYTES="16KiB"))

    _assert_words(_chunks_by_id(conn)[1], "md")
    assert failed_rows(conn, vid) == [(2, "loading"), (3, "loading")]
    assert queue_count(conn, vid) == 0
    errors = [
        (details["pk"]["id"], message, details) for _, message, details in error_rows(conn, vid)
    ]
    for _, message, details in errors:
        assert message == "loading failed"
        assert details["loader"] == "uri"
        assert details["step"] == "loading"
    missing_errors = [details for key, _, details in errors if key == 2]
    # attempt 1 is requeued (retryable), attempt 2 exhausts `retries => 1`
    assert [(d["attempts"], d["is_retryable"]) for d in missing_errors] == [(1, True), (2, False)]
    assert str(missing) in missing_errors[0]["error_reason"]
    [oversize] = [details for key, _, details in errors if key == 3]
    # too large will not change by retrying: failed at once
    assert (oversize["attempts"], oversize["is_retryable"]) == (1, False)
    assert "larger than the 16 KiB limit" in oversize["error_reason"]
    assert "VECTORIZER_MAX_DOCUMENT_BYTES" in oversize["error_reason"]


def test_bytea_column_of_mixed_documents(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    kinds = ["pdf", "docx", "pptx", "xlsx", "html", "epub", "md", "txt", "png"]
    conn.execute("create table files (id int primary key, data bytea)")
    with conn.cursor() as cursor:
        cursor.executemany(
            "insert into files values (%s, %s)",
            [(index, samples.build(kind)) for index, kind in enumerate(kinds, start=1)],
        )
        cursor.execute("insert into files values (%s, null)", (len(kinds) + 1,))
    vid = create_vectorizer(conn, "files", loading="ai.loading_column('data', retries => 0)")

    run_ok(db_url, env=_env(fake, tmp_path))

    stored = _chunks_by_id(conn, "files_embedding_store")
    png_id = kinds.index("png") + 1
    assert sorted(stored) == [key for key in range(1, len(kinds) + 1) if key != png_id]
    for key, kind in enumerate(kinds, start=1):
        if kind != "png":
            _assert_words(stored[key], kind)
    # an image needs docling's layout and OCR models, which this machine does not have
    assert failed_rows(conn, vid) == [(png_id, "parsing")]
    [(_, message, details)] = error_rows(conn, vid)
    assert message == "parsing failed"
    assert details["pk"] == {"id": png_id}
    assert "vectorizer download-models" in details["error_reason"]
    assert "the layout model" in details["error_reason"]


def test_download_models_offline_fails_fast_and_says_why(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vectorizer", "download-models", "--cache-dir", str(tmp_path)],
        env=worker_env(HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "downloading models failed" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr
