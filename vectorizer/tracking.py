"""Worker liveness and progress, reported through ai._worker_* and ai._vectorizer_errors.

Tracking has its own connection so a heartbeat never waits behind a batch transaction, and a
tracking failure (database briefly unreachable) is logged and retried, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg

from vectorizer import catalog
from vectorizer.reuse_counts import ReuseCounts
from vectorizer.version import __version__

log = logging.getLogger(__name__)

# A vectorizer's successes are written at most this often (and when a drain ends, and with
# every heartbeat): one `_worker_progress` per batch was a round trip on the shared tracking
# connection, which every executor waited for in turn.
PROGRESS_INTERVAL = 1.0  # seconds


class WorkerTracking:
    def __init__(self, db_url: str, heartbeat_interval: timedelta) -> None:
        self._db_url = db_url
        self._interval = heartbeat_interval
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self.worker_id: UUID | None = None
        self._successes = 0
        self._errors = 0
        self._last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._reuse: dict[int, ReuseCounts] = {}
        # vectorizer id -> (executors, adaptive): to write, and as last written
        self._concurrency: dict[int, tuple[int, bool]] = {}
        self._concurrency_sent: dict[int, tuple[int, bool]] = {}
        # vectorizer id -> successes not written yet, and when each was last written
        self._pending_successes: dict[int, int] = {}
        self._progress_sent: dict[int, float] = {}

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            short_id = str(self.worker_id).split("-")[0] if self.worker_id else "starting"
            self._conn = await psycopg.AsyncConnection.connect(
                self._db_url,
                autocommit=True,
                application_name=f"vectorizer-worker-tracking: {short_id}",
            )
        return self._conn

    async def _call(self, query: str, params: tuple[Any, ...]) -> Any:
        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connection()
                try:
                    cursor = await conn.execute(query, params)
                    return await cursor.fetchone() if cursor.description else None
                except psycopg.OperationalError:
                    await conn.close()
                    # A session lost while idle (server restart, idle timeout) fails only the
                    # first statement after it: run that once more on a new connection.
                    if attempt == 2 or not conn.broken:
                        raise

    async def start(self) -> UUID:
        row = await self._call(catalog.WORKER_START, (__version__, self._interval))
        self.worker_id = row[0]
        self._task = asyncio.create_task(self._beat_forever(), name="heartbeat")
        return self.worker_id

    def record_success(self, items: int) -> None:
        self._successes += items

    def count_error(self, message: str) -> None:
        """Counts an error once, for the next heartbeat."""
        self._errors += 1
        self._last_error = message

    async def heartbeat(self) -> None:
        successes, errors, message = self._successes, self._errors, self._last_error
        self._successes, self._errors, self._last_error = 0, 0, None
        try:
            await self._call(
                catalog.WORKER_HEARTBEAT,
                (self.worker_id, successes, errors, message),
            )
        except psycopg.Error:
            # keep the counts for the next beat rather than lose them
            self._successes += successes
            self._errors += errors
            self._last_error = self._last_error or message
            raise
        await self.flush_progress()
        await self._flush_reuse()
        await self._flush_concurrency()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval.total_seconds())
            try:
                await self.heartbeat()
            except psycopg.Error as exc:
                log.warning("heartbeat failed, will retry: %s", exc)

    async def record_progress(self, vectorizer_id: int, successes: int) -> None:
        """Counts a batch's successes; written once PROGRESS_INTERVAL has passed since the
        vectorizer's last write (else by `flush_progress`)."""
        self._pending_successes[vectorizer_id] = (
            self._pending_successes.get(vectorizer_id, 0) + successes
        )
        if time.monotonic() - self._progress_sent.get(vectorizer_id, 0.0) >= PROGRESS_INTERVAL:
            await self._send_progress(vectorizer_id)

    async def flush_progress(self, vectorizer_id: int | None = None) -> None:
        """Writes the successes counted and not written yet (of one vectorizer, or all)."""
        pending = [vectorizer_id] if vectorizer_id is not None else list(self._pending_successes)
        for each in pending:
            if self._pending_successes.get(each):
                await self._send_progress(each)

    async def _send_progress(self, vectorizer_id: int) -> None:
        successes = self._pending_successes.pop(vectorizer_id, 0)
        self._progress_sent[vectorizer_id] = time.monotonic()
        await self.progress(vectorizer_id, successes)

    async def progress(
        self, vectorizer_id: int, successes: int, error_message: str | None = None
    ) -> None:
        try:
            await self._call(
                catalog.WORKER_PROGRESS,
                (self.worker_id, vectorizer_id, successes, error_message),
            )
        except psycopg.errors.ForeignKeyViolation:
            log.info("vectorizer %s was dropped; progress not recorded", vectorizer_id)
        except psycopg.Error as exc:
            log.warning("could not record progress of vectorizer %s: %s", vectorizer_id, exc)

    def record_reuse(self, vectorizer_id: int, counts: ReuseCounts) -> None:
        """Adds a batch's reuse counters, written with the next heartbeat (not per batch: a
        round trip per batch would slow every executor down)."""
        self._reuse.setdefault(vectorizer_id, ReuseCounts()).add(counts)

    async def _flush_reuse(self) -> None:
        pending, self._reuse = list(self._reuse.items()), {}
        for index, (vectorizer_id, counts) in enumerate(pending):
            try:
                await self._call(
                    catalog.RECORD_REUSE,
                    (
                        vectorizer_id,
                        counts.embedded,
                        counts.same_row,
                        counts.other_row,
                        counts.rows_unchanged,
                        counts.tokens_saved,
                    ),
                )
            except psycopg.errors.ForeignKeyViolation:
                log.info("vectorizer %s was dropped; reuse counters not recorded", vectorizer_id)
            except psycopg.Error:
                for unsent in pending[index:]:  # kept for the next beat
                    self.record_reuse(*unsent)
                raise

    def record_concurrency(self, vectorizer_id: int, executors: int, adaptive: bool) -> None:
        """A vectorizer's executor level, written with the next heartbeat when it changed."""
        if self._concurrency_sent.get(vectorizer_id) != (executors, adaptive):
            self._concurrency[vectorizer_id] = (executors, adaptive)

    async def _flush_concurrency(self) -> None:
        pending, self._concurrency = self._concurrency, {}
        for vectorizer_id, (executors, adaptive) in pending.items():
            try:
                await self._call(
                    catalog.WORKER_CONCURRENCY,
                    (self.worker_id, vectorizer_id, executors, adaptive),
                )
                self._concurrency_sent[vectorizer_id] = (executors, adaptive)
            except (psycopg.errors.ForeignKeyViolation, psycopg.errors.UndefinedTable):
                pass  # the vectorizer was dropped, or the schema predates this table
            except psycopg.Error as exc:
                log.warning(
                    "could not record the concurrency of vectorizer %s: %s", vectorizer_id, exc
                )

    async def error_row(self, vectorizer_id: int, message: str, details: str) -> None:
        """An error row (details: JSON) for a failure that charged no row (written outside
        any batch): see `reporting.error_row`."""
        try:
            await self._call(
                catalog.ERROR_ROW,
                (vectorizer_id, message, details),
            )
        except psycopg.errors.ForeignKeyViolation:
            log.info("vectorizer %s was dropped; error not recorded", vectorizer_id)
        except psycopg.Error as exc:
            log.warning("could not record error of vectorizer %s: %s", vectorizer_id, exc)

    async def _mark_stopped(self) -> None:
        # `vectorizer status` then shows this worker as stopped, not stale (a dead one).
        try:
            await self._call(catalog.WORKER_STOP, (self.worker_id,))
        except psycopg.errors.UndefinedFunction:
            log.debug("the installed schema has no ai._worker_stop; run vectorizer install")
        except psycopg.Error as exc:
            log.warning("could not record that the worker stopped: %s", exc)

    async def stop(self) -> None:
        """Final heartbeat, then close."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.worker_id is not None:
            try:
                await self.heartbeat()
            except psycopg.Error as exc:
                log.warning("final heartbeat failed: %s", exc)
            await self._mark_stopped()
        if self._conn is not None:
            await self._conn.close()
