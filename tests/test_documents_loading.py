"""`loading_uri` against real files, a real HTTP server and a local S3 (moto's server mode),
plus bytea columns. No database: the loader is called directly, the way the pipeline does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests import document_samples as samples
from vectorizer.config import ColumnLoading, UriLoading
from vectorizer.errors import RowError, VectorizerError
from vectorizer.stages import uri_loading
from vectorizer.stages.loading import Document, make_loader
from vectorizer.stages.uri_loading import UriLoader, redact_uri, redact_urls


@pytest.fixture(autouse=True)
def quick_transient_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uri_loading, "TRANSIENT_BACKOFF_SECONDS", 0.01)


def _loader(**config: Any) -> UriLoader:
    loader = make_loader(UriLoading(implementation="uri", column_name="uri", **config))
    assert isinstance(loader, UriLoader)
    return loader


async def _load(uri: Any, **config: Any) -> Any:
    return await _loader(**config).load({"id": 1, "uri": uri})


async def _load_error(uri: Any, **config: Any) -> RowError:
    with pytest.raises(RowError) as caught:
        await _load(uri, **config)
    assert caught.value.step == "loading"
    return caught.value


# --- local files -----------------------------------------------------------------------------


async def test_local_path_and_file_uri(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    content = samples.pdf()
    path.write_bytes(content)
    for uri in (str(path), path.as_uri()):
        document = await _load(uri)
        assert isinstance(document, Document)
        assert document.content == content
        assert document.file_type == "pdf"


async def test_extension_decides_for_markdown(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(samples.markdown())
    document = await _load(str(path))
    assert document.file_type == "md"
    assert document.source == str(path)


async def test_null_and_empty_uri_mean_no_document() -> None:
    assert await _load(None) == ""
    assert await _load("") == ""
    assert await _load("   ") == ""


async def test_empty_file_means_no_document(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert await _load(str(path)) == ""


async def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pdf"
    error = await _load_error(str(missing))
    assert str(missing) in error.message
    assert "No such file" in error.message
    assert error.retryable


async def test_non_text_value_and_missing_column() -> None:
    error = await _load_error(42)
    assert "holds a int value" in error.message
    with pytest.raises(VectorizerError, match='no column "uri"'):
        await _loader().load({"id": 1})


async def test_oversize_document_names_the_limit_and_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORIZER_MAX_DOCUMENT_BYTES", "1KiB")
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 1025)
    error = await _load_error(str(path))
    assert "larger than the 1 KiB limit" in error.message
    assert "VECTORIZER_MAX_DOCUMENT_BYTES" in error.message
    assert not error.retryable
    path.write_bytes(b"x" * 1024)
    assert (await _load(str(path))).content == b"x" * 1024


def test_invalid_size_setting_is_a_vectorizer_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTORIZER_MAX_DOCUMENT_BYTES", "huge")
    with pytest.raises(VectorizerError, match="VECTORIZER_MAX_DOCUMENT_BYTES='huge'"):
        _loader()


# --- HTTP ------------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes = b""
    content_type: str | None = None
    status: int = 200
    failures_first: int = 0  # answer 503 this many times before succeeding
    endless: bool = False  # stream without end
    delay: float = 0.0
    hits: int = 0


@dataclass
class HttpServer:
    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    streamed: int = 0


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    state = HttpServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = state.routes.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(404, "no such document")
                return
            route.hits += 1
            if route.delay:
                time.sleep(route.delay)
            if route.hits <= route.failures_first:
                self.send_error(503, "try again")
                return
            self.send_response(route.status)
            if route.content_type:
                self.send_header("Content-Type", route.content_type)
            if route.endless:
                self.end_headers()
                self._stream_forever()
                return
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def _stream_forever(self) -> None:
            chunk = b"y" * 65536
            try:
                # bounded so a broken client can never keep this thread busy for long
                for _ in range(16384):
                    self.wfile.write(chunk)
                    state.streamed += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


async def test_http_document(http_server: HttpServer) -> None:
    content = samples.docx()  # made once: a .docx carries the time it was written
    http_server.routes["/files/guide.docx"] = Route(content)
    document = await _load(f"{http_server.url}/files/guide.docx?version=3")
    assert document.content == content
    assert document.file_type == "docx"


async def test_http_content_type_is_the_last_hint(http_server: HttpServer) -> None:
    http_server.routes["/doc"] = Route(samples.markdown(), "text/markdown; charset=utf-8")
    document = await _load(f"{http_server.url}/doc")
    assert document.file_type == "md"
    assert document.content_type == "text/markdown; charset=utf-8"


async def test_http_404_names_the_uri_without_credentials(http_server: HttpServer) -> None:
    uri = f"http://alice:s3cr3t@{http_server.url[7:]}/gone.pdf?X-Amz-Signature=abcdef&v=1"
    error = await _load_error(uri)
    assert "404" in error.message
    assert "/gone.pdf" in error.message
    assert "s3cr3t" not in error.message
    assert "alice" not in error.message
    assert "abcdef" not in error.message
    assert "v=1" in error.message


async def test_http_503_is_retried_in_place(http_server: HttpServer) -> None:
    route = Route(samples.html(), "text/html")
    route.failures_first = 2
    http_server.routes["/flaky.html"] = route
    document = await _load(f"{http_server.url}/flaky.html")
    assert document.file_type == "html"
    assert route.hits == 3


async def test_http_503_that_persists_becomes_a_row_error(http_server: HttpServer) -> None:
    route = Route(samples.html(), failures_first=100)
    http_server.routes["/down.html"] = route
    error = await _load_error(f"{http_server.url}/down.html")
    assert "503" in error.message
    assert route.hits == uri_loading.TRANSIENT_ATTEMPTS


async def test_http_stops_reading_past_the_limit(
    http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORIZER_MAX_DOCUMENT_BYTES", "2MiB")
    http_server.routes["/endless.txt"] = Route(endless=True)
    started = time.monotonic()
    error = await _load_error(f"{http_server.url}/endless.txt")
    assert "larger than the 2 MiB limit" in error.message
    assert time.monotonic() - started < 10
    assert http_server.streamed < 64 * 1024 * 1024  # far from the whole stream


async def test_slow_server_hits_the_load_timeout(
    http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORIZER_LOAD_TIMEOUT", "0.3")
    http_server.routes["/slow.txt"] = Route(b"late", delay=1.0)
    started = time.monotonic()
    error = await _load_error(f"{http_server.url}/slow.txt")
    assert time.monotonic() - started < 1.5
    assert "took longer than 0.3s" in error.message
    assert "VECTORIZER_LOAD_TIMEOUT" in error.message


async def test_loading_does_not_block_the_event_loop(http_server: HttpServer) -> None:
    http_server.routes["/a.txt"] = Route(b"alpha", delay=0.3)
    http_server.routes["/b.txt"] = Route(b"beta", delay=0.3)
    started = time.monotonic()
    first, second = await asyncio.gather(
        _load(f"{http_server.url}/a.txt"), _load(f"{http_server.url}/b.txt")
    )
    assert (first.content, second.content) == (b"alpha", b"beta")
    assert time.monotonic() - started < 0.55  # the two waits overlapped


def test_redaction_of_uris_and_messages() -> None:
    assert redact_uri("https://u:p@h/x.pdf?X-Amz-Credential=AKIA&X-Amz-Date=1") == (
        "https://h/x.pdf?X-Amz-Credential=REDACTED&X-Amz-Date=1"
    )
    assert redact_uri("/plain/path.pdf") == "/plain/path.pdf"
    text = "404 for url: https://bob:pw@h/a?sig=zzz&token=ttt&page=2 (retry)"
    cleaned = redact_urls(text)
    assert "pw" not in cleaned and "zzz" not in cleaned and "ttt" not in cleaned
    assert "page=2" in cleaned and cleaned.endswith("(retry)")


# --- S3 (moto) -------------------------------------------------------------------------------

BUCKET = "docs-bucket"
ROLE_ARN = "arn:aws:iam::123456789012:role/vectorizer-reader"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    uri_loading.clear_s3_clients()
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        uri_loading.clear_s3_clients()
        server.stop()


async def test_s3_document(s3: Any) -> None:
    content = samples.pdf()
    s3.put_object(Bucket=BUCKET, Key="reports/q3.pdf", Body=content)
    document = await _load(f"s3://{BUCKET}/reports/q3.pdf")
    assert document.content == content
    assert document.file_type == "pdf"


async def test_s3_missing_key_and_bucket(s3: Any) -> None:
    error = await _load_error(f"s3://{BUCKET}/nope.pdf")
    assert f"s3://{BUCKET}/nope.pdf" in error.message
    assert "NoSuchKey" in error.message
    error = await _load_error("s3://no-such-bucket-here/x.pdf")
    assert "NoSuchBucket" in error.message


@pytest.fixture
def assume_role_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The AssumeRole requests the loader sends, seen through botocore's event hooks."""
    calls: list[dict[str, Any]] = []
    real = uri_loading._new_session

    def spying_session() -> Any:
        session = real()
        session.events.register(
            "provide-client-params.sts.AssumeRole",
            lambda params, **_: calls.append(dict(params)),
        )
        return session

    monkeypatch.setattr(uri_loading, "_new_session", spying_session)
    return calls


