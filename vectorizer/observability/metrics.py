"""Prometheus metrics and a progress-based health check, served on `--metrics-port`.

`/metrics` is the Prometheus text format; `/healthz` answers 503 when work is pending but
nothing has progressed for `stuck_after` seconds, or when the database has not answered for as
long: a worker that is up but stuck must not look healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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


@dataclass
class Health:
    """What /healthz judges by; the worker updates it.

    Progress is tracked per vectorizer: another vectorizer's batches (or an idle one's empty
    claims) must not make a stuck one look healthy. An empty claim counts as progress for its
    vectorizer: what is pending is not due yet (a row in backoff), nothing is stuck.
    """

    stuck_after: float = 300.0
    pending: dict[str, int] = field(default_factory=dict)
    last_progress: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    last_db_contact: float = field(default_factory=time.monotonic)

    def progressed(self, vectorizer: str) -> None:
        self.last_progress[vectorizer] = time.monotonic()

    def db_answered(self) -> None:
        self.last_db_contact = time.monotonic()

    def problems(self) -> list[str]:
        now = time.monotonic()
        found = []
        if now - self.last_db_contact > self.stuck_after:
            found.append(f"no answer from the database for {now - self.last_db_contact:.0f}s")
        for vectorizer, pending in sorted(self.pending.items()):
            idle = now - self.last_progress.get(vectorizer, self.started)
            if pending > 0 and idle > self.stuck_after:
                found.append(
                    f"{vectorizer}: {pending} items pending but no progress for {idle:.0f}s"
                )
        return found


class MetricsServer:
    """A minimal HTTP/1.1 server for /metrics and /healthz (no extra dependency, no thread)."""

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int) -> None:
        self._metrics, self._health = metrics, health
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None

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
            path = request_line.split(b" ")[1].decode() if b" " in request_line else "/"
            status, content_type, body = self._respond(path.split("?")[0])
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    def _respond(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._metrics.registry)
        if path in ("/healthz", "/health"):
            problems = self._health.problems()
            if problems:
                return "503 Service Unavailable", "text/plain", ("; ".join(problems)).encode()
            return "200 OK", "text/plain", b"ok"
        return "404 Not Found", "text/plain", b"not found"
