"""The worker's side of `ai.alter_vectorizer` (sql/idempotent/055-alter.sql).

A change to what the vectors depend on re-embeds every source key in the background. The
database keeps the cursor; an executor whose claim came back empty asks it for the next slice
of keys (`feed`), so live changes always drain first and a killed worker resumes at the cursor.
Chunk reuse then decides what is really embedded again, and each key's new vectors replace the
old ones in its batch's transaction, so search never sees a key without vectors.

A batch prepared under a config that was altered meanwhile must not be written: `ConfigGuard`
share-locks the catalog row right before the write (the alter's update waits for it, or the batch
sees the new config and rolls back, uncharged, for the runner to reload).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psycopg

from vectorizer import catalog

if TYPE_CHECKING:
    from vectorizer.config import Vectorizer

log = logging.getLogger(__name__)

# what `ai._vectorizer_reembed_feed` answers when there is nothing (more) to re-embed, and
# when a shadow store (a change of dimensions) covers every key and waits to be swapped in
NOTHING_TO_FEED = -1
SWAP_DUE = -2


class ConfigChanged(Exception):
    """The vectorizer's config changed since this runner loaded it: reload, then go on."""


class ConfigGuard:
    """Checks, right before a batch writes, that the catalog still holds the config the batch
    was prepared with (one per executor)."""

    def __init__(self, vectorizer: Vectorizer) -> None:
        self._vectorizer = vectorizer
        self._may_lock: bool | None = None

    async def ensure_current(self, conn: psycopg.AsyncConnection) -> None:
        """Raises ConfigChanged unless the config is current; holds a share lock on the catalog
        row until the caller's transaction ends, so an alter waits for this batch."""
        vectorizer = self._vectorizer
        if vectorizer.content_hash is None:
            return
        if self._may_lock is None:
            self._may_lock = await _may_lock_catalog(conn)
        lock = " for share" if self._may_lock else ""
        cursor = await conn.execute(
            catalog.CONTENT_HASH + lock,
            (vectorizer.id,),
        )
        row = await cursor.fetchone()
        if row is None or row[0] != vectorizer.content_hash:
            raise ConfigChanged(f"vectorizer {vectorizer.id} was altered during the batch")


async def _may_lock_catalog(conn: psycopg.AsyncConnection) -> bool:
    # FOR SHARE needs UPDATE on ai.vectorizer (ai.grant_vectorizer_usage grants it); a worker
    # role with SELECT only still checks, without the lock (an alter may then land mid-write)
    cursor = await conn.execute(catalog.MAY_LOCK_CATALOG)
    row = await cursor.fetchone()
    if row and row[0]:
        return True
    log.warning(
        "this role may not lock ai.vectorizer rows: batches check the config unlocked; "
        "run select ai.grant_vectorizer_usage('<role>') so an alter waits for in-flight writes"
    )
    return False


async def feed(conn: psycopg.AsyncConnection, vectorizer_id: int, max_keys: int) -> int:
    """Queues up to `max_keys` more keys of a running re-embed; the number queued, 0 while the
    last ones are still being embedded, NOTHING_TO_FEED when no re-embed is running, SWAP_DUE
    when a shadow store is complete."""
    try:
        cursor = await conn.execute(catalog.REEMBED_FEED, (vectorizer_id, max_keys))
    except psycopg.errors.InsufficientPrivilege as exc:
        # a role granted before this version: live changes must go on regardless
        log.warning(
            "vectorizer %s: cannot advance re-embeds (%s); run select "
            "ai.grant_vectorizer_usage('<role>') for this worker's role",
            vectorizer_id,
            exc.diag.message_primary,
        )
        return NOTHING_TO_FEED
    row = await cursor.fetchone()
    return int(row[0]) if row else NOTHING_TO_FEED


async def swap(conn: psycopg.AsyncConnection, vectorizer_id: int) -> bool:
    """Swaps a complete shadow store in for the store (one transaction, in SQL)."""
    cursor = await conn.execute(catalog.SWAP_STORE, (vectorizer_id,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def changed(conn: psycopg.AsyncConnection, vectorizer: Vectorizer) -> bool:
    """Whether the catalog's config differs from the one `vectorizer` was built from (asked
    after a batch failed: an alter may have moved its store away)."""
    if vectorizer.content_hash is None or conn.closed:
        return False
    try:
        cursor = await conn.execute(catalog.CONTENT_HASH, (vectorizer.id,))
        row = await cursor.fetchone()
    except psycopg.Error:
        return False
    return row is None or row[0] != vectorizer.content_hash
