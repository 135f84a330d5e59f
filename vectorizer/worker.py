"""The worker's main loop: discover vectorizers, run each one's executors, LISTEN, shut down.

Every vectorizer gets its own runner task, so vectorizers progress concurrently and one
vectorizer's trouble (missing key, bad config, provider down) stays its own: the runner records
the error once, backs off (a circuit breaker that probes again later) and the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TextIO

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from pydantic import ValidationError

from vectorizer.config import Vectorizer
from vectorizer.embedders import Embedder, make_embedder
from vectorizer.errors import VectorizerError
from vectorizer.executor import BatchResult, Executor, RetryPolicy
from vectorizer.observability import tracing
from vectorizer.observability.metrics import MetricsServer
from vectorizer.observability.progress import Progress, ProgressDisplay
from vectorizer.observability.telemetry import telemetry
from vectorizer.queue import build_queries
from vectorizer.stages.pipeline import RowPipeline
from vectorizer.stages.writing import make_writer
from vectorizer.tracking import WorkerTracking

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "ai_vectorizer_queue"
# idle connections a runner keeps between drains (more executors connect as they need)
MAX_IDLE_CONNECTIONS = 4
# The oldest schema this worker can serve; older ones lack the NOTIFY triggers and retry columns.
MIN_SCHEMA_VERSION = (0, 1, 0)


class WorkerSetupError(Exception):
    """The worker cannot start: the message says what to do."""


@dataclass
class WorkerSettings:
    db_url: str
    vectorizer_ids: list[str] = field(default_factory=list)
    concurrency: int | None = None
    once: bool = False
    poll_interval: float = 5.0
    exit_on_error: bool | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_base_seconds: float = 30.0
    breaker_max_seconds: float = 600.0
    # Grace for the batches in hand after SIGTERM; then they roll back (their keys stay queued).
    # Well under `docker stop`'s 10 s, so the final heartbeat is written before a SIGKILL.
    shutdown_timeout: float = 5.0
    db_retry_attempts: int = 5
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    # /healthz turns unhealthy when work is pending but nothing progressed for this long
    stuck_after: float = 300.0
    progress_out: TextIO | None = None  # once mode on a terminal: progress bars here

    @property
    def should_exit_on_error(self) -> bool:
        return self.once if self.exit_on_error is None else self.exit_on_error


def _version_tuple(version: str) -> tuple[int, ...]:
    core = version.split("-")[0].split("+")[0]
    return tuple(int(part) for part in core.split(".") if part.isdigit())


async def check_schema(conn: psycopg.AsyncConnection) -> None:
    row = await (
        await conn.execute(
            "select to_regclass('ai._vectorizer_lib_version') is not null,"
            " to_regclass('ai.pgai_lib_version') is not null"
        )
    ).fetchone()
    assert row is not None
    ours, pgai = row
    if not ours:
        if pgai:
            raise WorkerSetupError(
                "the ai schema in this database was installed by pgai, not by vectorizer: "
                "run `vectorizer install --db-url <url>` to upgrade it"
            )
        raise WorkerSetupError(
            "vectorizer is not installed in the database (pgai is not installed in the "
            "database): run `vectorizer install --db-url <url>` first"
        )
    version = await _installed_version(conn)
    if version is None or _version_tuple(version) < MIN_SCHEMA_VERSION:
        raise WorkerSetupError(
            f"the ai schema in the database is version {version}, this worker needs "
            f"{'.'.join(map(str, MIN_SCHEMA_VERSION))} or newer: run "
            "`vectorizer install --db-url <url>` to upgrade it"
        )


async def _installed_version(conn: psycopg.AsyncConnection) -> str | None:
    cursor = await conn.execute(
        "select version from ai._vectorizer_lib_version where name = 'vectorizer'"
    )
    row = await cursor.fetchone()
    return row[0] if row else None


async def load_vectorizer(conn: psycopg.AsyncConnection, vectorizer_id: int) -> Vectorizer | None:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            """
            select id, name, source_schema, source_table, source_pk, queue_schema, queue_table,
                   coalesce(queue_failed_table, '_vectorizer_q_failed_' || id)
                       as queue_failed_table,
                   disabled, config
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
        self.progress: Progress | None = None
        self._loaded: Vectorizer | None = None
        self._connections = _Connections(
            settings.db_url,
            f"vectorizer-worker[{vectorizer_id}]: executor",
            keep=MAX_IDLE_CONNECTIONS,
        )

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
        pipeline = RowPipeline(vectorizer.config)
        embedder = make_embedder(vectorizer.config.embedding)
        await embedder.setup()
        self._components = _Components(key, vectorizer, pipeline, embedder)
        return self._components

    async def drain(self) -> int:
        """Processes the queue until it is empty; returns the rows embedded."""
        async with self._connections.get() as conn:
            try:
                components = await self._build(conn)
            except ValidationError as exc:
                raise VectorizerError(
                    f"invalid vectorizer config: {_first_validation_error(exc)}", step="config"
                ) from exc
        if components is None or components.vectorizer.disabled:
            return 0
        vectorizer = components.vectorizer
        concurrency = self._settings.concurrency or vectorizer.config.processing.concurrency or 1
        log.info("running vectorizer vectorizer_id=%s concurrency=%s", vectorizer.id, concurrency)
        if self.progress is not None:
            self.progress.name = vectorizer.name
            self.progress.total = await _pending_estimate(self._settings.db_url, vectorizer.id)
        started = time.monotonic()
        self.chunks_written = 0
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
        log.info(
            "finished processing vectorizer items=%s chunks=%s seconds=%.3f vectorizer_id=%s",
            items,
            self.chunks_written,
            time.monotonic() - started,
            vectorizer.id,
        )
        self.breaker.reset()
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
                with tracing.span("vectorizer.batch", vectorizer_id=vectorizer.id):
                    result = await executor.run_batch(conn)
                done += result.rows_done
                self.chunks_written += result.chunks
                telemetry.batch_committed(vectorizer.name, result.rows_done, result.chunks)
                for _, error in result.failed:
                    telemetry.failed(vectorizer.name, error.step, "row")
                if self.progress is not None:
                    self.progress.rows += result.rows_done + len(result.failed)
                    self.progress.chunks += result.chunks
                await self._report(result)
                if result.claimed == 0:
                    break
        return done

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
            self.vectorizer_id,
            message,
            delay,
            reason,
        )
        self._tracking.record_error(f"vectorizer {self.vectorizer_id}: {reason}")
        label = loaded.name if loaded else str(self.vectorizer_id)
        telemetry.failed(label, details.get("step", "config"), "vectorizer")
        await self._tracking.vectorizer_error(self.vectorizer_id, message, details)
        await self._tracking.progress(self.vectorizer_id, 0, reason)

    async def release_connections(self) -> None:
        await self._connections.close()

    async def close(self) -> None:
        await self._connections.close()
        if self._components is not None:
            await self._components.embedder.aclose()
            self._components = None


