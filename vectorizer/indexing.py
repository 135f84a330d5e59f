"""The vector index a vectorizer's `indexing` config asks for, built by the worker.

pgai's self-hosted worker never built it; its cloud job waited for an empty queue, so a store
under continuous ingest never got one (pgai #791). Here each runner owns an `IndexBuilder` that
checks, after every drain and at most every `check_interval` while the queue keeps filling,
whether the store holds `min_rows` rows and lacks its index, and then builds it:

* `CREATE INDEX CONCURRENTLY` on its own autocommit connection, so writes go on;
* one build at a time per database (a session advisory lock), plus pgai's per-table lock key so
  the timescaledb job path never builds the same index alongside;
* progress from `pg_stat_progress_create_index` copied into `ai._vectorizer_index_build`, which
  `ai.vectorizer_status` shows (`building 42% (loading tuples)`, `ready`, `failed: why`);
* a failed or interrupted build leaves an invalid index behind: it is dropped before the next
  attempt, which backs off exponentially.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from vectorizer.backoff import Backoff
from vectorizer.reporting import error_row
from vectorizer.tracking import WorkerTracking

if TYPE_CHECKING:
    from vectorizer.config import Vectorizer

log = logging.getLogger(__name__)

# pg_try_advisory_lock(DATABASE_LOCK) serialises builds in one database (two arbitrary int4s).
DATABASE_LOCK = (1982010643, 15)
# pgai's key for "a vector index is being built on this table" (with the table's oid)
PGAI_TABLE_LOCK = 1982010642
PGAI_DEFAULT_MIN_ROWS = 100_000
PROGRESS_PERIOD = 1.0
LOCK_POLL_SECONDS = 1.0
RETRY_BACKOFF = Backoff(60.0, 3600.0)
BUILDABLE = ("hnsw", "diskann")


@dataclass(frozen=True)
class IndexSettings:
    check_interval: float = 30.0
    maintenance_work_mem: str | None = None

    @classmethod
    def from_env(cls) -> IndexSettings:
        interval = os.environ.get("VECTORIZER_INDEX_CHECK_INTERVAL")
        return cls(
            check_interval=float(interval) if interval else cls.check_interval,
            maintenance_work_mem=os.environ.get("VECTORIZER_INDEX_MAINTENANCE_WORK_MEM") or None,
        )


@dataclass(frozen=True)
class IndexTarget:
    """Where the vectors of a vectorizer live, and the index its config asks for."""

    schema: str
    table: str
    column: str
    indexing: dict[str, Any]
    index_name: str

    @property
    def implementation(self) -> str:
        return str(self.indexing.get("implementation"))

    @property
    def min_rows(self) -> int:
        value = self.indexing.get("min_rows")
        return PGAI_DEFAULT_MIN_ROWS if value is None else int(value)

    @property
    def relation(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)


def index_target(vectorizer: Vectorizer) -> IndexTarget | None:
    """The index to build for `vectorizer`, or None when its config asks for none."""
    from vectorizer.config import TableDestination

    indexing = vectorizer.config.indexing
    if indexing is None or indexing.implementation not in BUILDABLE:
        return None
    destination = vectorizer.config.destination
    name = f"_vectorizer_ann_{vectorizer.id}"
    if vectorizer.shadow_version is not None:
        # the store's own index still has the plain name; this one moves with the shadow
        name += f"_v{vectorizer.shadow_version}"
    config = indexing.model_dump()
    if isinstance(destination, TableDestination):
        return IndexTarget(
            destination.target_schema, destination.target_table, "embedding", config, name
        )
    return IndexTarget(
        vectorizer.source_schema,
        vectorizer.source_table,
        destination.embedding_column,
        config,
        name,
    )


@dataclass(eq=False)  # identity, as any service object
class IndexBuilder:
    """Builds one vectorizer's vector index in the background when it is due."""

    db_url: str
    vectorizer_id: int
    tracking: WorkerTracking
    settings: IndexSettings = field(default_factory=IndexSettings.from_env)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _queue_for_lock: bool = field(default=False, init=False)
    _next_check: float = field(default=0.0, init=False)
    _failures: int = field(default=0, init=False)
    _retry_at: float = field(default=0.0, init=False)
    # the last problem written as an error row
    _reported: str | None = field(default=None, init=False)

    def poke(self, vectorizer: Vectorizer) -> None:
        """Starts a check (and a build if due) in the background, at most every interval."""
        if self._task is not None and not self._task.done():
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.settings.check_interval
        self._task = asyncio.create_task(
            self._check_and_build(vectorizer), name=f"index-{vectorizer.id}"
        )

    async def after_drain(self, vectorizer: Vectorizer, wait: bool) -> None:
        """The queue is empty: a good moment to check. `wait` (once mode) awaits the build."""
        if wait and self._task is not None:
            await asyncio.shield(self._task)
        if wait:
            self._next_check = 0.0  # a once-run's last word: check now, whatever the interval
            self._queue_for_lock = True  # ...and wait for another vectorizer's build
        self.poke(vectorizer)
        if wait and self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _check_and_build(self, vectorizer: Vectorizer) -> None:
        target = index_target(vectorizer)
        if target is None:
            return
        try:
            async with await _connect(self.db_url, "vectorizer-worker-index") as conn:
                if not await self._due(conn, target):
                    return
                if not await _access_method_exists(conn, target.implementation):
                    await self._unsupported(conn, target)
                    return
            await self._build(target)
        except psycopg.OperationalError as exc:
            log.warning("index check of vectorizer %s: %s", self.vectorizer_id, _one_line(exc))
        except Exception:  # a bug here must not take the runner down with it
            log.exception("index check of vectorizer %s failed", self.vectorizer_id)

    async def _due(self, conn: psycopg.AsyncConnection, target: IndexTarget) -> bool:
        cursor = await conn.execute(
            "select ai._vectorizer_ann_index(%s, %s, %s)",
            (target.schema, target.table, target.column),
        )
        row = await cursor.fetchone()
        if row is None or row[0] is not None:
            await _mark_ready_if_recorded(conn, self.vectorizer_id)
            return False
        if time.monotonic() < self._retry_at:
            return False
        counted = await conn.execute(
            sql.SQL(
                "select count(*) from (select 1 from {} where {} is not null limit %s) x"
            ).format(target.relation, sql.Identifier(target.column)),
            (target.min_rows,),
        )
        rows = await counted.fetchone()
        return rows is not None and rows[0] >= target.min_rows

    def _back_off(self) -> float:
        self._failures += 1
        delay = RETRY_BACKOFF.delay(self._failures - 1)
        self._retry_at = time.monotonic() + delay
        return delay

    async def _unsupported(self, conn: psycopg.AsyncConnection, target: IndexTarget) -> None:
        reason = (
            f"indexing_{target.implementation} needs the index access method "
            f"{target.implementation!r}, which this database lacks: install pgvectorscale "
            "(create extension vectorscale) or use ai.indexing_hnsw()"
        )
        cursor = await conn.execute(
            "select state from ai._vectorizer_index_build where vectorizer_id = %s",
            (self.vectorizer_id,),
        )
        previous = await cursor.fetchone()
        await _record(conn, self.vectorizer_id, "unsupported", error=reason)
        if previous is None or previous[0] != "unsupported":  # said once, not every check
            await self._report_once(reason)

    async def _report_once(self, reason: str) -> None:
        if self._reported == reason:
            return
        self._reported = reason
        log.error("vector index of vectorizer %s: %s", self.vectorizer_id, reason)
        message, details = error_row(None, "indexing", reason)
        await self.tracking.error_row(self.vectorizer_id, message, details)

    async def _build(self, target: IndexTarget) -> None:
        async with await _connect(self.db_url, "vectorizer-worker-index-build") as conn:
            locked = await _try_lock(conn, DATABASE_LOCK)
            # Waiting inside pg_advisory_lock would deadlock: CREATE INDEX CONCURRENTLY waits
            # for every open transaction, the waiting statement's included. Poll instead.
            while not locked and self._queue_for_lock:
                await asyncio.sleep(LOCK_POLL_SECONDS)
                locked = await _try_lock(conn, DATABASE_LOCK)
            if not locked:
                log.info("another vector index is being built in this database; later")
                self._next_check = time.monotonic()  # try again at the next drain or batch
                return
            if not await _pgai_table_lock(conn, target):
                return
            try:
                await self._build_locked(conn, target)
            finally:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("select pg_advisory_unlock_all()")

    async def _build_locked(self, conn: psycopg.AsyncConnection, target: IndexTarget) -> None:
        cursor = await conn.execute(
            "select ai._vectorizer_ann_index(%s, %s, %s)",
            (target.schema, target.table, target.column),
        )
        existing = await cursor.fetchone()
        if existing is not None and existing[0] is not None:
            return  # another worker finished it while we waited for the lock
        await _drop_invalid(conn, target)
        statement = await _create_statement(conn, target)
        if self.settings.maintenance_work_mem:
            await conn.execute(
                "select set_config('maintenance_work_mem', %s, false)",
                (self.settings.maintenance_work_mem,),
            )
        pid_row = await (await conn.execute("select pg_backend_pid()")).fetchone()
        assert pid_row is not None
        await _record(conn, self.vectorizer_id, "building", index_name=target.index_name)
        log.info(
            "building vector index %s on %s.%s (%s)",
            target.index_name,
            target.schema,
            target.table,
            target.implementation,
        )
        started = time.monotonic()
        watcher = asyncio.create_task(self._watch_progress(int(pid_row[0])))
        try:
            await conn.execute(statement)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await conn.cancel_safe(timeout=5.0)
            raise
        except psycopg.Error as exc:
            await self._failed(conn, target, exc)
            return
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        self._failures = 0
        self._retry_at = 0.0
        self._reported = None
        await _record(conn, self.vectorizer_id, "ready", index_name=target.index_name)
        log.info("vector index %s ready after %.1fs", target.index_name, time.monotonic() - started)

    async def _failed(
        self, conn: psycopg.AsyncConnection, target: IndexTarget, exc: psycopg.Error
    ) -> None:
        reason = _one_line(exc)
        with contextlib.suppress(psycopg.Error):
            await _drop_invalid(conn, target)
        delay = self._back_off()
        await _record(conn, self.vectorizer_id, "failed", error=reason)
        await self._report_once(f"{reason} (retrying in {delay:.0f}s)")

    async def _watch_progress(self, pid: int) -> None:
        """Copies the build's progress into ai._vectorizer_index_build every second."""
        async with await _connect(self.db_url, "vectorizer-worker-index-progress") as conn:
            while True:
                await asyncio.sleep(PROGRESS_PERIOD)
                cursor = await conn.execute(
                    """
                    select phase,
                           case when tuples_total > 0 then 100.0 * tuples_done / tuples_total
                                when blocks_total > 0 then 100.0 * blocks_done / blocks_total
                           end
                    from pg_stat_progress_create_index where pid = %s
                    """,
                    (pid,),
                )
                row = await cursor.fetchone()
                if row is not None:
                    await conn.execute(
                        "update ai._vectorizer_index_build set phase = %s, percent = %s,"
                        " updated_at = now() where vectorizer_id = %s and state = 'building'",
                        (row[0], row[1], self.vectorizer_id),
                    )


