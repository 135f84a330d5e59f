"""The SQL a worker runs against one vectorizer's queue, target and failed queue.

Every statement is composed once per vectorizer from its catalog row with psycopg.sql, so table
and column names are always quoted identifiers and values are always parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from vectorizer.sqlparts import ident_list, keys_condition, placeholders

if TYPE_CHECKING:
    from vectorizer.config import Vectorizer

FOUND = "__vectorizer_found"
ATTEMPTS = "__vectorizer_attempts"
# the source row's version at claim time: the write re-checks it (recheck.py)
VERSION = "__vectorizer_version"
# that version, of source row `s`: every UPDATE of the row changes its xmin or its ctid
ROW_VERSION = sql.SQL("s.xmin::text || '/' || s.ctid::text")
# the claimed key's columns, also for a deleted row (whose source columns are null)
KEY_PREFIX = "__vectorizer_key."


def _join(names: Sequence[str], left: str, right: str) -> sql.Composable:
    return sql.SQL(" and ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, name), sql.Identifier(right, name))
        for name in names
    )


def _lock_key(names: Sequence[str]) -> sql.Composable:
    # Same scheme as pgai 0.12, so old and new workers never process one key at once.
    parts: list[sql.Composable] = []
    for name in names:
        parts.append(sql.Literal(name))
        parts.append(sql.Identifier(name))
    return sql.SQL("hashtext(concat_ws('|', {}))").format(sql.SQL(", ").join(parts))


@dataclass(frozen=True)
class QueueQueries:
    """Statements for one vectorizer, built from its catalog row."""

    claim: sql.Composed
    # the same, for keys after %(after_<i>)s in `index_order` (see `_claim`)
    claim_after: sql.Composed
    index_order: tuple[str, ...]
    requeue: sql.Composed
    fail: sql.Composed
    pk_names: tuple[str, ...]
    failed_table: sql.Identifier

    def forget_failures(
        self, keys: Sequence[tuple[object, ...]]
    ) -> tuple[sql.Composed, list[object]]:
        """DELETE of `keys` from the failed queue: they were embedded after all."""
        condition, params = keys_condition(self.pk_names, keys, row_type=self.failed_table)
        return sql.SQL("delete from {} where {}").format(self.failed_table, condition), params


class Claimer:
    """Claims batches for one executor, each starting in key order where the last one ended
    (see `_claim`), and wrapping around to the first queued key when the range runs dry."""

    def __init__(self, queries: QueueQueries) -> None:
        self._queries = queries
        self._cursor: tuple[Any, ...] | None = None

    async def claim(
        self, conn: psycopg.AsyncConnection, lease: dict[str, Any], batch_size: int
    ) -> list[dict[str, Any]]:
        """Up to `batch_size` claimed keys' source rows (FOUND false for deleted ones), in key
        order; `lease` is `lease.Lease.params()`, the token and duration the claimed queue
        rows get."""
        params: dict[str, Any] = {"batch_size": batch_size, **lease}
        rows = await self._claim(conn, params)
        if not rows and self._cursor is not None:
            self._cursor = None
            rows = await self._claim(conn, params)
        found = [row for row in rows if row.get(FOUND)]  # a deleted row's columns are null
        if found:
            self._cursor = tuple(found[-1][column] for column in self._queries.index_order)
        return rows

    async def _claim(
        self, conn: psycopg.AsyncConnection, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        query = self._queries.claim
        if self._cursor is not None:
            query = self._queries.claim_after
            params = params | {f"after_{i}": value for i, value in enumerate(self._cursor)}
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchall()


def queue_table(vectorizer: Vectorizer) -> sql.Identifier:
    """The vectorizer's queue table. Also the row type that gives a batch's keys their
    columns' types (`keys_condition`): it has the key columns and nothing else that could
    refuse the nulls of the other columns, as a domain in the source table might."""
    return sql.Identifier(vectorizer.queue_schema, vectorizer.queue_table)


def build_queries(vectorizer: Vectorizer) -> QueueQueries:
    pk = vectorizer.pk_names
    # the queue's key index lists the columns in primary-key order, which may differ from
    # the table's column order that the rest of the worker uses
    index_order = [c.attname for c in sorted(vectorizer.source_pk, key=lambda c: c.pknum)]
    queue = queue_table(vectorizer)
    failed = sql.Identifier(vectorizer.queue_schema, vectorizer.queue_failed_table)
    source = sql.Identifier(vectorizer.source_schema, vectorizer.source_table)
    return QueueQueries(
        claim=_claim(vectorizer.id, index_order, queue, source, after=False),
        claim_after=_claim(vectorizer.id, index_order, queue, source, after=True),
        index_order=tuple(index_order),
        requeue=sql.SQL(
            "insert into {} ({}, loading_retries, loading_retry_after)"
            " values ({}, %s, now() + make_interval(secs => %s))"
        ).format(queue, ident_list(pk), placeholders(len(pk))),
        # a key stands in the failed queue once, with its latest failure
        fail=sql.SQL(
            "with gone as (delete from {failed} where ({pk}) = ({values}))"
            " insert into {failed} ({pk}, failure_step) values ({values}, %(step)s)"
        ).format(
            failed=failed,
            pk=ident_list(pk),
            values=sql.SQL(", ").join(sql.Placeholder(f"k{i}") for i in range(len(pk))),
        ),
        pk_names=tuple(pk),
        failed_table=failed,
    )


def _claim(
    vectorizer_id: int,
    pk: Sequence[str],
    queue: sql.Identifier,
    source: sql.Identifier,
    *,
    after: bool,
) -> sql.Composed:
    """One statement: pick due, unleased queue rows, lock their keys, lease every queued row
    of each locked key, and return the current source rows (FOUND false when the row was
    deleted) with the version of each (VERSION) for the write's re-check.

    The claim is one autocommit statement, its own transaction; a lease lost in a server crash
    is harmless (the keys are claimable again and the write finds the lease gone), so its
    commit does not wait for the WAL flush (`async_commit`, evaluated with any row claimed).
    What it leaves behind is the lease (see lease.py): the queue rows carry the batch's
    token, the claiming backend's pid and an expiry, and the key's advisory lock (pgai's
    scheme) is held at session level until the batch is written, so neither a pgai worker
    nor another of ours takes the key meanwhile.
    A leased row is skipped while its lease runs and its backend lives: a worker that
    crashed or was killed gives its keys back at once (its pid is gone), a lease that
    outlived its expiry comes back regardless.

    Rows another transaction holds are skipped at each step (SKIP LOCKED), so two workers
    never wait on each other, and a key's duplicates that are locked elsewhere simply stay
    queued.

    Every step reaches the queue through its key index, so a claim costs O(batch) whatever
    the queue's size: rows are picked in key order from where the executor's previous claim
    ended (`after`: an index range that starts past the entries of earlier claims, which stay
    in the index until vacuum can remove them, instead of re-reading dead tuples from the
    heap's head; the executor wraps around to the start when the range runs dry), each
    key's duplicates are found by a per-key index probe, and they are leased by ctid.
    `pk` is in the key index's column order.
    The plan must not depend on statistics (a queue analyzed while empty made Postgres pick
    sequential scans per key, turning a 50-key claim into seconds): `EXECUTOR_SESSION`
    is applied to the connections that run it.
    """
    return sql.SQL(
        """
        with selected_rows as (
            select {pk}, loading_retries
            from {queue}
            where (loading_retry_after is null or loading_retry_after <= now())
            and (
                lease_token is null
                or leased_until <= now()
                or lease_pid <> all(array(select pid from pg_catalog.pg_stat_activity))
            ){after}
            order by {pk}
            limit %(batch_size)s
            for update skip locked
        ), locked_items as (
            select {pk}, attempts,
                pg_try_advisory_lock({vectorizer_id}, {lock_key}) as locked
            from (
                select {pk}, min(loading_retries) as attempts
                from selected_rows
                group by {pk}
                order by {pk}
            ) keys
        ), leased_rows as (
            update {queue}
            set lease_token = %(lease_token)s,
                lease_pid = pg_backend_pid(),
                leased_until = now() + make_interval(secs => %(lease_seconds)s)
            where ctid = any(array(
                select w.ctid
                from locked_items l
                cross join lateral (
                    select q.ctid from {queue} q where {join_ql} for update skip locked
                ) w
                where l.locked
            ))
        ), async_commit as (
            select pg_catalog.set_config('synchronous_commit', 'off', true)
        )
        select l.attempts as {attempts}, {claimed_key}, s.*
        from locked_items l
        cross join async_commit
        left join lateral (
            select true as {found}, {row_version} as {version}, s.*
            from {source} s
            where {join_sl}
            limit 1
        ) s on true
        where l.locked
        order by {l_pk}
        """
    ).format(
        pk=ident_list(pk),
        queue=queue,
        source=source,
        vectorizer_id=sql.Literal(vectorizer_id),
        lock_key=_lock_key(pk),
        join_ql=_join(pk, "q", "l"),
        join_sl=_join(pk, "s", "l"),
        l_pk=ident_list(pk, "l"),
        after=sql.SQL(" and ({}) > ({})").format(
            ident_list(pk),
            sql.SQL(", ").join(sql.Placeholder(f"after_{i}") for i in range(len(pk))),
        )
        if after
        else sql.SQL(""),
        attempts=sql.Identifier(ATTEMPTS),
        found=sql.Identifier(FOUND),
        version=sql.Identifier(VERSION),
        row_version=ROW_VERSION,
        claimed_key=sql.SQL(", ").join(
            sql.SQL("{} as {}").format(sql.Identifier("l", name), sql.Identifier(KEY_PREFIX + name))
            for name in pk
        ),
    )


# Planner settings for the sessions that claim and write. The claim's plan must not follow
# stale statistics into sequential scans (see `_claim`), and a prepared statement must not
# keep a generic plan chosen while the queue was empty. Every statement these sessions run
# has a key index to use, so ruling out sequential scans where an index exists costs nothing.
EXECUTOR_SESSION = sql.SQL("set enable_seqscan = off; set plan_cache_mode = force_custom_plan")
