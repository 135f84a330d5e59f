"""One batch: claim (short transaction, leases the keys) → load → parse → chunk → format →
embed (no transaction open) → re-check and write (short transaction).

No transaction is open while the provider is awaited (lease.py says how the keys stay held):
row locks, advisory locks and the snapshot that holds back vacuum last only as long as the
claim and the write. Failures are sorted as DESIGN §1 says. A row-level failure charges only
its key (requeued with backoff, or moved to the failed queue) and the rest of the batch
commits. A VectorizerError propagates: the lease is released and every claimed key is queued
again at once, uncharged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from vectorizer import reembed
from vectorizer.config import UriLoading, Vectorizer
from vectorizer.embedders import Embedder
from vectorizer.empty_inputs import EmptyInputs
from vectorizer.errors import RowError, VectorizerError, failure_message
from vectorizer.lease import Lease, LeaseQueries, quietly, unlock
from vectorizer.observability import tracing
from vectorizer.observability.telemetry import telemetry
from vectorizer.queue import ATTEMPTS, FOUND, KEY_PREFIX, VERSION, Claimer, QueueQueries
from vectorizer.recheck import BUSY_RETRY_SECONDS, SourceRecheck
from vectorizer.reuse import BatchPlan, Reuse, ReuseCounts, make_reuse
from vectorizer.stages.pipeline import RowPipeline
from vectorizer.stages.writing import RowEmbeddings, Writer

log = logging.getLogger(__name__)

# pgvector's refusal of a vector of the wrong size ("expected 768 dimensions, not 1536")
_DIMENSION_MISMATCH = re.compile(r"expected \d+ dimensions, not \d+")

DEFAULT_BATCH_SIZE = 50
DOCUMENT_BATCH_SIZE = 1


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for row-level failures: base, doubling per attempt, capped."""

    base_seconds: float = 180.0
    max_seconds: float = 3600.0

    def delay(self, attempts_so_far: int) -> float:
        return min(self.max_seconds, self.base_seconds * (2 ** min(attempts_so_far, 30)))


@dataclass
class BatchResult:
    claimed: int = 0
    rows_done: int = 0
    chunks: int = 0
    empty: int = 0  # rows with nothing to embed (no chunk, no error)
    failed: list[tuple[tuple[Any, ...], RowError]] = field(default_factory=list)
    reuse: ReuseCounts = field(default_factory=ReuseCounts)


@dataclass
class _Item:
    key: tuple[Any, ...]
    attempts: int
    row: dict[str, Any]
    version: str | None = None  # digest of the source row when claimed (None: deleted)
    payload: Any = None
    chunks: list[str] = field(default_factory=list)
    vectors: list[np.ndarray | None] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    unchanged: bool = False
    kept: frozenset[int] = frozenset()
    replaced: list[int] | None = None
    error: RowError | None = None


def batch_size_for(vectorizer: Vectorizer) -> int:
    configured = vectorizer.config.processing.batch_size
    if configured:
        return configured
    if isinstance(vectorizer.config.loading, UriLoading):
        return DOCUMENT_BATCH_SIZE
    return DEFAULT_BATCH_SIZE