async def _connect(db_url: str, application_name: str) -> psycopg.AsyncConnection:
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction block: autocommit
    return await psycopg.AsyncConnection.connect(
        db_url, autocommit=True, application_name=application_name
    )


async def _try_lock(conn: psycopg.AsyncConnection, key: tuple[int, int]) -> bool:
    row = await (await conn.execute("select pg_try_advisory_lock(%s, %s)", key)).fetchone()
    return bool(row and row[0])


async def _pgai_table_lock(conn: psycopg.AsyncConnection, target: IndexTarget) -> bool:
    cursor = await conn.execute(
        "select pg_try_advisory_lock(%s, %s::regclass::oid::int4)",
        (PGAI_TABLE_LOCK, target.relation.as_string(conn)),
    )
    row = await cursor.fetchone()
    if not (row and row[0]):
        log.info("another process is building a vector index on %s.%s", target.schema, target.table)
        return False
    return True


async def _access_method_exists(conn: psycopg.AsyncConnection, name: str) -> bool:
    row = await (await conn.execute("select 1 from pg_am where amname = %s", (name,))).fetchone()
    return row is not None


async def _drop_invalid(conn: psycopg.AsyncConnection, target: IndexTarget) -> None:
    """A failed or interrupted CONCURRENTLY build leaves an invalid index of our name."""
    cursor = await conn.execute(
        """
        select 1 from pg_index i join pg_class c on c.oid = i.indexrelid
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %s and c.relname = %s and not i.indisvalid
        """,
        (target.schema, target.index_name),
    )
    if await cursor.fetchone() is None:
        return
    log.info("dropping the invalid index %s left by an earlier build", target.index_name)
    await conn.execute(
        sql.SQL("drop index concurrently if exists {}").format(
            sql.Identifier(target.schema, target.index_name)
        )
    )


