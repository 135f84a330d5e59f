"""Prometheus metrics and a progress-based health check, served on `--metrics-port`.

`/metrics` is the Prometheus text format; `/healthz` answers 503 when work is pending but
nothing has progressed for `stuck_after` seconds, or when the database has not answered for as
long: a worker that is up but stuck must not look healthy. Its JSON body also gives each served
vectorizer's state, so a misconfigured vectorizer shows as `failing` without failing the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every metric the worker exports, on a registry of its own (tests make several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rows = Counter(
            "vectorizer_rows_total", "Source rows embedded", ["vectorizer"], registry=r
        )
        self.chunks = Counter(
            "vectorizer_chunks_total", "Chunks embedded and written", ["vectorizer"], registry=r
        )
        self.skipped = Counter(
            "vectorizer_skipped_total",
            "Source rows with nothing to embed (reason: empty = NULL, blank text or document)",
            ["vectorizer", "reason"],
            registry=r,
        )
        self.tokens = Counter(
            "vectorizer_tokens_total",
            "Tokens reported by the embedding provider",
            ["vectorizer", "provider"],
            registry=r,
        )
        self.requests = Counter(
            "vectorizer_requests_total",
            "Embedding requests (including retries)",
            ["vectorizer", "provider"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "vectorizer_embed_call_seconds",
            "Latency of one batch's embedding call, retries included",
            ["provider"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "vectorizer_errors_total",
            "Failures by stage and kind (row, vectorizer, database)",
            ["vectorizer", "step", "kind"],
            registry=r,
        )
        self.concurrency = Gauge(
            "vectorizer_concurrency",
            "Executors a vectorizer runs now (adaptive unless concurrency was set)",
            ["vectorizer"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "vectorizer_queue_depth",
            "Queued keys (estimated above 100k)",
            ["vectorizer"],
            registry=r,
        )
        self.failed_depth = Gauge(
            "vectorizer_failed_queue_depth",
            "Keys in the failed queue",
            ["vectorizer"],
            registry=r,
        )
        self.ratelimit_wait = Counter(
            "vectorizer_ratelimit_wait_seconds_total",
            "Seconds spent waiting for the provider's rate limit",
            ["provider"],
            registry=r,
        )
        self.chunks_embedded = Counter(
            "vectorizer_chunks_embedded_total",
            "Chunks sent to the embedding provider (each distinct text once)",
            ["vectorizer"],
            registry=r,
        )
        self.chunks_reused = Counter(
            "vectorizer_chunks_reused_total",
            "Chunks whose stored vector was reused instead of embedded, by where it came from",
            ["vectorizer", "origin"],
            registry=r,
        )
        self.rows_unchanged = Counter(
            "vectorizer_rows_unchanged_total",
            "Rows processed whose chunks were all unchanged: nothing embedded, nothing written",
            ["vectorizer"],
            registry=r,
        )
        self.tokens_saved = Counter(
            "vectorizer_tokens_saved_total",
            "Estimated tokens not sent to the provider thanks to reuse",
            ["vectorizer"],
            registry=r,
        )
        self.last_progress = Gauge(
            "vectorizer_last_progress_timestamp_seconds",
            "Unix time of the last committed batch",
            registry=r,
        )
        self.failing = Gauge(
            "vectorizer_failing",
            "1 while a served vectorizer backs off after a vectorizer-level error, else 0",
            ["vectorizer"],
            registry=r,
        )
        self.worker_healthy = Gauge(
            "vectorizer_worker_healthy",
            "1 when this worker makes progress on what it serves (what /healthz answers)",
            registry=r,
        )

    def observe_health(self, health: Health) -> None:
        """Per-vectorizer failures and the worker's verdict, as of this scrape."""
        self.worker_healthy.set(0 if health.problems() else 1)
        for vectorizer in health.pending:
            self.failing.labels(vectorizer).set(1 if health.is_failing(vectorizer) else 0)


