"""vectorizer/embedders/http_transport.py over real sockets: raw asyncio servers in the test's
own event loop say exactly what goes on the wire, and count the connections they accept."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from vectorizer.embedders.http_transport import AsyncioTransport
from vectorizer.embedders.openai import http_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An HTTP server on 127.0.0.1 whose `handler` speaks bytes on each accepted connection."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.closed = 0  # connections whose client end closed or vanished
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self.closed += 1


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request's head and body (Content-Length or chunked); None at end of connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    fields = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    if fields.get(b"transfer-encoding") == b"chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return head, body
    return head, await reader.readexactly(int(fields.get(b"content-length", b"0")))


def answer(body: bytes = b"ok", *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def each_request(respond: Callable[[bytes, bytes], bytes]) -> Handler:
    """A keep-alive handler: `respond(head, body)` answers every request on the connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            writer.write(respond(*request))
            await writer.drain()

    return handler


def replying(*responses: bytes, then_close: bool = False) -> Handler:
    """A handler answering a connection's requests with `responses` in turn, once each."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            if await read_request(reader) is None:
                return
            writer.write(response)
            await writer.drain()
        if then_close:
            return
        await reader.read()  # hold the connection until the client closes it

    return handler


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Wait for `condition` (the other end of a socket acts on its own time)."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


@pytest.fixture
async def transport() -> AsyncIterator[AsyncioTransport]:
    transport = AsyncioTransport()
    yield transport
    await transport.aclose()


def client(transport: AsyncioTransport, server: RawServer, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, base_url=server.url, **options)


# --- framing ---------------------------------------------------------------------------------


async def test_content_length_body_and_raw_headers(transport: AsyncioTransport) -> None:
    payload = bytes(range(256)) * 8000  # ~2 MB: arrives in many reads
    response = answer(payload, "X-Dup: one", "x-dup: two", "Content-Type: application/octet-stream")
    async with RawServer(each_request(lambda head, body: response)) as server:
        got = await client(transport, server).get("/")
    assert got.status_code == 200
    assert got.reason_phrase == "OK"
    assert got.http_version == "HTTP/1.1"
    assert got.content == payload
    assert got.headers.get_list("x-dup") == ["one", "two"]
    assert [name for name, _ in got.headers.raw][:2] == [b"Content-Length", b"X-Dup"]


async def test_chunked_body_with_extensions_and_trailers(transport: AsyncioTransport) -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b"1\r\n \r\n"
        b"0005\r\nworld\r\n"
        b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    async with RawServer(each_request(lambda head, body: wire)) as server:
        http = client(transport, server)
        first = await http.get("/")
        second = await http.get("/")  # the connection survives a chunked answer
    assert first.content == second.content == b"hello world"
    assert server.connections == 1


async def test_chunked_body_split_across_reads(transport: AsyncioTransport) -> None:
    chunks = [bytes([65 + i]) * (1000 * i + 1) for i in range(20)]
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks
    )
    wire += b"0\r\n\r\n"

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for start in range(0, len(wire), 777):  # boundaries fall everywhere, CRLFs included
            writer.write(wire[start : start + 777])
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()

    async with RawServer(dribble) as server:
        got = await client(transport, server).get("/")
    assert got.content == b"".join(chunks)


async def test_gzip_body_is_decoded_by_httpx(transport: AsyncioTransport) -> None:
    text = b'{"data": "' + b"x" * 50_000 + b'"}'
    response = answer(gzip.compress(text), "Content-Encoding: gzip")
    async with RawServer(each_request(lambda head, body: response)) as server:
        got = await client(transport, server).get("/")
    assert got.content == text
    assert got.json()["data"] == "x" * 50_000


async def test_body_until_the_server_closes(transport: AsyncioTransport) -> None:
    async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"part two")

    async with RawServer(until_eof) as server:
        http = client(transport, server)
        got = await http.get("/")
        again = await http.get("/")
    assert got.content == again.content == b"part one, part two"
    assert server.connections == 2
    assert transport.idle_connections == 0


async def test_interim_responses_are_skipped(transport: AsyncioTransport) -> None:
    wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    wire += answer(b"final", status="201 Created")
    async with RawServer(each_request(lambda head, body: wire)) as server:
        got = await client(transport, server).post("/", content=b"x")
    assert (got.status_code, got.content) == (201, b"final")
    assert "link" not in got.headers


async def test_head_and_204_have_no_body(transport: AsyncioTransport) -> None:
    def respond(head: bytes, body: bytes) -> bytes:
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    async with RawServer(each_request(respond)) as server:
        http = client(transport, server)
        head = await http.head("/")
        empty = await http.delete("/")
    assert (head.headers["content-length"], head.content) == ("1000", b"")
    assert (empty.status_code, empty.content) == (204, b"")
    assert server.connections == 1


async def test_malformed_answers_are_protocol_errors(transport: AsyncioTransport) -> None:
    for wire in (
        b"HTTP/1.1 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
    ):
        async with RawServer(replying(wire)) as server:
            with pytest.raises(httpx.RemoteProtocolError):
                await client(transport, server).get("/")
        assert transport.idle_connections == 0, wire


async def test_bytes_past_the_body_are_dropped_with_the_connection(
    transport: AsyncioTransport,
) -> None:
    """Bytes past Content-Length, in the body's last read or alone in a later one, mean the
    next answer could not be told apart: the body is exact and the connection is not pooled."""

    async def in_two_writes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab")
        await writer.drain()
        await asyncio.sleep(0.05)  # the head and the body's start arrive first
        writer.write(b"cHTTP/1.1 200 OK\r\n")
        await writer.drain()
        await reader.read()

    for handler in (replying(answer(b"abc") + b"HTTP/1.1 200 OK\r\n"), in_two_writes):
        async with RawServer(handler) as server:
            assert (await client(transport, server).get("/")).content == b"abc"
            assert transport.idle_connections == 0


async def test_truncated_body_is_a_protocol_error(transport: AsyncioTransport) -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
    async with RawServer(replying(wire, then_close=True)) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="received 9 bytes, expected 100"):
            await client(transport, server).get("/")


async def test_oversized_head_is_a_protocol_error(transport: AsyncioTransport) -> None:
    wire = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 100_000
    async with RawServer(replying(wire)) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="head is over"):
            await client(transport, server).get("/")


# --- connections -----------------------------------------------------------------------------


async def test_keep_alive_uses_one_connection(transport: AsyncioTransport) -> None:
    async with RawServer(each_request(lambda head, body: answer(body))) as server:
        http = client(transport, server)
        bodies = [(await http.post("/", content=b"n%d" % i)).content for i in range(10)]
    assert bodies == [b"n%d" % i for i in range(10)]
    assert server.connections == 1
    assert transport.idle_connections == 1


async def test_concurrent_requests_get_their_own_connections(
    transport: AsyncioTransport,
) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            await asyncio.sleep(0.05)
            writer.write(answer(request[1]))

    async with RawServer(slow) as server:
        http = client(transport, server)
        answers = await asyncio.gather(*(http.post("/", content=b"%d" % i) for i in range(4)))
        again = await asyncio.gather(*(http.post("/", content=b"%d" % i) for i in range(4)))
    assert [a.content for a in answers + again] == [b"%d" % i for i in range(4)] * 2
    assert server.connections == 4  # the second round reused the first round's four
    assert transport.idle_connections == 4


async def test_idle_connection_closed_by_the_server_is_dropped(
    transport: AsyncioTransport,
) -> None:
    async with RawServer(replying(answer(b"one"), then_close=True)) as server:
        http = client(transport, server)
        assert (await http.get("/")).content == b"one"
        await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
        assert (await http.get("/")).content == b"one"
    assert server.connections == 2


async def test_reused_connection_closed_before_answering_is_retried_once(
    transport: AsyncioTransport,
) -> None:
    # The server reads the second request and hangs up without a byte: what a keep-alive
    # timeout racing the request looks like. The request goes again on a new connection.
    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"fine"))
        await read_request(reader)

    async with RawServer(one_answer) as server:
        http = client(transport, server)
        assert (await http.get("/")).content == b"fine"
        assert (await http.get("/")).content == b"fine"
    assert server.connections == 2


async def test_new_connection_closed_before_answering_is_not_retried(
    transport: AsyncioTransport,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with RawServer(hang_up) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client(transport, server).get("/")
    assert server.connections == 1


async def test_reset_connection_is_a_read_error(transport: AsyncioTransport) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # linger 0: a RST, not a FIN

    async with RawServer(reset) as server:
        with pytest.raises(httpx.ReadError):
            await client(transport, server).get("/")


async def test_connection_close_answers_are_not_pooled(transport: AsyncioTransport) -> None:
    for response in (
        answer(b"bye", "Connection: close"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye",
    ):
        async with RawServer(replying(response)) as server:
            http = client(transport, server)
            assert (await http.get("/")).content == b"bye"
            assert transport.idle_connections == 0
            assert (await http.get("/")).content == b"bye"
        assert server.connections == 2


async def test_http_1_0_keep_alive_is_pooled(transport: AsyncioTransport) -> None:
    response = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"
    async with RawServer(each_request(lambda head, body: response)) as server:
        http = client(transport, server)
        for _ in range(3):
            assert (await http.get("/")).http_version == "HTTP/1.0"
    assert server.connections == 1


async def test_expired_idle_connections_are_not_reused() -> None:
    transport = AsyncioTransport(keepalive_expiry=0.05)
    async with RawServer(each_request(lambda head, body: answer())) as server:
        http = client(transport, server)
        await http.get("/")
        await asyncio.sleep(0.1)
        await http.get("/")
        await http.get("/")
        await transport.aclose()
    assert server.connections == 2


async def test_idle_pool_is_bounded() -> None:
    transport = AsyncioTransport(max_idle_connections=2)

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await asyncio.sleep(0.05)
            writer.write(answer())

    async with RawServer(slow) as server:
        http = client(transport, server)
        await asyncio.gather(*(http.get("/") for _ in range(5)))
        assert transport.idle_connections == 2
        await eventually(lambda: server.closed == 3)
        await asyncio.sleep(0.05)
        assert server.closed == 3
        await transport.aclose()


async def test_aclose_closes_idle_connections() -> None:
    transport = AsyncioTransport()
    async with RawServer(each_request(lambda head, body: answer())) as server:
        await client(transport, server).get("/")
        assert server.closed == 0
        await transport.aclose()
        await eventually(lambda: server.closed == 1)
        with pytest.raises(RuntimeError, match="after aclose"):
            await client(transport, server).get("/")


async def test_cancelled_request_leaves_no_connection_behind(
    transport: AsyncioTransport,
) -> None:
    hung_up = asyncio.Event()

    async def stall_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if server.connections == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")  # then nothing
            await reader.read()
            hung_up.set()
            return
        writer.write(answer(b"second"))
        await reader.read()

    async with RawServer(stall_once) as server:
        http = client(transport, server)
        request = asyncio.create_task(http.get("/"))
        await asyncio.sleep(0.1)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.wait_for(hung_up.wait(), 2)  # the half-read connection was closed
        assert transport.idle_connections == 0
        assert (await http.get("/")).content == b"second"
    assert server.connections == 2


# --- timeouts and failures to connect --------------------------------------------------------


async def test_read_timeout(transport: AsyncioTransport) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    async with RawServer(silent) as server:
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout):
            await client(transport, server, timeout=0.2).get("/")
        assert 0.19 < asyncio.get_running_loop().time() - started < 1.5
    assert transport.idle_connections == 0


async def test_read_timeout_is_per_read_not_per_response(transport: AsyncioTransport) -> None:
    # Bytes every 0.1 s for 0.6 s against a 0.3 s timeout: no gap is long enough.
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for byte in b"slowly":
            await asyncio.sleep(0.1)
            writer.write(bytes([byte]))
        await reader.read()

    async with RawServer(trickle) as server:
        got = await client(transport, server, timeout=0.3).get("/")
    assert got.content == b"slowly"


async def test_write_timeout_when_the_server_stops_reading(transport: AsyncioTransport) -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    big = b"x" * (32 << 20)  # more than the socket buffers on both ends take
    async with RawServer(deaf) as server:
        with pytest.raises(httpx.WriteTimeout):
            await client(transport, server, timeout=0.3).post("/", content=big)
    assert transport.idle_connections == 0


async def test_early_answer_to_a_body_still_being_sent(transport: AsyncioTransport) -> None:
    size = 32 << 20
    body_bytes_read: list[int] = []

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # not the body, for now
        writer.write(answer(b"too large", status="413 Content Too Large"))
        await writer.drain()
        await asyncio.sleep(0.2)
        total = 0
        try:
            while data := await reader.read(1 << 20):
                total += len(data)
        except ConnectionResetError:
            pass
        body_bytes_read.append(total)

    async with RawServer(early) as server:
        got = await client(transport, server, timeout=5).post("/", content=b"x" * size)
        assert (got.status_code, got.content) == (413, b"too large")
        assert transport.idle_connections == 0
        await eventually(lambda: bool(body_bytes_read))
    # The rest of the body was dropped with the connection, not sent to a server done with it.
    assert body_bytes_read[0] < size


async def test_large_body_is_sent_whole(transport: AsyncioTransport) -> None:
    big = bytes(range(256)) * (16 << 12)  # 16 MB: writing pauses and resumes many times
    async with RawServer(each_request(lambda head, body: answer(b"%d" % hash(body)))) as server:
        got = await client(transport, server, timeout=30).post("/", content=big)
    assert got.content == b"%d" % hash(big)


async def test_refused_connection_is_a_connect_error(transport: AsyncioTransport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_connect_timeout(transport: AsyncioTransport) -> None:
    # A listening socket whose accept queue is full drops further SYNs: connect() hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.1)
        try:
            async with httpx.AsyncClient(transport=transport, timeout=0.3) as http:
                with pytest.raises(httpx.ConnectTimeout):
                    await http.get(f"http://127.0.0.1:{port}/")
        finally:
            for filler in fillers:
                filler.close()


async def test_unknown_host_is_a_connect_error(transport: AsyncioTransport) -> None:
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://no-such-host.invalid/")


# --- requests --------------------------------------------------------------------------------


async def test_request_is_what_httpx_built(transport: AsyncioTransport) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def record(head: bytes, body: bytes) -> bytes:
        seen.append((head, body))
        return answer()

    async with RawServer(each_request(record)) as server:
        await client(transport, server).post(
            "/v1/embeddings?x=1&y=%20", content=b'{"a": 1}', headers={"X-Custom": "value"}
        )
        host = server.url.split("//")[1]
    head, body = seen[0]
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/embeddings?x=1&y=%20 HTTP/1.1"
    assert f"Host: {host}".encode() in lines
    assert b"X-Custom: value" in lines
    assert b"Content-Length: 8" in lines
    assert body == b'{"a": 1}'


async def test_streamed_body_goes_chunked(transport: AsyncioTransport) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def record(head: bytes, body: bytes) -> bytes:
        seen.append((head, body))
        return answer()

    async def parts() -> AsyncIterator[bytes]:
        yield b"first "
        yield b"second"

    async with RawServer(each_request(record)) as server:
        await client(transport, server).post("/", content=parts())
    assert b"Transfer-Encoding: chunked" in seen[0][0]
    assert seen[0][1] == b"first second"


async def test_header_injection_is_refused_without_echoing_the_value(
    transport: AsyncioTransport,
) -> None:
    async with RawServer(each_request(lambda head, body: answer())) as server:
        with pytest.raises(httpx.LocalProtocolError) as raised:
            await client(transport, server).get(
                "/", headers={"Authorization": "Bearer secret\r\nX-Evil: 1"}
            )
    assert "secret" not in str(raised.value)
    assert server.connections == 0


async def test_redirect_is_followed_by_httpx(transport: AsyncioTransport) -> None:
    def respond(head: bytes, body: bytes) -> bytes:
        if head.startswith(b"GET /old "):
            return answer(b"", "Location: /new", status="302 Found")
        return answer(b"arrived")

    async with RawServer(each_request(respond)) as server:
        got = await client(transport, server, follow_redirects=True).get("/old")
    assert (got.url.path, got.content) == ("/new", b"arrived")
    assert [r.status_code for r in got.history] == [302]
    assert server.connections == 1


# --- TLS -------------------------------------------------------------------------------------


def self_signed() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client
    context trusting it."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain reads files only; a pipe-free way is a temporary file pair.
    import tempfile

    with tempfile.NamedTemporaryFile() as cert_file, tempfile.NamedTemporaryFile() as key_file:
        cert_file.write(cert_pem)
        key_file.write(key_pem)
        cert_file.flush()
        key_file.flush()
        server.load_cert_chain(cert_file.name, key_file.name)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


async def test_https_with_a_trusted_certificate() -> None:
    server_context, client_context = self_signed()
    transport = AsyncioTransport(verify=client_context)
    payload = b"secret vectors" * 10_000
    async with RawServer(each_request(lambda h, b: answer(payload)), tls=server_context) as server:
        http = client(transport, server)
        for _ in range(3):
            assert (await http.get("/")).content == payload
        await transport.aclose()
    assert server.connections == 1


async def test_https_rejects_an_untrusted_certificate(transport: AsyncioTransport) -> None:
    server_context, _ = self_signed()
    async with RawServer(each_request(lambda h, b: answer()), tls=server_context) as server:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client(transport, server).get("/")  # certifi's roots, as httpx's default


async def test_https_without_verification() -> None:
    server_context, _ = self_signed()
    transport = AsyncioTransport(verify=False)
    async with RawServer(each_request(lambda h, b: answer(b"ok")), tls=server_context) as server:
        assert (await client(transport, server).get("/")).content == b"ok"
        await transport.aclose()


# --- the embedder's client -------------------------------------------------------------------


async def test_embedder_client_sends_through_env_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # httpx mounts no environment proxies on a client given its own transport; the
    # embedder's client must still go through HTTP_PROXY (and skip it for NO_PROXY hosts).
    seen: list[bytes] = []

    def proxy(head: bytes, body: bytes) -> bytes:
        seen.append(head.split(b"\r\n")[0])
        return answer(b"via proxy")

    async with RawServer(each_request(proxy)) as proxy_server:
        monkeypatch.setenv("HTTP_PROXY", proxy_server.url)
        monkeypatch.setenv("NO_PROXY", "direct.invalid")
        monkeypatch.delenv("VECTORIZER_HTTP_TRANSPORT", raising=False)
        async with http_client() as http:
            got = await http.get("http://api.example.invalid/v1/models")
            with pytest.raises(httpx.ConnectError):  # not proxied: the name does not resolve
                await http.get("http://direct.invalid/")
    assert got.content == b"via proxy"
    assert seen == [b"GET http://api.example.invalid/v1/models HTTP/1.1"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, AsyncioTransport),
        ("asyncio", AsyncioTransport),
        ("HTTPCore", httpx.AsyncHTTPTransport),
    ],
)
async def test_transport_choice(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: type
) -> None:
    if value is None:
        monkeypatch.delenv("VECTORIZER_HTTP_TRANSPORT", raising=False)
    else:
        monkeypatch.setenv("VECTORIZER_HTTP_TRANSPORT", value)
    async with http_client() as http:
        assert type(http._transport) is expected


async def test_unknown_transport_choice_is_logged_and_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("VECTORIZER_HTTP_TRANSPORT", "curl")
    with caplog.at_level(logging.WARNING):
        async with http_client() as http:
            assert type(http._transport) is AsyncioTransport
    assert "ignoring VECTORIZER_HTTP_TRANSPORT='curl': expected one of asyncio, httpcore" in (
        caplog.text
    )
