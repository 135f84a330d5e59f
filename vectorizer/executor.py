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
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from vectorizer import catalog, reembed
from vectorizer.backoff import Backoff
from vectorizer.batch_size import BatchSize
from vectorizer.config import Vectorizer
from vectorizer.embedders import Embedder
from vectorizer.empty_inputs import EmptyInputs
from vectorizer.errors import RowError, VectorizerError
from vectorizer.lease import Lease, LeaseQueries, quietly, unlock, unlock_and_check
from vectorizer.observability import tracing
from vectorizer.observability.telemetry import telemetry
from vectorizer.queue import ATTEMPTS, FOUND, KEY_PREFIX, VERSION, Claimer, QueueQueries
from vectorizer.recheck import BUSY_RETRY_SECONDS, SourceRecheck
from vectorizer.reporting import BatchResult, FailedRow, error_row, key_fields
from vectorizer.reuse import BatchPlan, Reuse, RowPlan, make_reuse
from vectorizer.stages.pipeline import RowPipeline
from vectorizer.stages.writing import Refill, RowEmbeddings, Writer

log = logging.getLogger(__name__)

# pgvector's refusal of a vector of the wrong size ("expected 768 dimensions, not 1536")
_DIMENSION_MISMATCH = re.compile(r"expected \d+ dimensions, not \d+")


@dataclass
class _Item:
    key: tuple[Any, ...]
    attempts: int
    row: dict[str, Any]
    version: str | None = None  # digest of the source row when claimed (None: deleted)
    chunks: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    # the reuse plan's row: hashes, the vectors filled in by reuse and embedding, kept seqs
    plan: RowPlan | None = None
    error: RowError | None = None

    @property
    def unchanged(self) -> bool:
        return self.plan is not None and self.plan.unchanged


