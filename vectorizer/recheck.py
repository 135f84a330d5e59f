"""The write-time re-check: which of a batch's source rows still exist, pinned until commit.

The claim reads source rows without locking them, so a DELETE or a primary-key UPDATE may
commit while the batch waits for its embeddings; writing them then would leave store rows that
no source row owns (the trigger already cleaned up, and nothing cleans up again). So, after
the provider has answered and right before the write, the batch locks its source rows:

* `FOR KEY SHARE` for a table destination: it blocks only DELETE and key changes, not plain
  UPDATEs or foreign-key checks, and a DELETE arriving later waits for the (short) write and
  then its trigger removes what was written;
* `FOR NO KEY UPDATE` for a column destination, which is about to update those rows anyway.

`SKIP LOCKED` means the batch never waits: a DELETE that locked some of its rows first and
now waits for others of them would otherwise deadlock with it. A skipped row that is still
visible is *busy* (being deleted, re-keyed, or held `FOR UPDATE`): it is not written and goes
back to the queue uncharged, to be embedded, or found gone, a moment later. A row that is not
visible any more is *gone*: its store rows are deleted and nothing is written.

With leased claims (lease.py) the batch's transaction ends before the provider is called, so
the re-check also compares each present row with the version the claim read
(`queue.ROW_VERSION`: its xmin and ctid, which every UPDATE of the row changes): a row updated
meanwhile is *changed* and its vectors may be stale; it is not written and is embedded again
from its current content. An md5 of the row's text form told the same (bar an UPDATE that
rewrote equal values, or a table rewrite, which now count as changes) for ~15 µs of database
CPU per 2.5 KB row, twice per batch, growing with the documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from vectorizer.config import TableDestination, Vectorizer
from vectorizer.queue import ROW_VERSION, queue_table
from vectorizer.sqlparts import keys_condition

Key = tuple[Any, ...]

# A busy row is retried after this long: enough for the DELETE or key change holding it to
# commit, short enough that a row held FOR UPDATE by an application is embedded soon after.
BUSY_RETRY_SECONDS = 2.0


@dataclass
class SourceCheck:
    """The keys of one re-check, split by what the source table holds for them now."""

    present: set[Key] = field(default_factory=set)
    busy: set[Key] = field(default_factory=set)
    gone: set[Key] = field(default_factory=set)
    changed: set[Key] = field(default_factory=set)  # present, but not what was embedded


class SourceRecheck:
    """Locks a batch's source rows and sorts its keys into present, busy and gone."""

    def __init__(self, vectorizer: Vectorizer) -> None:
        self._pk = tuple(vectorizer.pk_names)
        self._source = sql.Identifier(vectorizer.source_schema, vectorizer.source_table)
        self._key_type = queue_table(vectorizer)
        if isinstance(vectorizer.config.destination, TableDestination):
            self._strength = sql.SQL("key share")
        else:
            self._strength = sql.SQL("no key update")

    def _select(self, keys: Sequence[Key], lock: bool) -> tuple[sql.Composed, list[object]]:
        condition, params = keys_condition(self._pk, keys, prefix="s", row_type=self._key_type)
        query = sql.SQL("select {}, {} from {} s where {}").format(
            sql.SQL(", ").join(sql.Identifier("s", name) for name in self._pk),
            ROW_VERSION,
            self._source,
            condition,
        )
        if lock:
            query = sql.SQL("{} for {} skip locked").format(query, self._strength)
        return query, params

    async def _keys(
        self, conn: psycopg.AsyncConnection, keys: Sequence[Key], lock: bool
    ) -> dict[Key, str]:
        """The keys found, each with its row's version."""
        query, params = self._select(keys, lock)
        async with conn.cursor() as cursor:
            await cursor.execute(query, params)
            # keys come back as the database spells them, like the claimed ones
            return {tuple(key): digest for *key, digest in await cursor.fetchall()}

    async def check(
        self,
        conn: psycopg.AsyncConnection,
        keys: Sequence[Key],
        versions: Mapping[Key, str] | None = None,
    ) -> SourceCheck:
        """Locks the rows of `keys` that can be locked now (until the transaction ends);
        with `versions` (each key's digest when claimed), marks the rows changed since."""
        result = SourceCheck()
        if not keys:
            return result
        found = await self._keys(conn, keys, lock=True)
        result.present = set(found)
        if versions is not None:
            result.changed = {key for key, digest in found.items() if versions.get(key) != digest}
        skipped = [key for key in keys if key not in result.present]
        if skipped:
            # usually none: only then a second look tells busy rows from gone ones
            result.busy = set(await self._keys(conn, skipped, lock=False))
            result.gone = {key for key in skipped if key not in result.busy}
        return result
