"""An HTTP/1.1 transport for httpx on bare asyncio: the OpenAI embedder's default.

httpx's own transport (httpcore over anyio, parsing with h11) spends ~3.5 ms of CPU on a
1.7 MB embeddings answer in per-read awaits and per-event parsing; this one keeps what the
socket hands over in an `asyncio.Protocol`, only looks for the end of the message and joins a
body's pieces once (bench/openai_http.py). httpx stays the client: it builds requests, follows
redirects, decodes `Content-Encoding` and mounts proxy transports (`proxy_mounts`); this
module moves bytes:

* one request at a time per connection; idle keep-alive connections are pooled per
  (scheme, host, port), at most `max_idle_connections` of them, each for `keepalive_expiry`
  seconds. A request that finds a reused connection closed by the server before any answer
  is sent once more on a new connection;
* a response's body is framed by Content-Length, chunked transfer coding (extensions and
  trailers read and dropped) or the end of the connection, and read whole before
  `handle_async_request` returns (the embedder wants it whole anyway);
* the timeouts are httpx's: connect, write (while the socket buffer is full), read (no byte
  for that long). There is no cap on concurrent connections, so no pool timeout: the
  embedder's driver caps requests in flight;
* failures raise httpx's exceptions as httpcore would map them; a connection that saw one,
  or whose request was cancelled, is closed rather than pooled.

No HTTP/2, no protocol upgrades (a 101 ends the connection), no proxies of its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

log = logging.getLogger(__name__)

MAX_IDLE_CONNECTIONS = 100
KEEPALIVE_EXPIRY = 5.0  # seconds, httpx's default: servers drop idle connections after a while
MAX_HEAD_BYTES = 64 * 1024  # a status line and headers (or trailers) longer than this is junk
MAX_CHUNK_LINE_BYTES = 4096
# httpcore's words for a connection that ended before any answer.
DISCONNECTED = "Server disconnected without sending a response."
CLOSE_GRACE = 0.5  # seconds aclose() waits for connections to close (a TLS goodbye)

_HEAD_END = re.compile(rb"\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]+")

# Where a response's parser is.
_HEAD, _FIXED, _CHUNK_LINE, _CHUNK_DATA, _TRAILERS, _UNTIL_EOF, _DONE = range(7)

Key = tuple[str, str, int]


class AsyncioTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over `loop.create_connection`, with a keep-alive pool; see the module doc.

    `verify` and `trust_env` mean what they mean to httpx (`verify` may be an SSLContext).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        trust_env: bool = True,
        max_idle_connections: int = MAX_IDLE_CONNECTIONS,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        self._verify = verify
        self._trust_env = trust_env
        self._ssl_context: ssl.SSLContext | None = None
        self._max_idle = max_idle_connections
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[Key, list[_Connection]] = {}
        self._idle_count = 0
        self._busy: set[_Connection] = set()
        self._closed = False

    @property
    def idle_connections(self) -> int:
        """Connections waiting in the pool for a next request."""
        return self._idle_count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the HTTP transport was used after aclose()")
        key = connection_key(request.url)
        message = encode_request(request, await request.aread())
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        connection = self._take_idle(key)
        if connection is not None:
            try:
                return await self._exchange(connection, request, message, timeouts)
            except _IdleConnectionClosed:
                log.debug("%s:%d closed the idle connection; sending again", key[1], key[2])
        connection = await self._connect(key, request, timeouts)
        return await self._exchange(connection, request, message, timeouts)

    async def aclose(self) -> None:
        self._closed = True
        connections = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        self._idle_count = 0
        for connection in connections:
            connection.close()
        for connection in self._busy:
            connection.abort()
        closing = [c.lost for c in (*connections, *self._busy) if not c.lost.done()]
        if closing:
            await asyncio.wait(closing, timeout=CLOSE_GRACE)
        for connection in connections:
            connection.abort()  # no-op unless a TLS goodbye is still pending

    async def _exchange(
        self,
        connection: _Connection,
        request: httpx.Request,
        message: bytes,
        timeouts: Mapping[str, float | None],
    ) -> httpx.Response:
        self._busy.add(connection)
        try:
            parser = await connection.exchange(
                message, request.method, timeouts.get("write"), timeouts.get("read")
            )
        except BaseException as exc:
            # Whatever state the connection is in (half-read, cancelled), it is not reusable.
            connection.abort()
            log.debug("closed the connection to %s:%d: %r", *connection.key[1:], exc)
            if connection.served and connection.nothing_received and isinstance(exc, _EOF_ERRORS):
                raise _IdleConnectionClosed from exc
            raise
        finally:
            self._busy.discard(connection)
        connection.served += 1
        # An early answer (a 413 say) can come while the request is still being sent.
        reusable = parser.keep_alive and connection.sent and not wants_close(request.headers)
        self._release(connection, reusable)
        return parser.response()

    async def _connect(
        self, key: Key, request: httpx.Request, timeouts: Mapping[str, float | None]
    ) -> _Connection:
        scheme, host, port = key
        context = self._tls_context() if scheme == "https" else None
        server_hostname = (request.extensions.get("sni_hostname") or host) if context else None
        timeout = timeouts.get("connect")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, key),
                    host,
                    port,
                    ssl=context,
                    server_hostname=server_hostname,
                )
        except TimeoutError as exc:  # before OSError: the timeout is one, and so is ETIMEDOUT
            waited = f"took longer than {timeout} s" if timeout is not None else "timed out"
            raise httpx.ConnectTimeout(
                f"connecting to {host}:{port} {waited}", request=request
            ) from exc
        except OSError as exc:  # refused, unreachable, unknown host, TLS verification
            raise httpx.ConnectError(describe(exc), request=request) from exc
        log.debug("connected to %s:%d (%s)", host, port, scheme)
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        # Made on first use: loading certifi's bundle costs ~20 ms that plain http never needs.
        if self._ssl_context is None:
            context = httpx.create_ssl_context(verify=self._verify, trust_env=self._trust_env)
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    def _take_idle(self, key: Key) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_usable = asyncio.get_running_loop().time() - self._keepalive_expiry
        while idle:
            connection = idle.pop()  # the most recently used is the likeliest to be open
            self._idle_count -= 1
            if connection.reusable(oldest_usable):
                return connection
            connection.close()
        return None

    def _release(self, connection: _Connection, reusable: bool) -> None:
        if not reusable or self._closed or self._idle_count >= self._max_idle:
            connection.close()
            return
        if connection.lost.done():
            return
        now = asyncio.get_running_loop().time()
        connection.idle_since = now
        idle = self._idle.setdefault(connection.key, [])
        # Expired ones collect at the bottom of the stack; they go when the next one arrives.
        while idle and not idle[0].reusable(now - self._keepalive_expiry):
            idle.pop(0).close()
            self._idle_count -= 1
        idle.append(connection)
        self._idle_count += 1


class _IdleConnectionClosed(Exception):
    """A reused connection ended before any byte of the answer: the server had closed it."""


# What a connection that ended before any answer raises (see _Connection.connection_lost).
_EOF_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the socket's callbacks feed the current request's parser."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: Key) -> None:
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.served = 0  # requests answered on this connection so far
        self.idle_since = 0.0
        self._parser: _ResponseParser | None = None
        self._answered: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._read_timeout: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0

    @property
    def nothing_received(self) -> bool:
        return self._parser is not None and not self._parser.received

    @property
    def sent(self) -> bool:
        """Everything written has left for the socket."""
        return self.transport is not None and not self.transport.get_write_buffer_size()

    def reusable(self, idle_after: float) -> bool:
        transport = self.transport
        return (
            not self.lost.done()
            and transport is not None
            and not transport.is_closing()
            and self.idle_since >= idle_after
        )

    def close(self) -> None:
        if self.transport is None:
            return
        if self.sent:
            self.transport.close()
        else:  # the rest of a request already answered: flushing it could wait forever
            self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def exchange(
        self, message: bytes, method: str, write_timeout: float | None, read_timeout: float | None
    ) -> _ResponseParser:
        """Send one request and wait for its whole answer."""
        assert self.transport is not None
        parser = self._parser = _ResponseParser(method == "HEAD")
        answered = self._answered = self.loop.create_future()
        if self.lost.done() or self.transport.is_closing():
            self._answered = None
            raise httpx.RemoteProtocolError(DISCONNECTED)
        self.transport.write(message)
        if self._paused:
            try:
                await self._drain(write_timeout)
            except BaseException:
                self._answered = None
                raise
        if read_timeout is not None and not answered.done():
            self._read_timeout = read_timeout
            self._last_data = self.loop.time()
            self._timer = self.loop.call_at(self._last_data + read_timeout, self._check_timeout)
        try:
            await answered
        finally:
            # Past this point nothing awaits the future: a late failure must not be set on it.
            self._answered = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._parser = None
        return parser

    async def _drain(self, timeout: float | None) -> None:
        # The answer may come (or the connection end) before the server read everything.
        assert self._answered is not None
        try:
            async with asyncio.timeout(timeout):
                while self._paused and not self._answered.done():
                    self._drained = self.loop.create_future()
                    await self._drained
        except TimeoutError:
            raise httpx.WriteTimeout(f"sending the request took longer than {timeout} s") from None

    def _check_timeout(self) -> None:
        assert self._read_timeout is not None
        due = self._last_data + self._read_timeout
        if self.loop.time() + 0.001 < due:  # data came meanwhile: wait out the rest
            self._timer = self.loop.call_at(due, self._check_timeout)
            return
        self._timer = None
        self._finish(httpx.ReadTimeout(f"no data from the server for {self._read_timeout} s"))

    def _finish(self, error: Exception | None) -> None:
        answered = self._answered
        if answered is not None and not answered.done():
            if error is None:
                answered.set_result(None)
            else:
                answered.set_exception(error)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        parser = self._parser
        if parser is None or parser.phase == _DONE:
            # Bytes nobody asked for (after an answer, or on an idle connection): the stream
            # can no longer be trusted to start at the next answer.
            log.debug("unexpected data from %s:%d; closing", *self.key[1:])
            self.abort()
            return
        try:
            if parser.feed(data):
                self._finish(None)
        except httpx.RemoteProtocolError as exc:
            self._finish(exc)

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost decides what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        parser = self._parser
        if parser is None or parser.phase == _DONE:
            self._wake_writer()
            return
        if exc is None and parser.end_of_stream():
            self._finish(None)
        elif exc is not None:
            self._finish(httpx.ReadError(describe(exc)))
        elif not parser.received:
            self._finish(httpx.RemoteProtocolError(DISCONNECTED))
        else:
            self._finish(parser.truncated())

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()


class _ResponseParser:
    """One response, read from the bytes as they arrive; skips 1xx interim answers."""

    def __init__(self, head_request: bool) -> None:
        self.buffer = bytearray()
        self.received = 0  # bytes so far (the buffer sheds consumed chunks)
        self.phase = _HEAD
        self.keep_alive = False
        self._head_request = head_request
        self._pos = 0  # where parsing resumes in `buffer`
        self._scan = 0  # where the search for the end of the head resumes
        self._length = 0  # with _FIXED: the body's length
        # With _FIXED: the body's pieces as they arrived, joined once at the end (appending
        # them to one bytearray copied a 3 MB answer ~3 times over as it grew).
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._chunk = 0  # with _CHUNK_DATA: the chunk's size
        self._chunks = bytearray()
        self._version = b"HTTP/1.1"
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._content = b""

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once the response is complete."""
        self.received += len(data)
        if self.phase == _FIXED:  # the hot path: a large body arriving in pieces
            self._body.append(data)
            self._body_bytes += len(data)
            return self._body_bytes >= self._length and self._complete_body()
        self.buffer += data
        return self._advance()

    def end_of_stream(self) -> bool:
        """The server closed the connection: True when that ends the response."""
        if self.phase != _UNTIL_EOF:
            return False
        with memoryview(self.buffer) as view:
            self._content = bytes(view[self._pos :])
        self._finish(False)
        return True

    def truncated(self) -> httpx.RemoteProtocolError:
        if self.phase == _FIXED:
            return httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body: "
                f"received {self._body_bytes} bytes, expected {self._length}"
            )
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message"
            + (" head" if self.phase == _HEAD else " body: incomplete chunked read")
        )

    def response(self) -> httpx.Response:
        return httpx.Response(
            self._status,
            headers=self._headers,
            stream=httpx.ByteStream(self._content),
            extensions={"http_version": self._version, "reason_phrase": self._reason},
        )

    def _advance(self) -> bool:
        while True:
            phase = self.phase
            if phase == _FIXED:
                self._start_body()
                return self._body_bytes >= self._length and self._complete_body()
            if phase == _HEAD:
                progressed = self._read_head()
            elif phase == _CHUNK_LINE:
                progressed = self._read_chunk_line()
            elif phase == _CHUNK_DATA:
                progressed = self._read_chunk_data()
            elif phase == _TRAILERS:
                progressed = self._read_trailers()
            else:  # _UNTIL_EOF waits for connection_lost; _DONE is done
                return phase == _DONE
            if not progressed:
                return False

    def _read_head(self) -> bool:
        found = _HEAD_END.search(self.buffer, max(self._pos, self._scan))
        if found is None:
            if len(self.buffer) - self._pos > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError(
                    f"the response head is over {MAX_HEAD_BYTES} bytes without ending"
                )
            self._scan = max(self._pos, len(self.buffer) - 2)
            return False
        version, status, reason, headers = parse_head(bytes(self.buffer[self._pos : found.start()]))
        self._pos = found.end()
        if 100 <= status < 200 and status != 101:
            return True  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self._version, self._status, self._reason, self._headers = version, status, reason, headers
        self.keep_alive = keeps_alive(version, headers) and status != 101
        self._frame(status, headers)
        return True

    def _frame(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self._head_request or status in (101, 204, 304):
            self.phase, self._length = _FIXED, 0
            return
        codings = header_tokens(headers, b"transfer-encoding")
        if codings:
            # RFC 9112 6.3: chunked last frames the body (Content-Length is then ignored);
            # any other coding means the body runs to the end of the connection.
            if codings[-1] == b"chunked":
                self.phase = _CHUNK_LINE
            else:
                self.phase, self.keep_alive = _UNTIL_EOF, False
            return
        length = content_length(headers)
        if length is None:
            self.phase, self.keep_alive = _UNTIL_EOF, False
        else:
            self.phase, self._length = _FIXED, length

    def _read_chunk_line(self) -> bool:
        newline = self.buffer.find(b"\n", self._pos)
        if newline < 0:
            if len(self.buffer) - self._pos > MAX_CHUNK_LINE_BYTES:
                raise httpx.RemoteProtocolError("a chunk size line is too long")
            return False
        line = bytes(self.buffer[self._pos : newline]).rstrip(b"\r")
        size = line.split(b";", 1)[0].strip(b" \t")  # chunk extensions are dropped
        if not _HEX.fullmatch(size):
            raise httpx.RemoteProtocolError(f"malformed chunk size line: {line[:40]!r}")
        self._pos = newline + 1
        self._chunk = int(size, 16)
        self.phase = _CHUNK_DATA if self._chunk else _TRAILERS
        return True

    def _read_chunk_data(self) -> bool:
        end = self._pos + self._chunk
        if len(self.buffer) < end + 2:
            return False
        if self.buffer[end : end + 2] != b"\r\n":
            raise httpx.RemoteProtocolError("a chunk does not end with CRLF")
        with memoryview(self.buffer) as view:
            self._chunks += view[self._pos : end]
        # Consumed bytes leave the front of the buffer (cheap for a bytearray), so a long
        # chunked body is not held twice.
        del self.buffer[: end + 2]
        self._pos = 0
        self.phase = _CHUNK_LINE
        return True

    def _read_trailers(self) -> bool:
        # The last chunk's line ended at _pos - 1: an empty line right after means no trailers.
        found = _HEAD_END.search(self.buffer, self._pos - 1)
        if found is None:
            if len(self.buffer) - self._pos > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("the chunked body's trailers never end")
            return False
        leftover = len(self.buffer) > found.end()
        self._content = bytes(self._chunks)
        self._chunks = bytearray()
        self._finish(leftover)
        return True

    def _start_body(self) -> None:
        # the body's first bytes came with the head
        if len(self.buffer) > self._pos:
            with memoryview(self.buffer) as view:
                self._body.append(bytes(view[self._pos :]))
            self._body_bytes = len(self.buffer) - self._pos
        self.buffer = bytearray()
        self._pos = 0

    def _complete_body(self) -> bool:
        content = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        leftover = len(content) > self._length
        self._content = content[: self._length] if leftover else content
        self._finish(leftover)
        return True

    def _finish(self, leftover: bool) -> None:
        if leftover:  # bytes past the answer: the next one could not be told apart
            self.keep_alive = False
        self.phase = _DONE


def parse_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """HTTP version, status, reason phrase and headers (raw, in order) of a response head."""
    lines = head.split(b"\n")
    status_line = lines[0].removesuffix(b"\r")
    matched = _STATUS_LINE.fullmatch(status_line)
    if matched is None:
        raise httpx.RemoteProtocolError(f"malformed status line: {status_line[:80]!r}")
    major, minor, status, reason = matched.groups()
    if major != b"1":
        raise httpx.RemoteProtocolError(f"unsupported HTTP version in {status_line[:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for raw in lines[1:]:
        line = raw.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding: a continuation
            name, value = headers[-1]
            headers[-1] = (name, value + b" " + line.strip(b" \t"))
            continue
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE_BYTES.search(value):
            raise httpx.RemoteProtocolError(f"malformed response header line: {line[:40]!r}")
        headers.append((name, value))
    return b"HTTP/1." + minor, int(status), reason or b"", headers


def header_tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The comma-separated values of every `name` header, lowercased, in order."""
    return [
        token.strip(b" \t").lower()
        for key, value in headers
        if key.lower() == name
        for token in value.split(b",")
        if token.strip(b" \t")
    ]


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    values = set(header_tokens(headers, b"content-length"))
    if not values:
        return None
    # Repeats of one value are tolerated (RFC 9110 8.6); differing values are an attack.
    if len(values) > 1 or not next(iter(values)).isdigit():
        raise httpx.RemoteProtocolError(f"invalid Content-Length: {sorted(values)!r}")
    return int(values.pop())


def keeps_alive(version: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    options = header_tokens(headers, b"connection")
    if b"close" in options:
        return False
    return version == b"HTTP/1.1" or b"keep-alive" in options


def wants_close(headers: httpx.Headers) -> bool:
    return "close" in headers.get("connection", "").lower()


def connection_key(url: httpx.URL) -> Key:
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(
            f"the URL's scheme is {scheme!r}; this transport speaks 'http' and 'https'"
        )
    return scheme, url.host, url.port or (443 if scheme == "https" else 80)


def encode_request(request: httpx.Request, body: bytes) -> bytes:
    """The request line, httpx's headers (Host included) and the body, as one write."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE_BYTES.search(value):
            # The value may be a secret: name the header only.
            raise httpx.LocalProtocolError(
                f"request header {name[:40]!r} has a character HTTP does not allow in a header "
                "(a control character such as CR or LF, or a non-token name)"
            )
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    if "transfer-encoding" in request.headers:
        # httpx asks for chunked coding when it streams a body of unknown length; it has
        # been read whole, so it goes as one chunk.
        parts += (b"%x\r\n" % len(body), body, b"\r\n0\r\n\r\n") if body else (b"0\r\n\r\n",)
    else:
        parts.append(body)
    return b"".join(parts)


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def proxy_mounts(
    *, verify: ssl.SSLContext | str | bool = True, limits: httpx.Limits | None = None
) -> dict[str, httpx.AsyncBaseTransport | None]:
    """httpx's proxy transports for HTTP_PROXY/HTTPS_PROXY/ALL_PROXY/NO_PROXY, as `mounts=`.

    httpx mounts them itself only when a client has no `transport=`; with this module's
    transport the client is given them this way, so proxies still come from the environment
    (NO_PROXY entries map to None: the client's own transport).
    """
    from httpx._utils import get_environment_proxies  # what httpx reads, NO_PROXY rules and all

    options: dict[str, Any] = {"verify": verify}
    if limits is not None:
        options["limits"] = limits
    return {
        pattern: None if url is None else httpx.AsyncHTTPTransport(proxy=url, **options)
        for pattern, url in get_environment_proxies().items()
    }