class Executor:
    """Runs batches for one vectorizer on one connection."""

    def __init__(
        self,
        vectorizer: Vectorizer,
        pipeline: RowPipeline,
        embedder: Embedder,
        writer: Writer,
        queries: QueueQueries,
        retry: RetryPolicy,
        reuse: Reuse | None = None,
    ) -> None:
        self.vectorizer = vectorizer
        self._pipeline = pipeline
        self._embedder = embedder
        self._writer = writer
        self._queries = queries
        self._retry = retry
        self._claimer = Claimer(queries, batch_size_for(vectorizer))
        self._recheck_rows = SourceRecheck(vectorizer)
        self._leases = LeaseQueries(vectorizer)
        self._empty = EmptyInputs(vectorizer.id, queries.pk_names)
        self._reuse = reuse or make_reuse(vectorizer, embedder)
        self._config_guard = reembed.ConfigGuard(vectorizer)

    async def run_batch(self, conn: psycopg.AsyncConnection) -> BatchResult:
        """One batch on `conn` (autocommit): its own short transactions, none open meanwhile.

        A failed batch releases its lease and key locks: the runner may go on using `conn`
        (an alter met mid-batch). A cancelled one (shutdown) leaves both to the runner, which
        closes `conn`: its key locks end with the session and a lease whose backend is gone
        does not hold."""
        lease = Lease()
        items: list[_Item] = []
        try:
            async with conn.transaction():
                # a lease lost in a server crash is harmless (the keys are claimable again and
                # the write finds the lease gone), so the claim's commit need not wait for WAL
                await conn.execute("set local synchronous_commit = off")
                items = await self._claim(conn, lease)
            result = await self._process(conn, lease, items)
        except asyncio.CancelledError:
            raise
        except BaseException:
            keys = [item.key for item in items]
            await quietly("release the batch's lease", self._leases.release(conn, lease, keys))
            await quietly("release the batch's key locks", unlock(conn))
            raise
        if items:
            await unlock(conn)
        return result

    async def _process(
        self, conn: psycopg.AsyncConnection, lease: Lease, items: list[_Item]
    ) -> BatchResult:
        result = BatchResult(claimed=len(items))
        if not items:
            return result
        live = [item for item in items if item.row.pop(FOUND, None)]
        if live:
            with tracing.span("vectorizer.stage", stage="load_parse", rows=len(live)):
                await self._load(live)
            with tracing.span("vectorizer.stage", stage="chunk_format", rows=len(live)):
                await asyncio.to_thread(self._transform, live)
        ready = [item for item in live if item.error is None]
        # outside a transaction: the keys are ours (lease.py), so no other worker of ours
        # writes them meanwhile, and the write re-checks that the rows are what was read
        plan = await self._reuse.plan(
            conn, [(item.key, item.chunks) for item in ready], [i.metadata for i in ready]
        )
        result.reuse = plan.counts
        with tracing.span("vectorizer.stage", stage="embed", rows=len(ready)):
            await self._embed(ready, plan)
        async with conn.transaction():
            live = await self._recheck(conn, lease, live)
            # an unchanged row is done without a write: no DELETE, no COPY, no WAL
            good = [item for item in live if item.error is None and not item.unchanged]
            await self._config_guard.ensure_current(conn)
            with tracing.span("vectorizer.stage", stage="write", rows=len(good)):
                await self._write(conn, good)
            await self._forget_failures(conn, [item for item in live if item.error is None])
            failed = [item for item in live if item.error is not None]
            await self._charge(conn, failed)
            await self._leases.settle(conn, lease, [item.key for item in items])
            result.empty = await self._empty.record(
                conn, [item.key for item in items], [i.key for i in live if _is_empty(i)]
            )
        result.rows_done = sum(1 for item in live if item.error is None)
        result.chunks = sum(len(item.chunks) for item in live if item.error is None)
        result.failed = [(item.key, item.error) for item in failed if item.error]
        return result

    async def _claim(self, conn: psycopg.AsyncConnection, lease: Lease) -> list[_Item]:
        rows = await self._claimer.claim(conn, lease.params())
        pk = self._queries.pk_names
        items = []
        for row in rows:
            attempts = row.pop(ATTEMPTS) or 0
            version = row.pop(VERSION, None)
            key = tuple(row.pop(KEY_PREFIX + c) for c in pk)
            items.append(_Item(key=key, attempts=attempts, row=row, version=version))
        return items

    async def _load(self, items: list[_Item]) -> None:
        payloads = await asyncio.gather(
            *(self._load_and_parse(item.row) for item in items), return_exceptions=True
        )
        for item, payload in zip(items, payloads, strict=True):
            if isinstance(payload, RowError):
                item.error = payload
            elif isinstance(payload, BaseException):
                raise payload
            else:
                item.payload = payload

    async def _load_and_parse(self, row: dict[str, Any]) -> str:
        # Parsing is awaited here, not in the transform thread: a document goes to a parser
        # process with a time limit, and several rows' documents may parse at once.
        payload = await self._pipeline.load(row)
        return await self._pipeline.parse(payload)

    def _transform(self, items: list[_Item]) -> None:
        for item in items:
            if item.error is not None:
                continue
            try:
                prepared = self._pipeline.prepare_chunks(item.payload, item.row)
                item.chunks, item.metadata = prepared.texts, prepared.metadata
            except RowError as exc:
                item.error = exc

    async def _embed(self, items: list[_Item], plan: BatchPlan) -> None:
        """Embeds what the plan could not reuse; every text once, its vector to each owner."""
        for item, row in zip(items, plan.rows, strict=True):
            item.vectors, item.hashes, item.unchanged = row.vectors, row.hashes, row.unchanged
            item.kept, item.replaced = row.kept, row.replaced
        texts = plan.texts
        if not texts:
            return
        started = time.perf_counter()
        try:
            result = await self._embedder.embed(texts)
        finally:
            telemetry.rate_limiter_waited(self._embedder.provider, self._embedder.limiter)
        telemetry.embedded(
            self.vectorizer.name,
            self._embedder.provider,
            time.perf_counter() - started,
            result.requests,
            result.tokens,
        )
        for index, targets in enumerate(plan.targets):
            message = result.errors.get(index)
            vector = result.vectors[index]
            for row_index, chunk_index in targets:
                owner = items[row_index]
                if message is not None and owner.error is None:
                    owner.error = RowError("embedding", message)
                if vector is not None:
                    owner.vectors[chunk_index] = vector

    async def _recheck(
        self, conn: psycopg.AsyncConnection, lease: Lease, items: list[_Item]
    ) -> list[_Item]:
        """The items still to be written or charged: their lease still held, the source row
        still there (locked until commit, see recheck.py) and unchanged since the claim read
        it."""
        keys = [item.key for item in items]
        leases = await self._leases.check(conn, lease, keys)
        check = await self._recheck_rows.check(
            conn, keys, {item.key: item.version for item in items if item.version}
        )
        await self._writer.delete(conn, sorted(check.gone))
        kept = []
        for item in items:
            if item.key in check.gone or item.key not in leases.held:
                # gone, or no longer ours (someone cleared its queue rows): nothing to write
                continue
            if item.key in check.busy:
                # uncharged: the row did nothing wrong, someone is deleting or re-keying it
                await self._requeue(conn, item, BUSY_RETRY_SECONDS)
            elif item.key in check.changed:
                # stale vectors are not written; the change's own queue row (or, with triggers
                # off, this one) brings the current content back
                if item.key not in leases.requeued:
                    await self._requeue(conn, item, 0.0)
            else:
                # a queue row for the key without our token (a change committed after this
                # check, or a duplicate another claim held) is left for a later batch
                kept.append(item)
        skipped = len(items) - len(kept)
        if skipped:
            log.info(
                "vectorizer %s: %d row(s) deleted or re-keyed during the batch, %d busy "
                "(requeued), %d changed; not written",
                self.vectorizer.id,
                len(check.gone),
                len(check.busy),
                skipped - len(check.gone) - len(check.busy),
            )
        return kept

    async def _requeue(self, conn: psycopg.AsyncConnection, item: _Item, delay: float) -> None:
        await conn.execute(self._queries.requeue, (*item.key, item.attempts, delay))

    def _embeddings(self, item: _Item) -> RowEmbeddings:
        return RowEmbeddings(
            key=item.key,
            chunks=item.chunks,
            vectors=item.vectors,  # type: ignore[arg-type]  # complete once error is None
            metadata=item.metadata,
            hashes=item.hashes,
            provenance=self._reuse.provenance,
            kept=item.kept,
            replaced=item.replaced,
        )

    async def _write(self, conn: psycopg.AsyncConnection, items: list[_Item]) -> None:
        if not items:
            return
        try:
            async with conn.transaction():
                await self._writer.write(conn, [self._embeddings(item) for item in items])
            return
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            # the store or a column of it was dropped under us: no row could be written
            raise VectorizerError(
                f"the destination cannot be written: {_db_message(exc)}", step="writing"
            ) from exc
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgrammingError) as exc:
            if _DIMENSION_MISMATCH.search(_db_message(exc)):
                # the destination's vector size differs from the config: every row would fail
                raise VectorizerError(
                    f"the destination does not take these vectors: {_db_message(exc)}",
                    step="writing",
                ) from exc
            if len(items) == 1:
                items[0].error = RowError("writing", _db_message(exc))
                return
            log.info("batch write failed (%s); isolating the failing rows", _db_message(exc))
        middle = len(items) // 2
        await self._write(conn, items[:middle])
        await self._write(conn, items[middle:])

    async def _forget_failures(self, conn: psycopg.AsyncConnection, items: list[_Item]) -> None:
        if items:
            query, params = self._queries.forget_failures([item.key for item in items])
            await conn.execute(query, params)

    async def _charge(self, conn: psycopg.AsyncConnection, items: list[_Item]) -> None:
        retries = self.vectorizer.config.loading.retries
        for item in items:
            error = item.error
            assert error is not None
            give_up = not error.retryable or item.attempts >= retries
            if give_up:
                params = {f"k{i}": value for i, value in enumerate(item.key)}
                await conn.execute(self._queries.fail, {**params, "step": error.step})
            else:
                delay = self._retry.delay(item.attempts)
                await conn.execute(self._queries.requeue, (*item.key, item.attempts + 1, delay))
            message, details = self.error_row(error, item.key, item.attempts + 1, not give_up)
            await conn.execute(
                self._queries.record_error,
                (self.vectorizer.id, message, json.dumps(details, default=str)),
            )
            log.warning(
                "vectorizer %s key %s failed at %s (attempt %s%s): %s",
                self.vectorizer.id,
                _key_repr(self._queries.pk_names, item.key),
                error.step,
                item.attempts + 1,
                ", moved to the failed queue" if give_up else "",
                error.message,
            )

    def error_row(
        self, error: RowError, key: tuple[Any, ...], attempts: int, retryable: bool
    ) -> tuple[str, dict[str, Any]]:
        """The reference's message and details keys, plus the key, step and attempt."""
        config = self.vectorizer.config
        message = failure_message(error.step)
        details: dict[str, Any] = {"error_reason": error.message}
        if error.step == "loading":
            details["loader"] = config.loading.implementation
        elif error.step == "embedding":
            details["provider"] = config.embedding.implementation
        details["is_retryable"] = retryable
        details["step"] = error.step
        details["pk"] = dict(zip(self._queries.pk_names, key, strict=True))
        details["attempts"] = attempts
        return message, details


def _is_empty(item: _Item) -> bool:
    return item.error is None and not item.chunks


def _db_message(exc: psycopg.Error) -> str:
    diag = exc.diag
    return diag.message_primary or str(exc).strip()


def _key_repr(names: Sequence[str], key: tuple[Any, ...]) -> str:
    return json.dumps(dict(zip(names, key, strict=True)), default=str)