def _first_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg')}"


async def _connect(db_url: str, application_name: str) -> psycopg.AsyncConnection:
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
        conn = await _connect(self._db_url, self._name)
        await register_vector_async(conn)
        return conn

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()


async def _pending_estimate(db_url: str, vectorizer_id: int) -> int:
    async with await _connect(db_url, "vectorizer-worker-progress") as conn:
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


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.shutdown = asyncio.Event()
        self._runners: dict[int, VectorizerRunner] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._discover = asyncio.Event()
        self._tracking = WorkerTracking(settings.db_url, timedelta(seconds=settings.poll_interval))
        self._metrics_server: MetricsServer | None = None
        self._progress: ProgressDisplay | None = None
        self.errors: list[Exception] = []

    def request_shutdown(self) -> None:
        if not self.shutdown.is_set():
            log.info("shutdown requested: finishing the batches in hand")
        self.shutdown.set()
        self._discover.set()

    async def _selected_ids(self, conn: psycopg.AsyncConnection) -> list[int]:
        wanted = self.settings.vectorizer_ids
        if not wanted:
            cursor = await conn.execute("select id from ai.vectorizer order by id")
            return [row[0] for row in await cursor.fetchall()]
        ids = [int(w) for w in wanted if w.isdigit()]
        names = [w for w in wanted if not w.isdigit()]
        cursor = await conn.execute(
            "select id, name from ai.vectorizer where id = any(%s) or name = any(%s) order by id",
            (ids, names),
        )
        found = await cursor.fetchall()
        got = {str(row[0]) for row in found} | {row[1] for row in found}
        missing = [w for w in wanted if w not in got]
        if missing:
            raise WorkerSetupError(
                f"invalid vectorizers, wanted: {wanted}, got: {sorted(row[0] for row in found)}"
                f" (unknown: {missing})"
            )
        return [row[0] for row in found]

    async def run(self) -> int:
        """Runs until done (once) or shut down; returns the process exit code."""
        try:
            async with await _connect(self.settings.db_url, "vectorizer-worker") as conn:
                await check_schema(conn)
                ids = await self._selected_ids(conn)
        except WorkerSetupError as exc:
            log.error("%s", exc)
            return 1
        except psycopg.OperationalError as exc:
            log.error("unable to connect to database: %s", _one_line(exc))
            return 1
        await self._tracking.start()
        traced_by = tracing.configure()
        if traced_by:
            log.info("tracing enabled: %s", ", ".join(traced_by))
        background = await self._start_observability()
        try:
            if self.settings.once:
                return await self._run_once(ids)
            return await self._run_daemon()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._metrics_server is not None:
                await self._metrics_server.stop()
            await self._close_runners()
            await self._tracking.stop()
            tracing.shutdown()
            log.info("worker stopped")

    async def _start_observability(self) -> list[asyncio.Task[None]]:
        tasks = []
        if self.settings.metrics_port is not None:
            telemetry.health.stuck_after = self.settings.stuck_after
            metrics = telemetry.enable_metrics()
            self._metrics_server = MetricsServer(
                metrics, telemetry.health, self.settings.metrics_host, self.settings.metrics_port
            )
            await self._metrics_server.start()
            tasks.append(asyncio.create_task(self._poll_queue_sizes(), name="queue-sizes"))
        if self.settings.once and self.settings.progress_out is not None:
            self._progress = ProgressDisplay(self.settings.progress_out)
            tasks.append(asyncio.create_task(self._progress.run(), name="progress"))
        return tasks

    async def _poll_queue_sizes(self) -> None:
        """Queue depths for /metrics and the health check (bounded counts, cheap)."""
        interval = min(self.settings.poll_interval, 15.0)
        while True:
            try:
                async with await _connect(self.settings.db_url, "vectorizer-worker-metrics") as c:
                    cursor = await c.execute(
                        "select v.name,"
                        " ai._vectorizer_count_rows(v.queue_schema, v.queue_table),"
                        " ai._vectorizer_count_rows(v.queue_schema, v.queue_failed_table)"
                        " from ai.vectorizer v where not v.disabled"
                    )
                    rows = await cursor.fetchall()
                telemetry.queue_sizes({name: (p or 0, f or 0) for name, p, f in rows})
            except psycopg.Error as exc:
                log.warning("could not read queue sizes: %s", _one_line(exc))
            await asyncio.sleep(interval)

    def _runner(self, vectorizer_id: int) -> VectorizerRunner:
        runner = self._runners.get(vectorizer_id)
        if runner is None:
            runner = VectorizerRunner(vectorizer_id, self.settings, self._tracking, self.shutdown)
            self._runners[vectorizer_id] = runner
            if self._progress is not None:
                runner.progress = Progress(name=str(vectorizer_id))
                self._progress.bars[vectorizer_id] = runner.progress
        return runner

    async def _close_runners(self) -> None:
        for runner in self._runners.values():
            with contextlib.suppress(Exception):
                await runner.close()

    # --- once mode ---------------------------------------------------------------------

    async def _run_once(self, ids: list[int]) -> int:
        if not ids:
            log.warning("no vectorizers found")
        drains = [asyncio.create_task(self._drain_once(i), name=f"vectorizer-{i}") for i in ids]
        await self._until_done_or_shutdown(drains)
        failed = [task.result() for task in drains if not task.cancelled() and task.result()]
        log.info("once mode, exiting...")
        if failed and self.settings.should_exit_on_error:
            return 1
        return 0

    async def _drain_once(self, vectorizer_id: int) -> Exception | None:
        runner = self._runner(vectorizer_id)
        for attempt in range(self.settings.db_retry_attempts + 1):
            try:
                await runner.drain()
                if runner.progress is not None:
                    runner.progress.finished = True
                return None
            except psycopg.OperationalError as exc:
                if attempt == self.settings.db_retry_attempts or self.shutdown.is_set():
                    log.error("unable to connect to database: %s", _one_line(exc))
                    self._tracking.record_error(f"database error: {_one_line(exc)}")
                    return exc
                await self._sleep(min(30.0, 0.5 * 2**attempt))
            except Exception as exc:
                await runner.record_vectorizer_error(exc)
                return exc
        return None

    async def _until_done_or_shutdown(self, tasks: list[asyncio.Task[Exception | None]]) -> None:
        """Waits for `tasks`; once a shutdown is requested, only for the shutdown grace."""
        pending = set(tasks)
        shutdown = asyncio.create_task(self.shutdown.wait())
        try:
            while pending and not self.shutdown.is_set():
                _, pending = await asyncio.wait(
                    pending | {shutdown}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(shutdown)
        finally:
            shutdown.cancel()
        await self._cancel_after_grace(pending)

    # --- daemon mode -------------------------------------------------------------------

    async def _run_daemon(self) -> int:
        listener = asyncio.create_task(self._listen(), name="listen")
        try:
            while not self.shutdown.is_set():
                try:
                    await self._sync_runners()
                except psycopg.OperationalError as exc:
                    log.error("unable to connect to database: %s", _one_line(exc))
                    if self.settings.should_exit_on_error:
                        return 1
                except WorkerSetupError as exc:
                    # A vectorizer named by -i was dropped: the others keep their runners.
                    log.error("%s", exc)
                    self._tracking.record_error(str(exc))
                    if self.settings.should_exit_on_error:
                        return 1
                exit_code = self._exit_code_if_failed()
                if exit_code is not None:
                    return exit_code
                self._discover.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._discover.wait(), self.settings.poll_interval)
                for runner in self._runners.values():
                    runner.wake.set()  # the poll interval is the fallback wake-up
        finally:
            self.shutdown.set()
            listener.cancel()
            await self._stop_runner_tasks()
        return self._exit_code_if_failed() or 0

    def _exit_code_if_failed(self) -> int | None:
        if self.errors and self.settings.should_exit_on_error:
            return 1
        return None

    async def _sync_runners(self) -> None:
        async with await _connect(self.settings.db_url, "vectorizer-worker") as conn:
            ids = (
                await self._selected_ids(conn)
                if self.settings.vectorizer_ids
                else [
                    row[0]
                    for row in await (
                        await conn.execute(
                            "select id from ai.vectorizer where not disabled order by id"
                        )
                    ).fetchall()
                ]
            )
        if not ids:
            log.warning("no vectorizers found")
        for vectorizer_id in ids:
            task = self._tasks.get(vectorizer_id)
            if task is None or task.done():
                runner = self._runner(vectorizer_id)
                runner.wake.set()
                self._tasks[vectorizer_id] = asyncio.create_task(
                    self._runner_loop(runner), name=f"vectorizer-{vectorizer_id}"
                )
        for vectorizer_id, task in list(self._tasks.items()):
            if vectorizer_id not in ids:
                task.cancel()
                del self._tasks[vectorizer_id]

    async def _runner_loop(self, runner: VectorizerRunner) -> None:
        try:
            await self._run_runner(runner)
        finally:
            await runner.release_connections()  # the runner may be gone or cancelled for good

    async def _run_runner(self, runner: VectorizerRunner) -> None:
        db_failures = 0
        while not self.shutdown.is_set() and not runner.gone:
            await runner.wake.wait()
            runner.wake.clear()
            if runner.breaker.is_open:
                continue
            try:
                await runner.drain()
                db_failures = 0
            except psycopg.OperationalError as exc:
                db_failures += 1
                log.error("unable to connect to database: %s", _one_line(exc))
                self._tracking.record_error(f"database error: {_one_line(exc)}")
                await self._sleep(min(30.0, 0.5 * 2**db_failures))
                runner.wake.set()
            except Exception as exc:
                await runner.record_vectorizer_error(exc)
                self.errors.append(exc)
                if self.settings.should_exit_on_error:
                    self._discover.set()
                    return

    async def _listen(self) -> None:
        failures = 0
        while not self.shutdown.is_set():
            try:
                async with await _connect(self.settings.db_url, "vectorizer-worker-listen") as conn:
                    await conn.execute(f"listen {NOTIFY_CHANNEL}")
                    failures = 0
                    # Commits made while we were not listening sent no wake-up we could hear.
                    self._discover.set()
                    async for notify in conn.notifies():
                        self._on_notify(notify.payload)
            except psycopg.OperationalError as exc:
                failures += 1
                log.warning("LISTEN connection lost (%s); reconnecting", _one_line(exc))
                await self._sleep(min(30.0, 0.5 * 2**failures))

    def _on_notify(self, payload: str) -> None:
        try:
            vectorizer_id = int(payload)
        except ValueError:
            return
        runner = self._runners.get(vectorizer_id)
        if runner is None or vectorizer_id not in self._tasks:
            self._discover.set()  # a vectorizer we don't run yet
        else:
            runner.wake.set()

    async def _stop_runner_tasks(self) -> None:
        for runner in self._runners.values():
            runner.wake.set()
        await self._cancel_after_grace(set(self._tasks.values()))

    async def _cancel_after_grace(self, tasks: set[asyncio.Task[Any]]) -> None:
        """Lets `tasks` finish their batches in hand for the shutdown grace, then cancels them."""
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
        for task in pending:
            task.cancel()  # rolls the batch in hand back; its keys stay queued
        await asyncio.gather(*pending, return_exceptions=True)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.shutdown.wait(), seconds)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


async def run_worker(settings: WorkerSettings) -> int:
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.request_shutdown)
    return await worker.run()
