"""One vectorizer's runner: builds its pipeline and embedder from the catalog row, drains its
queue with N executors when woken, and trips a circuit breaker on vectorizer-level failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from pydantic import ValidationError

from vectorizer import preflight, reembed
from vectorizer.config import Vectorizer
from vectorizer.embedders import Embedder, make_embedder
from vectorizer.errors import VectorizerError
from vectorizer.executor import BatchResult, Executor, batch_size_for
from vectorizer.indexing import IndexBuilder
from vectorizer.observability import tracing
from vectorizer.observability.progress import Progress
from vectorizer.observability.telemetry import telemetry
from vectorizer.queue import EXECUTOR_SESSION, build_queries
from vectorizer.reuse import ReuseCounts
from vectorizer.settings import WorkerSettings
from vectorizer.stages.pipeline import RowPipeline, token_counter_for
from vectorizer.stages.writing import make_writer
from vectorizer.tracking import WorkerTracking

log = logging.getLogger(__name__)

# idle connections a runner keeps between drains (more executors connect as they need)
MAX_IDLE_CONNECTIONS = 4


async def load_vectorizer(conn: psycopg.AsyncConnection, vectorizer_id: int) -> Vectorizer | None:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            """
            select id, name, source_schema, source_table, source_pk, queue_schema, queue_table,
                   coalesce(queue_failed_table, '_vectorizer_q_failed_' || id)
                       as queue_failed_table,
                   disabled, ai._vectorizer_worker_config(config) as config,
                   ai._vectorizer_content_hash(config) as content_hash,
                   (config -> 'shadow' ->> 'version')::int as shadow_version
            from ai.vectorizer where id = %s
            """,
            (vectorizer_id,),
        )
        row = await cursor.fetchone()
    return Vectorizer.model_validate(row) if row else None


class Breaker:
    """Per-vectorizer circuit breaker for vectorizer-level failures."""

    def __init__(self, base: float, cap: float) -> None:
        self._base, self._cap = base, cap
        self.failures = 0
        self.open_until = 0.0

    def trip(self) -> float:
        self.failures += 1
        delay = min(self._cap, self._base * 2 ** (self.failures - 1))
        delay *= 0.8 + 0.4 * random.random()
        self.open_until = time.monotonic() + delay
        return delay

    def reset(self) -> None:
        self.failures = 0
        self.open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self.open_until


@dataclass
class _Components:
    config_key: str
    vectorizer: Vectorizer
    pipeline: RowPipeline
    embedder: Embedder


class VectorizerRunner:
    """Drains one vectorizer's queue with N executors whenever woken."""

    def __init__(
        self,
        vectorizer_id: int,
        settings: WorkerSettings,
        tracking: WorkerTracking,
        shutdown: asyncio.Event,
    ) -> None:
        self.vectorizer_id = vectorizer_id
        self._settings = settings
        self._tracking = tracking
        self._shutdown = shutdown
        self.wake = asyncio.Event()
        self.breaker = Breaker(settings.breaker_base_seconds, settings.breaker_max_seconds)
        self._components: _Components | None = None
        self.last_error: Exception | None = None
        self.gone = False
        self.chunks_written = 0
        self.reuse = ReuseCounts()  # this drain's
        self.reuse_total = ReuseCounts()  # since the worker started
        self.progress: Progress | None = None
        self._loaded: Vectorizer | None = None
        self._altered = False  # set by an executor whose batch met a newer config
        self._connections = _Connections(
            settings.db_url,
            f"vectorizer-worker[{vectorizer_id}]: executor",
            keep=MAX_IDLE_CONNECTIONS,
        )
        self.indexer = IndexBuilder(settings.db_url, vectorizer_id, tracking)

    async def _build(self, conn: psycopg.AsyncConnection) -> _Components | None:
        vectorizer = await load_vectorizer(conn, self.vectorizer_id)
        if vectorizer is None:
            self.gone = True
            return None
        self._loaded = vectorizer  # for error rows, even when building the embedder fails
        key = vectorizer.model_dump_json()
        current = self._components
        if current is not None and current.config_key == key:
            return current
        if current is not None:
            await current.embedder.aclose()
        embedder = make_embedder(vectorizer.config.embedding)
        await embedder.setup()
        # after setup: the model's tokenizer and input limit may come from the embedder
        counter = await asyncio.to_thread(token_counter_for, vectorizer.config, embedder)
        pipeline = RowPipeline(vectorizer.config, counter)
        self._components = _Components(key, vectorizer, pipeline, embedder)
        return self._components

    async def drain(self) -> int:
        """Processes the queue (and any re-embed slices) until it is empty; returns the rows
        embedded. An alter that lands mid-drain ends the pass; the next one reloads."""
        items = 0
        while True:
            self._altered = False
            items += await self._drain_pass()
            if not self._altered or self._shutdown.is_set():
                return items
            log.info("vectorizer %s was altered; reloading its config", self.label)

    async def _drain_pass(self) -> int:
        async with self._connections.get() as conn:
            try:
                components = await self._build(conn)
            except ValidationError as exc:
                raise VectorizerError(
                    f"invalid vectorizer config: {_first_validation_error(exc)}", step="config"
                ) from exc
            if components is None or components.vectorizer.disabled:
                return 0
            await preflight.check(conn, components.vectorizer)
        vectorizer = components.vectorizer
        concurrency = self._settings.concurrency or vectorizer.config.processing.concurrency or 1
        log.debug(
            "running vectorizer",
            extra={"vectorizer_id": vectorizer.id, "concurrency": concurrency},
        )
        if self.progress is not None:
            self.progress.name = vectorizer.name
            self.progress.total = await _pending_estimate(self._settings.db_url, vectorizer.id)
        started = time.monotonic()
        self.chunks_written = 0
        self.reuse = ReuseCounts()
        executors = [
            asyncio.create_task(self._executor_loop(components)) for _ in range(concurrency)
        ]
        try:
            totals = await asyncio.gather(*executors)
        except BaseException:
            # One executor's failure is the vectorizer's: the others stop too (their batches in
            # hand roll back) rather than go on claiming while the vectorizer backs off.
            for executor in executors:
                executor.cancel()
            await asyncio.gather(*executors, return_exceptions=True)
            raise
        items = sum(totals)
        # a wake-up that found nothing to do is polling chatter, not news
        log.log(
            logging.INFO if items or self.chunks_written else logging.DEBUG,
            "finished processing vectorizer",
            extra={
                "items": items,
                "chunks": self.chunks_written,
                "seconds": round(time.monotonic() - started, 3),
                "vectorizer_id": vectorizer.id,
                **self.reuse.fields(),
            },
        )
        self.breaker.reset()
        # the vector index: once mode waits for its build, a daemon builds in the background
        await self.indexer.after_drain(vectorizer, wait=self._settings.once)
        return items

    async def _executor_loop(self, components: _Components) -> int:
        vectorizer = components.vectorizer
        executor = Executor(
            vectorizer,
            components.pipeline,
            components.embedder,
            make_writer(vectorizer),
            build_queries(vectorizer),
            self._settings.retry,
        )
        done = 0
        async with self._connections.get() as conn:
            while not self._shutdown.is_set():
                if await _is_disabled(conn, vectorizer.id):
                    break
                try:
                    with tracing.span("vectorizer.batch", vectorizer_id=vectorizer.id):
                        result = await executor.run_batch(conn)
                except reembed.ConfigChanged:
                    self._altered = True  # the batch rolled back uncharged; drain() reloads
                    break
                except (psycopg.Error, VectorizerError):
                    # a store swapped in or a shadow dropped under the batch: not a failure
                    if not await reembed.changed(conn, vectorizer):
                        raise
                    self._altered = True
                    break
                done += result.rows_done
                self.chunks_written += result.chunks
                telemetry.batch_committed(vectorizer.name, result.rows_done, result.chunks)
                telemetry.skipped(vectorizer.name, "empty", result.empty)
                telemetry.reused(vectorizer.name, result.reuse)
                self.reuse.add(result.reuse)
                self.reuse_total.add(result.reuse)
                for _, error in result.failed:
                    telemetry.failed(vectorizer.name, error.step, "row")
                if self.progress is not None:
                    self.progress.rows += result.rows_done + len(result.failed)
                    self.progress.chunks += result.chunks
                    self.progress.reused += result.reuse.same_row + result.reuse.other_row
                await self._report(result)
                self.indexer.poke(vectorizer)  # a queue that never empties still gets its index
                # live changes are drained: a running re-embed may queue its next slice
                if result.claimed == 0 and not await self._feed_reembed(conn, vectorizer):
                    break
        return done

    async def _feed_reembed(self, conn: psycopg.AsyncConnection, vectorizer: Vectorizer) -> bool:
        """Whether a slice of a re-embed was queued for this executor to claim."""
        if self._altered:
            return False
        fed = await reembed.feed(conn, vectorizer.id, batch_size_for(vectorizer))
        if fed == reembed.SWAP_DUE and await reembed.swap(conn, vectorizer.id):
            log.info("vectorizer %s: the new store covers every key; swapped in", self.label)
            self._altered = True  # the destination moved: reload before writing again
        return fed > 0

    async def _report(self, result: BatchResult) -> None:
        if result.rows_done:
            self._tracking.record_success(result.rows_done)
        # one error per failed key, counted the same way in the heartbeat and the progress row
        for key, error in result.failed:
            message = f"{error.step} failed for key {key}: {error.message}"
            self._tracking.record_error(message)
            await self._tracking.progress(self.vectorizer_id, 0, message)
        if result.rows_done:
            await self._tracking.progress(self.vectorizer_id, result.rows_done)
        if result.reuse:
            self._tracking.record_reuse(self.vectorizer_id, result.reuse)

    async def record_vectorizer_error(self, exc: Exception) -> None:
        """Once per breaker trip: an error row, progress and the heartbeat's count."""
        self.last_error = exc
        delay = self.breaker.trip()
        loaded = self._loaded
        provider = loaded.config.embedding.implementation if loaded else None
        if isinstance(exc, VectorizerError):
            reason = exc.reason
            if exc.step == "embedding":
                message, details = "embedding provider failed", {"provider": provider}
            else:
                message, details = "vectorizer failed with unexpected error", {}
            details.update(error_reason=reason, step=exc.step)
        else:
            reason = f"{type(exc).__name__}: {exc}"
            message, details = "vectorizer failed with unexpected error", {"error_reason": reason}
        details["retry_in_seconds"] = round(delay, 1)
        log.error(
            "vectorizer %s failed (%s); backing off %.0fs: %s",
            self.label,
            message,
            delay,
            reason,
            # a Python error we did not classify is a bug or a surprise: its traceback is the
            # clue (a database error's message says it all, e.g. a vectorizer dropped mid-run)
            exc_info=None if isinstance(exc, VectorizerError | psycopg.Error) else exc,
        )
        self._tracking.record_error(f"vectorizer {self.vectorizer_id}: {reason}")
        label = loaded.name if loaded else str(self.vectorizer_id)
        telemetry.failed(label, details.get("step", "config"), "vectorizer")
        await self._tracking.vectorizer_error(self.vectorizer_id, message, details)
        await self._tracking.progress(self.vectorizer_id, 0, reason)

    @property
    def label(self) -> str:
        """How logs name this vectorizer: its name and id once its catalog row was read."""
        if self._loaded is None:
            return f"vectorizer {self.vectorizer_id}"
        return f"{self._loaded.name} (id {self.vectorizer_id})"

    async def release_connections(self) -> None:
        await self._connections.close()

    async def close(self) -> None:
        await self.indexer.close()
        await self._connections.close()
        if self._components is not None:
            await self._components.embedder.aclose()
            self._components = None


