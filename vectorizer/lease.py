"""Leased claims: no transaction is open while a batch waits for its provider.

A batch runs as: a short claim transaction that leases its keys (queue.py's claim), loading
and embedding with no transaction open, then a short write transaction. Between the two the
keys are held by two things that need no open transaction:

* the queue rows themselves carry the lease: `lease_token` (this batch), `lease_pid` (the
  claiming backend) and `leased_until`. A claim skips them while the lease runs and the backend
  lives, so a crashed worker's keys come back as soon as its connection is gone, and a lease
  whose backend lingers (a half-open connection) comes back at its expiry;
* pgai's advisory-lock key per pk, held at session level on the executor's connection until
  the batch is written: a pgai worker on the same database (which knows nothing of leases but
  takes the same key with `pg_try_advisory_xact_lock`) stays off it, and so does any other
  executor of ours even when a lease has expired.

The write transaction settles the lease: it deletes the queue rows that still carry the token
and leaves any other row of the key queued (a change committed meanwhile, or a duplicate that
another claim held at the time). Whether the vectors are stale is the source row's digest's
call (recheck.py), not the queue's: a duplicate says nothing about the content.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from vectorizer import catalog
from vectorizer.config import Vectorizer
from vectorizer.queue import queue_table
from vectorizer.sqlparts import ident_list, keys_condition

log = logging.getLogger(__name__)

Key = tuple[Any, ...]

# How long a lease holds when its backend still exists. Only a worker whose connection is
# half-open (its backend alive, the worker gone) ever waits this out; a live batch outlasting
# it costs nothing but wasted claim slots, since the advisory lock still keeps others off.
# Longer than the driver's longest in-place wait (300 s of 429s) plus loading and writing.
LEASE_SECONDS = 900.0
# Cleaning up after a failed batch must not hang a worker whose connection is broken.
RELEASE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Lease:
    """One batch's lease; `params()` are the claim statement's lease parameters."""

    token: uuid.UUID = field(default_factory=uuid.uuid4)
    seconds: float = LEASE_SECONDS

    def params(self) -> dict[str, Any]:
        return {"lease_token": self.token, "lease_seconds": self.seconds}


@dataclass
class LeaseCheck:
    """What the queue holds now for a batch's keys."""

    held: set[Key] = field(default_factory=set)  # at least one row still carries our token
    requeued: set[Key] = field(default_factory=set)  # also queued by a row without our token


class LeaseQueries:
    """The statements that check, settle and release one vectorizer's leases."""

    def __init__(self, vectorizer: Vectorizer) -> None:
        self._pk = tuple(vectorizer.pk_names)
        self._queue = queue_table(vectorizer)

    async def check(
        self, conn: psycopg.AsyncConnection, lease: Lease, keys: Sequence[Key]
    ) -> LeaseCheck:
        result = LeaseCheck()
        if not keys:
            return result
        condition, params = keys_condition(self._pk, keys, row_type=self._queue)
        query = sql.SQL(
            "select {pk}, bool_or(lease_token is not distinct from %s),"
            " bool_or(lease_token is distinct from %s)"
            " from {queue} where {condition} group by {pk}"
        ).format(pk=ident_list(self._pk), queue=self._queue, condition=condition)
        async with conn.cursor() as cursor:
            await cursor.execute(query, [lease.token, lease.token, *params])
            for *key, ours, other in await cursor.fetchall():
                if ours:
                    result.held.add(tuple(key))
                if other:
                    result.requeued.add(tuple(key))
        return result

    async def settle(
        self, conn: psycopg.AsyncConnection, lease: Lease, keys: Sequence[Key]
    ) -> None:
        """Deletes the batch's queue rows (in the write transaction). One locked elsewhere
        (a pgai claim that could not take the key) stays and is processed again later."""
        await self._on_leased_rows(
            conn,
            lease,
            keys,
            "delete from {queue} where ctid = any(array("
            "select ctid from {queue} where {condition} and lease_token = %s"
            " for update skip locked))",
        )

    async def release(
        self, conn: psycopg.AsyncConnection, lease: Lease, keys: Sequence[Key]
    ) -> None:
        """Gives a batch that did not finish back to the queue at once, uncharged."""
        await self._on_leased_rows(
            conn,
            lease,
            keys,
            "update {queue} set lease_token = null, lease_pid = null, leased_until = null"
            " where {condition} and lease_token = %s",
        )

    async def _on_leased_rows(
        self,
        conn: psycopg.AsyncConnection,
        lease: Lease,
        keys: Sequence[Key],
        statement: LiteralString,
    ) -> None:
        """Runs `statement` ({queue}, {condition}: the keys, then the lease token) over the
        queue rows of `keys` that this lease holds."""
        if not keys:
            return
        condition, params = keys_condition(self._pk, keys, row_type=self._queue)
        query = sql.SQL(statement).format(queue=self._queue, condition=condition)
        await conn.execute(query, [*params, lease.token])


async def unlock(conn: psycopg.AsyncConnection) -> None:
    """Lets go of the batch's session-level key locks, after its write committed (the
    executor's connection holds no others)."""
    await conn.execute("select pg_advisory_unlock_all()")


# The next batch's `catalog.is_disabled` asked with the same round trip (dropped: disabled).
UNLOCK_AND_CHECK = f"select pg_advisory_unlock_all(), coalesce(({catalog.IS_DISABLED}), true)"


async def unlock_and_check(conn: psycopg.AsyncConnection, vectorizer_id: int) -> bool:
    """`unlock`, and whether the vectorizer is now disabled or dropped."""
    row = await (await conn.execute(UNLOCK_AND_CHECK, (vectorizer_id,))).fetchone()
    return row is None or bool(row[1])


async def quietly(what: str, step: Coroutine[Any, Any, Any]) -> bool:
    """Awaits a clean-up step, logging instead of raising; False when it failed."""
    try:
        await asyncio.wait_for(step, RELEASE_TIMEOUT)
        return True
    except Exception as exc:  # the batch's own error is the one that matters
        log.debug("could not %s: %s", what, exc)
        return False
