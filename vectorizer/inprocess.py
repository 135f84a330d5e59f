"""`vectorizer.Worker`: the worker inside your own process, shaped like pgai's `Worker`.

    from vectorizer import Worker
    Worker(db_url, once=True).run()                  # blocks; returns None or the error
    error = await Worker(db_url).arun()               # inside an event loop (or: await Worker(...))

It installs no signal handlers and configures no logging: the host service owns both. Stop a
running worker with `await worker.request_graceful_shutdown()` (or `worker.request_shutdown()`
from the loop's thread): the batches in hand finish or roll back, a last heartbeat is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from datetime import timedelta
from typing import Any

from vectorizer.settings import WorkerSettings


class WorkerError(Exception):
    """The worker stopped on an error; the log lines before it say which."""


class Worker:
    def __init__(
        self,
        db_url: str,
        poll_interval: timedelta | float = 5.0,
        once: bool = False,
        vectorizer_ids: Sequence[int | str] = (),
        exit_on_error: bool | None = None,
        concurrency: int | None = None,
        *,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        seconds = (
            poll_interval.total_seconds()
            if isinstance(poll_interval, timedelta)
            else float(poll_interval)
        )
        if seconds <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        if concurrency is not None and not 1 <= concurrency <= 50:
            raise ValueError(f"concurrency must be between 1 and 50, got {concurrency}")
        self.settings = WorkerSettings(
            db_url=db_url,
            vectorizer_ids=[str(v) for v in vectorizer_ids],
            concurrency=concurrency,
            once=once,
            poll_interval=seconds,
            exit_on_error=exit_on_error,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
        self._running: Any = None  # the internal worker while it runs
        self._stop_requested = False
        self.exit_code: int | None = None

    async def arun(self) -> Exception | None:
        """Runs until done (`once`) or shut down; None on success, else the error (as pgai's
        `await Worker.run()` returns it)."""
        from vectorizer.worker import Worker as _Worker

        worker = _Worker(self.settings)
        self._running = worker
        if self._stop_requested:
            worker.request_shutdown()
        try:
            self.exit_code = await worker.run()
        finally:
            self._running = None
        if self.exit_code == 0:
            return None
        if worker.stop_error is not None:
            return worker.stop_error
        if worker.setup_error is not None:
            return worker.setup_error
        return WorkerError(f"the worker stopped with exit status {self.exit_code}")

    def run(self) -> Exception | None:
        """`arun()` in a new event loop: blocks until done or shut down."""
        return asyncio.run(self.arun())

    def __await__(self) -> Generator[Any, None, Exception | None]:
        return self.arun().__await__()

    def request_shutdown(self) -> None:
        self._stop_requested = True
        if self._running is not None:
            self._running.request_shutdown()

    async def request_graceful_shutdown(self) -> None:
        self.request_shutdown()