def _first_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg')}"


async def connect(db_url: str, application_name: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(
        db_url, autocommit=True, application_name=application_name[:63]
    )


class _Connections:
    """One runner's idle connections, reused across drains: a daemon woken by every commit
    would otherwise open 1 + concurrency connections per wake-up."""

    def __init__(self, db_url: str, application_name: str, keep: int) -> None:
        self._db_url = db_url
        self._name = application_name
        self._keep = keep
        self._idle: list[psycopg.AsyncConnection] = []

    @contextlib.asynccontextmanager
    async def get(self) -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await self._checkout()
        try:
            yield conn
        except BaseException:
            await conn.close()  # its state is unknown after an error or a cancellation
            raise
        if len(self._idle) < self._keep and conn.info.transaction_status == TransactionStatus.IDLE:
            self._idle.append(conn)
        else:
            await conn.close()

    async def _checkout(self) -> psycopg.AsyncConnection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        conn = await connect(self._db_url, self._name)
        await conn.execute(EXECUTOR_SESSION)
        await register_vector_async(conn)
        return conn

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()


async def _pending_estimate(db_url: str, vectorizer_id: int) -> int:
    async with await connect(db_url, "vectorizer-worker-progress") as conn:
        cursor = await conn.execute(
            "select v.queue_schema, v.queue_table from ai.vectorizer v where v.id = %s",
            (vectorizer_id,),
        )
        row = await cursor.fetchone()
        if row is None:
            return 0
        cursor = await conn.execute("select ai._vectorizer_count_rows(%s, %s)", row)
        counted = await cursor.fetchone()
    return int(counted[0] or 0) if counted else 0


async def _is_disabled(conn: psycopg.AsyncConnection, vectorizer_id: int) -> bool:
    cursor = await conn.execute(
        "select disabled from ai.vectorizer where id = %s", (vectorizer_id,)
    )
    row = await cursor.fetchone()
    return row is None or bool(row[0])
