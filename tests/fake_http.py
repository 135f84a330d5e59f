"""What the fake provider servers (tests/fake_ollama.py, tests/fake_voyage.py) have in common:
an aiohttp app on 127.0.0.1 served from a background thread, failures injected on demand,
and a log of what clients sent.

    class FakeThing(FakeHTTPServer):
        def routes(self, app): app.router.add_post("/v1/x", self.handler)

    with FakeThing() as server:
        server.fail_next(503, count=2, retry_after="1")   # or stall_next / drop_next
        ...
        server.requests                                     # LoggedRequest per request

A handler calls `await self.injected(request)` first: it returns the response to send instead
(an injected failure), or None to carry on, and `self.record(...)` when done.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web

STALL = 0  # wait `stall` seconds, then answer normally
DROP = -1  # close the connection without answering


@dataclass
class Failure:
    status: int  # HTTP status, or STALL / DROP
    remaining: int
    retry_after: str | None = None
    stall: float = 0.0
    message: str | None = None
    retry_after_ms: str | None = None  # OpenAI's own header, besides Retry-After
    code: str | None = None  # the error code in the body (OpenAI: "insufficient_quota", ...)


@dataclass
class LoggedRequest:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    status: int
    started: float
    finished: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        value = self.body.get("input")
        if isinstance(value, str):
            return [value]
        return list(value) if isinstance(value, list) else []


class ThreadedServer:
    """An aiohttp app on 127.0.0.1 (an ephemeral port unless given), served from a background
    thread with its own event loop; subclasses add their routes."""

    def __init__(self, *, port: int = 0) -> None:
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._startup())
        ready.set()
        self._loop.run_forever()
        # Handlers still sleeping (stalls, latency) are cancelled so the loop closes cleanly.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        self.routes(app)
        # Stalled requests must not hold up a test's teardown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class FakeHTTPServer(ThreadedServer):
    """Failure injection and the request log on top of the threaded server."""

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.lock = threading.Lock()
        self._failures: list[Failure] = []
        self._log: list[LoggedRequest] = []

    # --- controls (thread-safe) --------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `count` main-endpoint requests with `status` (429, 500, 503...)."""
        with self.lock:
            self._failures.append(Failure(status, count, retry_after, message=message))

    def stall_next(self, seconds: float, count: int = 1) -> None:
        with self.lock:
            self._failures.append(Failure(STALL, count, stall=seconds))

    def drop_next(self, count: int = 1) -> None:
        with self.lock:
            self._failures.append(Failure(DROP, count))

    @property
    def requests(self) -> list[LoggedRequest]:
        with self.lock:
            return list(self._log)

    def requests_to(self, path: str) -> list[LoggedRequest]:
        return [request for request in self.requests if request.path == path]

    # --- for handlers ------------------------------------------------------------------------

    async def read_json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            value = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    async def injected(
        self, request: web.Request, error_body: Any
    ) -> tuple[int, web.StreamResponse | None]:
        """The injected failure for this request, if any: (status, response to send).

        `error_body(status, message)` builds the provider's error document. A stall sleeps
        and returns (200, None): the handler then answers normally.
        """
        with self.lock:
            failure = self._failures[0] if self._failures else None
            if failure is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.pop(0)
        if failure is None:
            return 200, None
        if failure.status == STALL:
            await asyncio.sleep(failure.stall)
            return 200, None
        if failure.status == DROP:
            if request.transport is not None:
                request.transport.abort()
            return DROP, web.Response(status=500)
        headers = {} if failure.retry_after is None else {"Retry-After": failure.retry_after}
        message = failure.message or f"injected failure {failure.status}"
        body = orjson.dumps(error_body(failure.status, message))
        response = web.Response(
            status=failure.status, body=body, headers=headers, content_type="application/json"
        )
        return failure.status, response

    def record(
        self,
        request: web.Request,
        body: dict[str, Any] | None,
        status: int,
        started: float,
        **extra: Any,
    ) -> None:
        entry = LoggedRequest(
            path=request.path,
            body=body or {},
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            status=status,
            started=started,
            finished=time.monotonic(),
            extra=extra,
        )
        with self.lock:
            self._log.append(entry)


def json_response(
    status: int, document: Any, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY),
        headers=headers,
        content_type="application/json",
    )