async def _create_statement(conn: psycopg.AsyncConnection, target: IndexTarget) -> sql.Composed:
    vector_schema_row = await (
        await conn.execute(
            "select n.nspname from pg_extension x join pg_namespace n on n.oid = x.extnamespace"
            " where x.extname = 'vector'"
        )
    ).fetchone()
    assert vector_schema_row is not None, "the vector extension is installed with the schema"
    if target.implementation == "hnsw":
        opclass_row = await (
            await conn.execute(
                "select ai._vectorizer_index_opclass(%s, %s, %s, %s::jsonb)",
                (target.schema, target.table, target.column, json.dumps(target.indexing)),
            )
        ).fetchone()
        assert opclass_row is not None
        keys = ("m", "ef_construction")
        method = sql.SQL("hnsw ({} {})").format(
            sql.Identifier(target.column),
            sql.Identifier(vector_schema_row[0], opclass_row[0]),
        )
    else:
        keys = (
            "storage_layout",
            "num_neighbors",
            "search_list_size",
            "max_alpha",
            "num_dimensions",
            "num_bits_per_dimension",
        )
        method = sql.SQL("diskann ({})").format(sql.Identifier(target.column))
    options = [
        sql.SQL("{} = {}").format(sql.SQL(key), sql.Literal(target.indexing[key]))
        for key in keys
        if target.indexing.get(key) is not None
    ]
    with_clause = (
        sql.SQL(" with ({})").format(sql.SQL(", ").join(options)) if options else sql.SQL("")
    )
    return sql.SQL("create index concurrently if not exists {} on {} using {}{}").format(
        sql.Identifier(target.index_name), target.relation, method, with_clause
    )