class Executor:
    """Runs batches for one vectorizer on one connection."""

    def __init__(
        self,
        vectorizer: Vectorizer,
        pipeline: RowPipeline,
        embedder: Embedder,
        writer: Writer,
        queries: QueueQueries,
        retry: Backoff,
        reuse: Reuse | None = None,
    ) -> None:
        self.vectorizer = vectorizer
        self._pipeline = pipeline
        self._embedder = embedder
        self._writer = writer
        self._queries = queries
        self._retry = retry
        self.batch_size = BatchSize(vectorizer)
        self._claimer = Claimer(queries)
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
            requested = self.batch_size.rows
            items = await self._claim(conn, lease, requested)
            result = await self._process(conn, lease, items)
            result.requested = requested
        except asyncio.CancelledError:
            raise
        except BaseException:
            keys = [item.key for item in items]
            await quietly("release the batch's lease", self._leases.release(conn, lease, keys))
            await quietly("release the batch's key locks", unlock(conn))
            raise
        if items:
            result.disabled = await unlock_and_check(conn, self.vectorizer.id)
        return result

    async def _process(
        self, conn: psycopg.AsyncConnection, lease: Lease, items: list[_Item]
    ) -> BatchResult:
        result = BatchResult(claimed=len(items))
        if not items:
            return result
        live = [item for item in items if item.row.pop(FOUND, None)]
        if live:
            await self._prepare(live)
            self.batch_size.observe(len(live), sum(len(item.chunks) for item in live))
        ready = [item for item in live if item.error is None]
        # outside a transaction: the keys are ours (lease.py), so no other worker of ours
        # writes them meanwhile, and the write re-checks that the rows are what was read
        plan = await self._reuse.plan(
            conn, [(item.key, item.chunks) for item in ready], [i.metadata for i in ready]
        )
        with tracing.span("vectorizer.stage", stage="embed", rows=len(ready)):
            await self._embed(ready, plan)
        async with conn.transaction():
            live = await self._recheck(conn, lease, live)
            # an unchanged row is done without a write: no DELETE, no COPY, no WAL
            good = [item for item in live if item.error is None and not item.unchanged]
            await self._config_guard.ensure_current(conn)
            with tracing.span("vectorizer.stage", stage="write", rows=len(good)):
                await self._write(conn, good)
            # bookkeeping whose results nothing reads: sent together, one wait for all
            async with conn.pipeline():
                await self._forget_failures(conn, [item for item in live if item.error is None])
                failed = [item for item in live if item.error is not None]
                result.failed = await self._charge(conn, failed)
                await self._leases.settle(conn, lease, [item.key for item in items])
                result.empty = await self._empty.record(
                    conn, [item.key for item in items], [i.key for i in live if _is_empty(i)]
                )
        result.rows_done = sum(1 for item in live if item.error is None)
        # a row's savings count only if it is done: not one whose embedding or write failed
        for item in live:
            if item.error is None and item.plan is not None:
                result.reuse.add(item.plan.counts)
        result.chunks = sum(len(item.chunks) for item in live if item.error is None)
        return result

    async def _claim(
        self, conn: psycopg.AsyncConnection, lease: Lease, batch_size: int
    ) -> list[_Item]:
        rows = await self._claimer.claim(conn, lease.params(), batch_size)
        pk = self._queries.pk_names
        items = []
        for row in rows:
            attempts = row.pop(ATTEMPTS) or 0
            version = row.pop(VERSION, None)
            key = tuple(row.pop(KEY_PREFIX + c) for c in pk)
            items.append(_Item(key=key, attempts=attempts, row=row, version=version))
        return items

    async def _prepare(self, items: list[_Item]) -> None:
        prepared = await self._pipeline.prepare([item.row for item in items])
        for item, chunks in zip(items, prepared, strict=True):
            if isinstance(chunks, RowError):
                item.error = chunks
            else:
                item.chunks, item.metadata = chunks.texts, chunks.metadata

    async def _embed(self, items: list[_Item], plan: BatchPlan) -> None:
        """Embeds what the plan could not reuse; every text once, its vector to each owner."""
        for item, row in zip(items, plan.rows, strict=True):
            item.plan = row
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
                if vector is not None and owner.plan is not None:
                    owner.plan.vectors[chunk_index] = vector

    async def _recheck(
        self, conn: psycopg.AsyncConnection, lease: Lease, items: list[_Item]
    ) -> list[_Item]:
        """The items still to be written or charged: their lease still held, the source row
        still there (locked until commit, see recheck.py) and unchanged since the claim read
        it."""
        keys = [item.key for item in items]
        # the source before the queue, in the order a TRUNCATE of the source takes them (its
        # trigger truncates the queue): the other order deadlocks with it
        check = await self._recheck_rows.check(
            conn, keys, {item.key: item.version for item in items if item.version}
        )
        leases = await self._leases.check(conn, lease, keys)
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
        plan = item.plan
        assert plan is not None  # every written item went through the reuse plan
        return RowEmbeddings(
            key=item.key,
            chunks=item.chunks,
            vectors=plan.vectors,  # type: ignore[arg-type]  # complete once error is None
            metadata=item.metadata,
            hashes=plan.hashes,
            provenance=self._reuse.provenance,
            kept=plan.kept,
            copies=plan.copies,
            replaced=plan.replaced,
        )

    async def _write(self, conn: psycopg.AsyncConnection, items: list[_Item]) -> None:
        if not items:
            return
        try:
            async with conn.transaction():
                await self._writer.write(
                    conn, [self._embeddings(item) for item in items], self._refill(items)
                )
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

    def _refill(self, items: list[_Item]) -> Refill:
        """Embeds the chunks whose reused vector vanished before it could be copied (another
        executor replaced the last stored copy meanwhile): rare, and then paid for once."""

        async def refill(missing: list[tuple[int, int]]) -> None:
            result = await self._embedder.embed([items[r].chunks[seq] for r, seq in missing])
            for (r, seq), vector in zip(missing, result.vectors, strict=True):
                plan = items[r].plan
                assert plan is not None  # a refill is asked for rows the plan covered
                if vector is None:
                    raise VectorizerError(
                        "a reused vector vanished and embedding its text again failed: "
                        f"{result.errors.get(missing.index((r, seq)), 'no vector')}",
                        step="embedding",
                    )
                plan.vectors[seq] = vector
                plan.counts.embedded += 1
                plan.counts.other_row -= 1
                plan.counts.tokens_saved -= self._reuse.tokens(items[r].chunks[seq])

        return refill

    async def _forget_failures(self, conn: psycopg.AsyncConnection, items: list[_Item]) -> None:
        if items:
            query, params = self._queries.forget_failures([item.key for item in items])
            await conn.execute(query, params)

    async def _charge(self, conn: psycopg.AsyncConnection, items: list[_Item]) -> list[FailedRow]:
        """Requeues each failed key with backoff, or moves it to the failed queue once its
        retries are spent, with its error row: all in the batch's transaction."""
        retries = self.vectorizer.config.loading.retries
        charged = []
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
            failed = FailedRow(item.key, error, item.attempts + 1, give_up)
            message, details = error_row(
                self.vectorizer,
                error.step,
                error.message,
                pk=key_fields(self._queries.pk_names, item.key),
                is_retryable=not give_up,
                attempts=failed.attempts,
            )
            await conn.execute(catalog.ERROR_ROW, (self.vectorizer.id, message, details))
            charged.append(failed)
        return charged


def _is_empty(item: _Item) -> bool:
    return item.error is None and not item.chunks


def _db_message(exc: psycopg.Error) -> str:
    diag = exc.diag
    return diag.message_primary or str(exc).strip()