async def test_s3_through_an_assumed_role_cached_until_near_expiry(
    s3: Any, assume_role_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ASSUME_ROLE_EXTERNAL_ID", "tenant-42")
    s3.put_object(Bucket=BUCKET, Key="a.html", Body=samples.html())
    s3.put_object(Bucket=BUCKET, Key="b.md", Body=samples.markdown())
    loader = _loader(aws_role_arn=ROLE_ARN)

    first = await loader.load({"uri": f"s3://{BUCKET}/a.html"})
    second = await loader.load({"uri": f"s3://{BUCKET}/b.md"})
    assert (first.file_type, second.file_type) == ("html", "md")
    assert assume_role_calls == [
        {
            "RoleArn": ROLE_ARN,
            "RoleSessionName": uri_loading.ROLE_SESSION_NAME,
            "ExternalId": "tenant-42",
        }
    ]

    # credentials about to lapse are renewed before the next read
    uri_loading._S3_CLIENTS._roles[ROLE_ARN].expires = datetime.now(UTC)
    await loader.load({"uri": f"s3://{BUCKET}/a.html"})
    assert len(assume_role_calls) == 2


async def test_s3_role_without_external_id(
    s3: Any, assume_role_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ASSUME_ROLE_EXTERNAL_ID", raising=False)
    s3.put_object(Bucket=BUCKET, Key="a.txt", Body=samples.text())
    assert (await _load(f"s3://{BUCKET}/a.txt", aws_role_arn=ROLE_ARN)).file_type == "txt"
    assert "ExternalId" not in assume_role_calls[0]


# --- bytea columns -------------------------------------------------------------------------


@pytest.mark.parametrize("file_type", ["pdf", "docx", "pptx", "xlsx", "epub", "html", "png"])
async def test_bytea_column_yields_a_typed_document(file_type: str) -> None:
    loader = make_loader(ColumnLoading(implementation="column", column_name="data"))
    content = samples.build(file_type)
    document = await loader.load({"data": memoryview(content)})
    assert document == Document(content=content, file_type=file_type)
