"""What a worker run is told to do: the CLI's flags and env vars, resolved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from vectorizer import backoff
from vectorizer.backoff import Backoff
from vectorizer.concurrency import DEFAULT_MAX_CONNECTIONS


@dataclass
class WorkerSettings:
    db_url: str
    vectorizer_ids: list[str] = field(default_factory=list)
    concurrency: int | None = None
    # connections this worker may open; the adaptive concurrency stays within it
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    once: bool = False
    poll_interval: float = 5.0
    exit_on_error: bool | None = None
    row_retry: Backoff = backoff.ROW_RETRY  # a failed row's requeue delay
    breaker: Backoff = backoff.BREAKER  # after a vectorizer-level failure
    database_backoff: Backoff = backoff.DATABASE  # after a lost database connection
    # Grace for the batches in hand after SIGTERM; then they roll back (their keys stay queued).
    # Well under `docker stop`'s 10 s, so the final heartbeat is written before a SIGKILL.
    shutdown_timeout: float = 5.0
    db_retry_attempts: int = 5
    metrics_port: int | None = None
    # loopback unless told otherwise: the status page is for whoever can reach the port
    metrics_host: str = "127.0.0.1"
    # /healthz turns unhealthy when work is pending but nothing progressed for this long
    stuck_after: float = 300.0
    progress_out: TextIO | None = None  # once mode on a terminal: progress bars here

    @property
    def should_exit_on_error(self) -> bool:
        return self.once if self.exit_on_error is None else self.exit_on_error
