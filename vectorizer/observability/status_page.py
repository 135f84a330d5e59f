"""The live status page on the worker's HTTP port: `/` (one self-contained HTML file, no CDN,
no build step) and `/status.json`, which the page polls.

Read-only and scoped to the vectorizers this worker serves. It shows what `ai.vectorizer_status`
exposes (every column, so columns added later appear without a change here), the last error
rows with their step and key, the chunks/s this worker wrote over the last minutes, and this
worker's own health. Connection strings are never part of it; error texts go through the same
redaction as the logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from vectorizer import catalog
from vectorizer.observability.history import RateHistory
from vectorizer.observability.logging import redact
from vectorizer.observability.metrics import Health, Response, Route
from vectorizer.version import __version__

log = logging.getLogger(__name__)

ERROR_ROWS = 20
# Browsers poll every 2 s; the database part of a snapshot is reused for at least this long
# (several open tabs share one read) and for at least DB_SHARE_INVERSE times as long as the
# last read took (up to MAX_CACHE_SECONDS), so a page left open costs the database about a
# tenth of one backend even when the status view is slow (large tables). Health and the chart
# are always fresh.
CACHE_SECONDS = 1.0
DB_SHARE_INVERSE = 10
MAX_CACHE_SECONDS = 10.0  # never staler than this, however slow the view


@dataclass(eq=False)  # identity, as any service object
class StatusPage:
    """The worker's status page and its JSON, for the vectorizers it serves."""

    db_url: str
    served: Callable[[], list[int]]
    health: Health
    history: RateHistory
    worker_id: Callable[[], UUID | None]
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    # (when read, seconds it took, served ids, vectorizer rows, error rows, database error)
    _read_cache: tuple[float, float, list[int], list[Any], list[Any], str | None] | None = field(
        default=None, init=False
    )

    def routes(self) -> dict[str, Route]:
        return {"/": self.page, "/index.html": self.page, "/status.json": self.status_json}

    async def page(self) -> Response:
        return "200 OK", "text/html; charset=utf-8", _page_html()

    async def status_json(self) -> Response:
        return "200 OK", "application/json", json.dumps(await self.snapshot()).encode()

    async def snapshot(self) -> dict[str, Any]:
        served = sorted(self.served())
        async with self._lock:
            vectorizers, errors, database_error = await self._database_part(served)
        vectorizers = [dict(row) for row in vectorizers]  # the cached rows stay as read
        health = self.health.report()
        for row in vectorizers:
            row["state"] = health["vectorizers"].get(row["name"], {}).get("state", "unknown")
        names = [row["name"] for row in vectorizers]
        worker_id = self.worker_id()
        return {
            "generated_at": datetime.now().astimezone().isoformat(),
            "worker": {
                "id": str(worker_id) if worker_id else None,
                "version": __version__,
                "uptime_seconds": round(time.monotonic() - self.health.started),
                "serves": served,
                "health": health,
            },
            "database_error": database_error,
            "vectorizers": vectorizers,
            "errors": errors,
            "throughput": self.history.series(names),
        }

    async def _database_part(
        self, served: list[int]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
        cached = self._read_cache
        if cached is not None and cached[2] == served:
            age, took = time.monotonic() - cached[0], cached[1]
            if age < min(MAX_CACHE_SECONDS, max(CACHE_SECONDS, DB_SHARE_INVERSE * took)):
                return cached[3], cached[4], cached[5]
        started = time.monotonic()
        vectorizers: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        database_error = None
        try:
            vectorizers, errors = await self._read(served)
        except psycopg.Error as exc:
            database_error = redact(" ".join(str(exc).split()))
            log.warning("status page: could not read the status view: %s", database_error)
        took = time.monotonic() - started
        self._read_cache = (started, took, served, vectorizers, errors, database_error)
        return vectorizers, errors, database_error

    async def _read(self, served: list[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with (
            await psycopg.AsyncConnection.connect(
                self.db_url, autocommit=True, application_name="vectorizer-worker-status-page"
            ) as conn,
            conn.cursor(row_factory=dict_row) as cursor,
        ):
            await cursor.execute(catalog.PAGE_VECTORIZERS, (served,))
            vectorizers = [_plain(row) for row in await cursor.fetchall()]
            await cursor.execute(catalog.PAGE_ERRORS, (served, ERROR_ROWS))
            errors = [_plain(row) for row in await cursor.fetchall()]
        return vectorizers, errors


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON values: intervals in seconds, times in ISO 8601, texts redacted."""
    return {column: _json_value(value) for column, value in row.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict | list):
        return json.loads(redact(json.dumps(value, default=str)))
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


_HTML: bytes | None = None


def _page_html() -> bytes:
    global _HTML
    if _HTML is None:
        _HTML = resources.files("vectorizer").joinpath("data/status/index.html").read_bytes()
    return _HTML