@dataclass
class Health:
    """What /healthz judges by; the worker updates it. It covers only the vectorizers this
    worker serves (the worker's queue poll is scoped to them).

    Health is this worker's liveness: is it making progress on what it serves? Progress is
    tracked per vectorizer: another vectorizer's batches (or an idle one's empty claims) must
    not make a stuck one look healthy. An empty claim counts as progress for its vectorizer:
    what is pending is not due yet (a row in backoff), nothing is stuck. A vectorizer backing
    off after a vectorizer-level error (bad key, bad config, provider down) is reported as
    `failing`, but it does not make the worker unhealthy: restarting the worker would not fix
    it, and under a container health check it would only cause a restart loop.
    """

    stuck_after: float = 300.0
    pending: dict[str, int] = field(default_factory=dict)
    last_progress: dict[str, float] = field(default_factory=dict)
    # vectorizer → monotonic time of its last vectorizer-level error
    failed_at: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    last_db_contact: float = field(default_factory=time.monotonic)

    def progressed(self, vectorizer: str) -> None:
        self.last_progress[vectorizer] = time.monotonic()

    def vectorizer_failed(self, vectorizer: str) -> None:
        self.failed_at[vectorizer] = time.monotonic()

    def db_answered(self) -> None:
        self.last_db_contact = time.monotonic()

    def is_failing(self, vectorizer: str) -> bool:
        failed = self.failed_at.get(vectorizer)
        return failed is not None and failed >= self.last_progress.get(vectorizer, 0.0)

    def vectorizer_state(self, vectorizer: str, now: float | None = None) -> str:
        """ok, idle (nothing pending), failing (backing off) or stalled."""
        now = time.monotonic() if now is None else now
        if self.is_failing(vectorizer):
            return "failing"
        pending = self.pending.get(vectorizer, 0)
        if pending <= 0:
            return "idle"
        idle = now - self.last_progress.get(vectorizer, self.started)
        return "stalled" if idle > self.stuck_after else "ok"

    def problems(self) -> list[str]:
        now = time.monotonic()
        found = []
        if now - self.last_db_contact > self.stuck_after:
            found.append(f"no answer from the database for {now - self.last_db_contact:.0f}s")
        for vectorizer, pending in sorted(self.pending.items()):
            if self.vectorizer_state(vectorizer, now) == "stalled":
                idle = now - self.last_progress.get(vectorizer, self.started)
                found.append(
                    f"{vectorizer}: {pending} items pending but no progress for {idle:.0f}s"
                )
        return found

    def report(self) -> dict[str, object]:
        """The /healthz body: the worker's verdict, then each served vectorizer's state."""
        now = time.monotonic()
        problems = self.problems()
        vectorizers = {}
        for vectorizer in sorted(self.pending):
            progressed = self.last_progress.get(vectorizer)
            vectorizers[vectorizer] = {
                "state": self.vectorizer_state(vectorizer, now),
                "pending": self.pending.get(vectorizer, 0),
                "seconds_since_progress": None if progressed is None else round(now - progressed),
            }
        return {
            "status": "unhealthy" if problems else "ok",
            "problems": problems,
            "vectorizers": vectorizers,
        }


# A route answers (status line, content type, body).
Response = tuple[str, str, bytes]
Route = Callable[[], Awaitable[Response]]


class MetricsServer:
    """A minimal read-only HTTP/1.1 server for /metrics, /healthz and any extra routes (the
    status page adds `/` and `/status.json`). No extra dependency, no thread."""

    def __init__(
        self,
        metrics: Metrics,
        health: Health,
        host: str,
        port: int,
        routes: dict[str, Route] | None = None,
    ) -> None:
        self._metrics, self._health = metrics, health
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None
        self._routes: dict[str, Route] = {
            "/metrics": self._metrics_page,
            "/healthz": self._healthz,
            "/health": self._healthz,
            **(routes or {}),
        }

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("metrics on http://%s:%s/metrics, health on /healthz", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            method, _, rest = request_line.decode().partition(" ")
            path = rest.split(" ")[0].split("?")[0] or "/"
            status, content_type, body = await self._respond(method, path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (body if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"read-only: GET only"
        route = self._routes.get(path)
        if route is None:
            return "404 Not Found", "text/plain", b"not found"
        return await route()

    async def _metrics_page(self) -> Response:
        self._metrics.observe_health(self._health)
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._metrics.registry)

    async def _healthz(self) -> Response:
        report = self._health.report()
        body = json.dumps(report).encode()
        if report["problems"]:
            return "503 Service Unavailable", "application/json", body
        return "200 OK", "application/json", body