async def _record(
    conn: psycopg.AsyncConnection,
    vectorizer_id: int,
    state: str,
    *,
    index_name: str | None = None,
    error: str | None = None,
) -> None:
    building = state == "building"
    await conn.execute(
        """
        insert into ai._vectorizer_index_build as b
            (vectorizer_id, state, index_name, error, attempts, started_at, percent, phase,
             finished_at)
        values (%(id)s, %(state)s, %(index)s, %(error)s, %(attempt)s,
                case when %(building)s then now() end,
                case when %(state)s = 'ready' then 100 end, null,
                case when not %(building)s then now() end)
        on conflict (vectorizer_id) do update set
            state = excluded.state,
            index_name = coalesce(excluded.index_name, b.index_name),
            error = excluded.error,
            attempts = b.attempts + excluded.attempts,
            started_at = coalesce(excluded.started_at, b.started_at),
            percent = excluded.percent,
            phase = null,
            updated_at = now(),
            finished_at = excluded.finished_at
        """,
        {
            "id": vectorizer_id,
            "state": state,
            "index": index_name,
            "error": error,
            "attempt": 1 if building else 0,
            "building": building,
        },
    )


async def _mark_ready_if_recorded(conn: psycopg.AsyncConnection, vectorizer_id: int) -> None:
    await conn.execute(
        "update ai._vectorizer_index_build set state = 'ready', error = null, percent = 100,"
        " phase = null, updated_at = now(), finished_at = coalesce(finished_at, now())"
        " where vectorizer_id = %s and state <> 'ready'",
        (vectorizer_id,),
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
