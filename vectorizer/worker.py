"""The worker's main loop: discover vectorizers, route notifications to their runners, shut
down.

Every vectorizer gets its own runner task (`VectorizerRunner.run`), so vectorizers progress
concurrently and one vectorizer's trouble (missing key, bad config, provider down, database
lost) stays its own: the runner reports it, backs off and the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta
from typing import Any

import psycopg

from vectorizer import catalog
from vectorizer.concurrency import ConnectionBudget
from vectorizer.observability import tracing
from vectorizer.observability.metrics import MetricsServer
from vectorizer.observability.progress import Progress, ProgressDisplay
from vectorizer.observability.status_page import StatusPage
from vectorizer.observability.telemetry import telemetry
from vectorizer.reporting import one_line
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
    row = await (await conn.execute(catalog.SCHEMA_PRESENCE)).fetchone()
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
    row = await (await conn.execute(catalog.INSTALLED_VERSION)).fetchone()
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
        # the failure that ended a runner (once mode, or a daemon with exit-on-error)
        self.stop_error: Exception | None = None
        self._served: list[int] = []  # the vectorizers this worker runs: metrics, health, page
        self.setup_error: Exception | None = None

    def request_shutdown(self) -> None:
        if not self.shutdown.is_set():
            log.info("shutdown requested: finishing the batches in hand")
        self.shutdown.set()
        self._discover.set()

    async def _selected_ids(
        self, conn: psycopg.AsyncConnection, all_ids: str = catalog.ALL_IDS
    ) -> list[int]:
        """The vectorizers named by -i; without -i those `all_ids` lists."""
        wanted = self.settings.vectorizer_ids
        if not wanted:
            cursor = await conn.execute(all_ids)
            return [row[0] for row in await cursor.fetchall()]
        ids = [int(w) for w in wanted if w.isdigit()]
        names = [w for w in wanted if not w.isdigit()]
        cursor = await conn.execute(catalog.IDS_BY_ID_OR_NAME, (ids, names))
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
                log.error("unable to connect to database: %s", one_line(exc))
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
                    cursor = await c.execute(catalog.QUEUE_SIZES, (self._served,))
                    rows = await cursor.fetchall()
                telemetry.queue_sizes(
                    {name: (p or 0, f or 0) for _, name, p, f in rows},
                    {vid: name for vid, name, _, _ in rows},
                )
            except psycopg.Error as exc:
                log.warning("could not read queue sizes: %s", one_line(exc))
            await asyncio.sleep(interval)

    def _runner(self, vectorizer_id: int) -> VectorizerRunner:
        runner = self._runners.get(vectorizer_id)
        if runner is None:
            progress = None
            if self._progress is not None:
                progress = Progress(name=str(vectorizer_id))
                self._progress.bars[vectorizer_id] = progress
            runner = VectorizerRunner(
                vectorizer_id, self.settings, self._tracking, self.shutdown, self._budget, progress
            )
            self._runners[vectorizer_id] = runner
        return runner

    async def _close_runners(self) -> None:
        for runner in self._runners.values():
            with contextlib.suppress(Exception):
                await runner.close()

    # --- once mode ---------------------------------------------------------------------

    async def _run_once(self, ids: list[int]) -> int:
        if not ids:
            log.warning("no vectorizers found")
        drains = [
            asyncio.create_task(self._runner(i).run(once=True), name=f"vectorizer-{i}") for i in ids
        ]
        for drain in drains:
            drain.add_done_callback(self._runner_done)
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
            counts = self._runner(vectorizer_id).reporter.reuse_total
            log.info("once mode summary", extra={"vectorizer_id": vectorizer_id, **counts.fields()})
        log.info("once mode, exiting...")
        if failed and self.settings.should_exit_on_error:
            return 1
        return 0

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
                    log.error("unable to connect to database: %s", one_line(exc))
                    if self.settings.should_exit_on_error:
                        return 1
                except WorkerSetupError as exc:
                    # A vectorizer named by -i was dropped: the others keep their runners.
                    log.error("%s", exc)
                    self._tracking.count_error(str(exc))
                    if self.settings.should_exit_on_error:
                        return 1
                exit_code = self._exit_code_if_failed()
                if exit_code is not None:
                    return exit_code
                self._discover.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._discover.wait(), self.settings.poll_interval)
                for runner in self._runners.values():
                    runner.wake()  # the poll interval is the fallback wake-up
        finally:
            self.shutdown.set()
            listener.cancel()
            await self._stop_runner_tasks()
        return self._exit_code_if_failed() or 0

    def _exit_code_if_failed(self) -> int | None:
        """1 once a runner stopped on a failure (it only does so with exit-on-error)."""
        return 1 if self.stop_error is not None else None

    def _runner_done(self, task: asyncio.Task[Exception | None]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.stop_error = task.result() or self.stop_error
        self._discover.set()  # ends the wait at once: exit, or start the runner again

    async def _sync_runners(self) -> None:
        async with await connect(self.settings.db_url, "vectorizer-worker") as conn:
            ids = await self._selected_ids(conn, catalog.ENABLED_IDS)
        if not ids:
            log.warning("no vectorizers found")
        self._served = ids
        for vectorizer_id in ids:
            task = self._tasks.get(vectorizer_id)
            if task is None or task.done():
                runner = self._runner(vectorizer_id)
                runner.wake()
                task = asyncio.create_task(
                    runner.run(once=False), name=f"vectorizer-{vectorizer_id}"
                )
                task.add_done_callback(self._runner_done)
                self._tasks[vectorizer_id] = task
        for vectorizer_id, task in list(self._tasks.items()):
            if vectorizer_id not in ids:
                task.cancel()
                del self._tasks[vectorizer_id]

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
                log.warning("LISTEN connection lost (%s); reconnecting", one_line(exc))
                await self._sleep(self.settings.database_backoff.delay(failures))

    def _on_notify(self, payload: str) -> None:
        try:
            vectorizer_id = int(payload)
        except ValueError:
            return
        runner = self._runners.get(vectorizer_id)
        if runner is None or vectorizer_id not in self._tasks:
            self._discover.set()  # a vectorizer we don't run yet
        else:
            runner.wake()

    async def _stop_runner_tasks(self) -> None:
        for runner in self._runners.values():
            runner.wake()
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


async def run_worker(settings: WorkerSettings) -> int:
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.request_shutdown)
    return await worker.run()
