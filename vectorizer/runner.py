"""One vectorizer's life: builds its pipeline and embedder from the catalog row, drains its
queue with N executors when woken, and owns what happens when that fails: the circuit breaker
for vectorizer-level failures, the backoff after a lost database connection, and reporting both.
The worker only creates runners, wakes them and waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.pq import TransactionStatus

from vectorizer import allocator, catalog, collector, reembed
from vectorizer.backoff import Backoff
from vectorizer.concurrency import AdaptiveConcurrency, ConnectionBudget
from vectorizer.errors import VectorizerError
from vectorizer.indexing import IndexBuilder
from vectorizer.observability import tracing
from vectorizer.observability.progress import Progress
from vectorizer.queue import EXECUTOR_SESSION, build_queries
from vectorizer.reporting import Reporter
from vectorizer.settings import WorkerSettings
from vectorizer.tracking import WorkerTracking

if TYPE_CHECKING:
    from pydantic import ValidationError

    from vectorizer.config import Vectorizer

    # imported when a vectorizer has work (`_build`): the pipeline, provider SDKs and numpy
    # cost a once-run with nothing queued most of its time
    from vectorizer.embedders import Embedder
    from vectorizer.stages.pipeline import RowPipeline

log = logging.getLogger(__name__)

# idle connections a runner keeps between drains (more executors connect as they need)
MAX_IDLE_CONNECTIONS = 4


class Breaker:
    """Per-vectorizer circuit breaker for vectorizer-level failures."""

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self.failures = 0
        self.open_until = 0.0

    def trip(self) -> float:
        delay = self._backoff.delay(self.failures)
        self.failures += 1
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


@dataclass
class _Drain:
    """The executors of one drain: how many should run, which do, whether the queue ran dry."""

    fixed: int | None
    controller: AdaptiveConcurrency | None
    running: dict[int, asyncio.Task[int]] = field(default_factory=dict)
    drained: bool = False

    @property
    def level(self) -> int:
        return self.controller.level if self.controller else self.fixed or 1


class VectorizerRunner:
    """Drains one vectorizer's queue with N executors whenever woken."""

    def __init__(
        self,
        vectorizer_id: int,
        settings: WorkerSettings,
        tracking: WorkerTracking,
        shutdown: asyncio.Event,
        budget: ConnectionBudget | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.vectorizer_id = vectorizer_id
        self._settings = settings
        self._shutdown = shutdown
        self._wake = asyncio.Event()
        self._breaker = Breaker(settings.breaker)
        self._components: _Components | None = None
        self.gone = False
        self.reporter = Reporter(vectorizer_id, tracking, progress)
        self._loaded: Vectorizer | None = None
        self._altered = False  # set by an executor whose batch met a newer config
        self._connections = _Connections(
            settings.db_url,
            f"vectorizer-worker[{vectorizer_id}]: executor",
            keep=MAX_IDLE_CONNECTIONS,
        )
        self.indexer = IndexBuilder(settings.db_url, vectorizer_id, tracking)
        # shared by the worker's runners (fairness); a runner alone gets the whole budget
        self._budget = budget or ConnectionBudget(settings.max_connections)
        self.concurrency: AdaptiveConcurrency | None = None  # kept across drains: it learned

    def wake(self) -> None:
        """Something may be queued: drain at the next chance (a daemon's runner)."""
        self._wake.set()

    async def run(self, once: bool) -> Exception | None:
        """Once: drains the queue until it is empty. Daemon: drains whenever woken, until the
        worker shuts down or the vectorizer is dropped. Either way a lost database connection
        is retried with backoff and a vectorizer-level failure is reported and trips the
        breaker; returns the failure that ended the run (once mode, or exit-on-error), else
        None."""
        db_failures = 0
        try:
            while not self._shutdown.is_set() and not self.gone:
                if not once:
                    await self._wake.wait()
                    self._wake.clear()
                    if self._breaker.is_open:
                        continue  # the poll interval's wake-ups probe again once it closes
                try:
                    embedded = await self.drain()
                except psycopg.OperationalError as exc:
                    db_failures += 1
                    spent = db_failures > self._settings.db_retry_attempts
                    give_up = once and (spent or self._shutdown.is_set())
                    if give_up or not once:
                        self.reporter.database_failed(exc)
                    if give_up:
                        return exc
                    await self._sleep(self._settings.database_backoff.delay(db_failures))
                    self._wake.set()
                except Exception as exc:
                    await self._failed(exc)
                    if once or self._settings.should_exit_on_error:
                        return exc
                else:
                    db_failures = 0
                    if once:
                        if self.reporter.progress is not None:
                            self.reporter.progress.finished = True
                        return None
                    if embedded:
                        allocator.release()  # drained: the batches' memory can go back
            return None
        finally:
            if not once:
                await self.release_connections()  # it may be gone or cancelled for good

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._shutdown.wait(), seconds)

    async def _build(self, conn: psycopg.AsyncConnection) -> _Components | None:
        vectorizer = await catalog.load_vectorizer(conn, self.vectorizer_id)
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
        from vectorizer.embedders import make_embedder
        from vectorizer.stages.pipeline import RowPipeline, token_counter_for

        embedder = make_embedder(vectorizer.config.embedding)
        collector.embedder_in_use(embedder.frees_answers)
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
            if self._settings.once and not await catalog.has_work(conn, self.vectorizer_id):
                return await self._nothing_queued(conn)
            from pydantic import ValidationError  # with work only: see `_nothing_queued`

            try:
                components = await self._build(conn)
            except ValidationError as exc:
                raise VectorizerError(
                    f"invalid vectorizer config: {_first_validation_error(exc)}", step="config"
                ) from exc
            if components is None or components.vectorizer.disabled:
                return 0
            from vectorizer import preflight

            await preflight.check(conn, components.vectorizer)
        vectorizer = components.vectorizer
        fixed = self._settings.concurrency or vectorizer.config.processing.concurrency
        log.debug(
            "running vectorizer",
            extra={"vectorizer_id": vectorizer.id, "concurrency": fixed or "adaptive"},
        )
        progress = self.reporter.progress
        if progress is not None:
            progress.name = vectorizer.name
            async with await connect(self._settings.db_url, "vectorizer-worker-progress") as conn:
                progress.total = await catalog.pending_estimate(conn, vectorizer.id)
        started = time.monotonic()
        self.reporter.drain_started()
        self._budget.enter(vectorizer.id, fixed)
        try:
            items = await self._run_executors(components, fixed)
        finally:
            self._budget.leave(vectorizer.id)
        await self.reporter.drain_finished()
        # a wake-up that found nothing to do is polling chatter, not news
        log.log(
            logging.INFO if items or self.reporter.chunks else logging.DEBUG,
            "finished processing vectorizer",
            extra={
                "items": items,
                "chunks": self.reporter.chunks,
                "seconds": round(time.monotonic() - started, 3),
                "vectorizer_id": vectorizer.id,
                **self.reporter.reuse.fields(),
            },
        )
        self._breaker.reset()
        # the vector index: once mode waits for its build, a daemon builds in the background
        await self.indexer.after_drain(vectorizer, wait=self._settings.once)
        return items

    async def _run_executors(self, components: _Components, fixed: int | None) -> int:
        """Runs executors until the queue is empty: `fixed` of them, else as many as the
        adaptive controller asks for, started and stopped between batches."""
        drain = _Drain(fixed, None if fixed else self._adaptive(components))
        self._publish_level(components.vectorizer, drain)
        if drain.controller is None:
            self._top_up(components, drain)
        else:
            # one executor first: a wake-up for a row or two needs no more (nor their
            # connections); a full batch says there is more, and the rest start then
            self._start(components, drain, 0)
        done = 0
        try:
            while drain.running:
                finished, _ = await asyncio.wait(
                    set(drain.running.values()), return_when=asyncio.FIRST_COMPLETED
                )
                for slot, task in list(drain.running.items()):
                    if task in finished:
                        del drain.running[slot]
                        done += task.result()  # one executor's failure is the vectorizer's
        except BaseException:
            # the others stop too (their batches in hand roll back) rather than go on
            # claiming while the vectorizer backs off
            for task in drain.running.values():
                task.cancel()
            await asyncio.gather(*drain.running.values(), return_exceptions=True)
            raise
        return done

    def _top_up(self, components: _Components, drain: _Drain) -> None:
        """Starts an executor in every free slot below the level, until the queue ran dry."""
        for slot in range(drain.level):
            self._start(components, drain, slot)

    def _start(self, components: _Components, drain: _Drain, slot: int) -> None:
        if slot not in drain.running and not drain.drained:
            drain.running[slot] = asyncio.create_task(self._executor_loop(components, slot, drain))

    def _publish_level(self, vectorizer: Vectorizer, drain: _Drain) -> None:
        self.reporter.concurrency(vectorizer, drain.level, adaptive=drain.controller is not None)

    def _adaptive(self, components: _Components) -> AdaptiveConcurrency:
        if self.concurrency is None:
            self.concurrency = AdaptiveConcurrency(self.label, self._budget.share)
        self.concurrency.restart_window()
        components.embedder.on_pushback = self.concurrency.congested
        return self.concurrency

    async def _nothing_queued(self, conn: psycopg.AsyncConnection) -> int:
        """A once-run with an empty queue: no pipeline or embedder is built (nor their
        packages imported), only the vector index is checked, as after any drain; the config
        is read into models (pydantic imported) only when SQL says the index may be due."""
        state = await catalog.idle_state(conn, self.vectorizer_id)
        if state is None:
            self.gone = True
            return 0
        disabled, index_maybe_due = state
        if disabled or not index_maybe_due:
            return 0
        vectorizer = await catalog.load_vectorizer(conn, self.vectorizer_id)
        if vectorizer is None:
            self.gone = True
        elif not vectorizer.disabled:
            self._loaded = vectorizer
            await self.indexer.after_drain(vectorizer, wait=True)
        return 0

    async def _executor_loop(self, components: _Components, slot: int, drain: _Drain) -> int:
        from vectorizer.executor import Executor
        from vectorizer.stages.writing import make_writer

        vectorizer = components.vectorizer
        executor = Executor(
            vectorizer,
            components.pipeline,
            components.embedder,
            make_writer(vectorizer),
            build_queries(vectorizer),
            self._settings.row_retry,
        )
        done = 0
        disabled: bool | None = None  # as the last batch found it; None: ask
        async with self._connections.get() as conn:
            # a slot above the level stops between batches: the controller shrank the pool
            while not self._shutdown.is_set() and slot < drain.level:
                if disabled is None:
                    disabled = await catalog.is_disabled(conn, vectorizer.id)
                if disabled:
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
                disabled = result.disabled
                await self.reporter.report(vectorizer, result)
                self.indexer.poke(vectorizer)  # a queue that never empties still gets its index
                # live changes are drained: a running re-embed may queue its next slice
                if result.claimed == 0 and not await self._feed_reembed(
                    conn, vectorizer, executor.batch_size.rows
                ):
                    drain.drained = True
                    break
                if drain.controller is not None:
                    drain.controller.batch_done(result.chunks)
                    self._publish_level(vectorizer, drain)
                    if result.claimed >= result.requested:
                        self._top_up(components, drain)
        return done

    async def _feed_reembed(
        self, conn: psycopg.AsyncConnection, vectorizer: Vectorizer, batch_size: int
    ) -> bool:
        """Whether a slice of a re-embed (`batch_size` keys) was queued for this executor to
        claim."""
        if self._altered:
            return False
        fed = await reembed.feed(conn, vectorizer.id, batch_size)
        if fed == reembed.SWAP_DUE and await reembed.swap(conn, vectorizer.id):
            log.info("vectorizer %s: the new store covers every key; swapped in", self.label)
            self._altered = True  # the destination moved: reload before writing again
        return fed > 0

    async def _failed(self, exc: Exception) -> None:
        """Once per breaker trip."""
        delay = self._breaker.trip()
        # the catalog row read last, for error rows, even when building the embedder failed
        await self.reporter.vectorizer_failed(self._loaded, exc, delay, self.label)

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
