"""The SQL a worker runs against one vectorizer's queue, target and failed queue.

Every statement is composed once per vectorizer from its catalog row with psycopg.sql, so table
and column names are always quoted identifiers and values are always parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from vectorizer.config import Vectorizer

FOUND = "__vectorizer_found"
ATTEMPTS = "__vectorizer_attempts"


def _ident_list(names: Sequence[str], prefix: str | None = None) -> sql.Composable:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(name) for name in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, name) for name in names)


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
    requeue: sql.Composed
    fail: sql.Composed
    record_error: sql.Composed
    pk_names: tuple[str, ...]
    failed_table: sql.Identifier

    def forget_failures(
        self, keys: Sequence[tuple[object, ...]]
    ) -> tuple[sql.Composed, list[object]]:
        """DELETE of `keys` from the failed queue: they were embedded after all."""
        condition, params = keys_condition(self.pk_names, keys)
        return sql.SQL("delete from {} where {}").format(self.failed_table, condition), params


def keys_condition(
    pk_names: Sequence[str], keys: Sequence[tuple[object, ...]], prefix: str | None = None
) -> tuple[sql.Composed, list[object]]:
    """`(pk1, pk2) in ((%s, %s), ...)` for `keys`, and its parameters."""
    one_key = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(pk_names)))
    condition = sql.SQL("({}) in ({})").format(
        _ident_list(pk_names, prefix), sql.SQL(", ").join([one_key] * len(keys))
    )
    return condition, [value for key in keys for value in key]


def build_queries(vectorizer: Vectorizer) -> QueueQueries:
    pk = vectorizer.pk_names
    queue = sql.Identifier(vectorizer.queue_schema, vectorizer.queue_table)
    failed = sql.Identifier(vectorizer.queue_schema, vectorizer.queue_failed_table)
    source = sql.Identifier(vectorizer.source_schema, vectorizer.source_table)
    return QueueQueries(
        claim=_claim(vectorizer.id, pk, queue, source),
        requeue=sql.SQL(
            "insert into {} ({}, loading_retries, loading_retry_after)"
            " values ({}, %s, now() + make_interval(secs => %s))"
        ).format(queue, _ident_list(pk), sql.SQL(", ").join(sql.Placeholder() * len(pk))),
        # a key stands in the failed queue once, with its latest failure
        fail=sql.SQL(
            "with gone as (delete from {failed} where ({pk}) = ({values}))"
            " insert into {failed} ({pk}, failure_step) values ({values}, %(step)s)"
        ).format(
            failed=failed,
            pk=_ident_list(pk),
            values=sql.SQL(", ").join(sql.Placeholder(f"k{i}") for i in range(len(pk))),
        ),
        record_error=sql.SQL(
            "insert into ai._vectorizer_errors (id, message, details) values (%s, %s, %s)"
        ),
        pk_names=tuple(pk),
        failed_table=failed,
    )


def _claim(
    vectorizer_id: int, pk: Sequence[str], queue: sql.Identifier, source: sql.Identifier
) -> sql.Composed:
    """One statement: pick due queue rows, lock their keys, delete every queued row of each
    locked key, and return the current source rows (FOUND false when the row was deleted).

    Rows another worker holds are skipped at each step (SKIP LOCKED), so two workers never
    wait on each other, and a key's duplicates that are locked elsewhere simply stay queued.
    """
    return sql.SQL(
        """
        with selected_rows as (
            select {pk}, loading_retries
            from {queue}
            where loading_retry_after is null or loading_retry_after <= now()
            limit %(batch_size)s
            for update skip locked
        ), locked_items as (
            select {pk}, attempts,
                pg_try_advisory_xact_lock({vectorizer_id}, {lock_key}) as locked
            from (
                select {pk}, min(loading_retries) as attempts
                from selected_rows
                group by {pk}
                order by {pk}
            ) keys
        ), deleted_rows as (
            delete from {queue} q
            where q.ctid in (
                select w.ctid
                from {queue} w
                join locked_items l on l.locked and {join_wl}
                for update of w skip locked
            )
        )
        select l.attempts as {attempts}, s.*
        from locked_items l
        left join lateral (
            select true as {found}, s.*
            from {source} s
            where {join_sl}
            limit 1
        ) s on true
        where l.locked
        order by {l_pk}
        """
    ).format(
        pk=_ident_list(pk),
        queue=queue,
        source=source,
        vectorizer_id=sql.Literal(vectorizer_id),
        lock_key=_lock_key(pk),
        join_wl=_join(pk, "w", "l"),
        join_sl=_join(pk, "s", "l"),
        l_pk=_ident_list(pk, "l"),
        attempts=sql.Identifier(ATTEMPTS),
        found=sql.Identifier(FOUND),
    )
