"""The worker's main loop: discover vectorizers, run each one's executors, LISTEN, shut down.

Every vectorizer gets its own runner task, so vectorizers progress concurrently and one
vectorizer's trouble (missing key, bad config, provider down) stays its own: the runner records
the error once, backs off (a circuit breaker that probes again later) and the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta
from typing import Any

import psycopg

from vectorizer.concurrency import ConnectionBudget
from vectorizer.observability import tracing
from vectorizer.observability.metrics import MetricsServer
from vectorizer.observability.progress import Progress, ProgressDisplay
from vectorizer.observability.status_page import StatusPage
from vectorizer.observability.telemetry import telemetry
from vectorizer.runner import VectorizerRunner, connect
from vectorizer.settings import WorkerSettings
from vectorizer.tracking import WorkerTracking

__all__ = ["WorkerSettings", "WorkerSetupError", "run_worker"]

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "ai_vectorizer_queue"
# The oldest schema this worker can serve; older ones lack the NOTIFY triggers and retry columns.
MIN_SCHEMA_VERSION = (0, 1, 0)


class WorkerSetupError(Exception):
    """The worker cannot start: the message says what to do."""


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


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.shutdown = asyncio.Event()
        self._runners: dict[int, VectorizerRunner] = {}
        self._budget = ConnectionBudget(settings.max_connections)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._discover = asyncio.Event()
        self._tracking = WorkerTracking(settings.db_url, timedelta(seconds=settings.poll_interval))
        self._metrics_server: MetricsServer | None = None
        self._progress: ProgressDisplay | None = None
        self.errors: list[Exception] = []
        self._served: list[int] = []  # the vectorizers this worker runs: metrics, health, page
        self.setup_error: Exception | None = None

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
            # pgai's words, ids as numbers; the unknown ones after them
            raise WorkerSetupError(
                f"invalid vectorizers, wanted: {_as_ids(wanted)}, "
                f"got: {sorted(row[0] for row in found)} (unknown: {_as_ids(missing)})"
            )
        return [row[0] for row in found]

    async def run(self) -> int:
        """Runs until done (once) or shut down; returns the process exit code."""
        ids = await self._setup()
        if ids is None:
            # pgai's contract: without exit-on-error a setup failure is logged, not an error exit
            return 1 if self.settings.should_exit_on_error else 0
        self._served = ids
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

    async def _setup(self) -> list[int] | None:
        """Checks the schema and resolves `-i`; None when that failed (logged). A daemon that
        need not exit on errors waits for it to succeed (e.g. a worker started before
        `vectorizer install` ran), checking again every poll interval."""
        while True:
            try:
                async with await connect(self.settings.db_url, "vectorizer-worker") as conn:
                    await check_schema(conn)
                    return await self._selected_ids(conn)
            except WorkerSetupError as exc:
                self.setup_error = exc
                log.error("%s", exc)
            except psycopg.OperationalError as exc:
                self.setup_error = exc
                log.error("unable to connect to database: %s", _one_line(exc))
            if self.settings.once or self.settings.should_exit_on_error:
                return None
            await self._sleep(self.settings.poll_interval)
            if self.shutdown.is_set():
                return None

    async def _start_observability(self) -> list[asyncio.Task[None]]:
        tasks = []
        if self.settings.metrics_port is not None:
            telemetry.health.stuck_after = self.settings.stuck_after
            metrics = telemetry.enable_metrics()
            page = StatusPage(
                self.settings.db_url,
                lambda: self._served,
                telemetry.health,
                telemetry.history,
                lambda: self._tracking.worker_id,
            )
            self._metrics_server = MetricsServer(
                metrics,
                telemetry.health,
                self.settings.metrics_host,
                self.settings.metrics_port,
                routes=page.routes(),
            )
            await self._metrics_server.start()
            tasks.append(asyncio.create_task(self._poll_queue_sizes(), name="queue-sizes"))
        if self.settings.once and self.settings.progress_out is not None:
            self._progress = ProgressDisplay(self.settings.progress_out)
            tasks.append(asyncio.create_task(self._progress.run(), name="progress"))
        return tasks

    async def _poll_queue_sizes(self) -> None:
        """Queue depths of the served vectorizers for /metrics and the health check (bounded
        counts, cheap)."""
        interval = min(self.settings.poll_interval, 15.0)
        while True:
            try:
                async with await connect(self.settings.db_url, "vectorizer-worker-metrics") as c:
                    cursor = await c.execute(
                        "select v.id, v.name,"
                        " ai._vectorizer_count_rows(v.queue_schema, v.queue_table),"
                        " ai._vectorizer_count_rows(v.queue_schema, v.queue_failed_table)"
                        " from ai.vectorizer v where v.id = any(%s) and not v.disabled",
                        (self._served,),
                    )
                    rows = await cursor.fetchall()
                telemetry.queue_sizes(
                    {name: (p or 0, f or 0) for _, name, p, f in rows},
                    {vid: name for vid, name, _, _ in rows},
                )
            except psycopg.Error as exc:
                log.warning("could not read queue sizes: %s", _one_line(exc))
            await asyncio.sleep(interval)

    def _runner(self, vectorizer_id: int) -> VectorizerRunner:
        runner = self._runners.get(vectorizer_id)
        if runner is None:
            runner = VectorizerRunner(
                vectorizer_id, self.settings, self._tracking, self.shutdown, self._budget
            )
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
        failed = [
            vectorizer_id
            for vectorizer_id, task in zip(ids, drains, strict=True)
            if not task.cancelled() and task.result()
        ]
        if failed:
            # each one's reason was logged when it failed; this says which, in one place
            log.error(
                "once mode: %d of %d vectorizers failed: %s",
                len(failed),
                len(ids),
                ", ".join(self._runners[i].label for i in failed),
            )
        for vectorizer_id in ids:
            counts = self._runner(vectorizer_id).reuse_total
            log.info("once mode summary", extra={"vectorizer_id": vectorizer_id, **counts.fields()})
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
        async with await connect(self.settings.db_url, "vectorizer-worker") as conn:
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
        self._served = ids
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
                async with await connect(self.settings.db_url, "vectorizer-worker-listen") as conn:
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


def _as_ids(wanted: list[str]) -> list[int | str]:
    return [int(w) if w.isdigit() else w for w in wanted]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


async def run_worker(settings: WorkerSettings) -> int:
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.request_shutdown)
    return await worker.run()
