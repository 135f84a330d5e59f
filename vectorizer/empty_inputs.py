"""Rows with nothing to embed: NULL, '' or whitespace-only text, a NULL or empty bytea, a
document that parses to blank text.

As in pgai such a row gets no chunk and no error, and its old embeddings are removed. Unlike
pgai it does not vanish: its key is kept in `ai._vectorizer_empty_input`, counted by the
`empty_rows` column of `ai.vectorizer_status` and by the `vectorizer_skipped_total` metric.

The key set lives in the database, so the count survives restarts and is shared by every
worker. It stays right because each claimed key is recorded again from scratch: a key whose
row got text, failed or disappeared leaves the set, and one still empty stays in it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from vectorizer.sqlparts import key_text

log = logging.getLogger(__name__)

# vectorizers already warned about: executors are made per drain, the warning once per process
_warned: set[int] = set()

# A worker upgraded before `vectorizer install` ran, or running as a role without rights on the
# table, must still embed: it only can't count empty rows, and says so once.
USABLE = """
select pg_catalog.to_regclass('ai._vectorizer_empty_input') is not null
and pg_catalog.has_table_privilege('ai._vectorizer_empty_input', 'select, insert, delete')
"""

# One round trip per batch: forget every claimed key that is not empty now, add the empty ones.
# Each key list travels as one jsonb array (dumped once, not once per key).
RECORD = """
with claimed as (select pk from pg_catalog.jsonb_array_elements(%(claimed)s::jsonb) pk),
empty as (select pk from pg_catalog.jsonb_array_elements(%(empty)s::jsonb) pk),
forgotten as (
    delete from ai._vectorizer_empty_input
    where vectorizer_id = %(vectorizer_id)s
    and pk in (select pk from claimed)
    and pk not in (select pk from empty)
)
insert into ai._vectorizer_empty_input (vectorizer_id, pk)
select %(vectorizer_id)s, pk from empty
on conflict (vectorizer_id, pk) do nothing
"""


class EmptyInputs:
    """Keeps one vectorizer's set of empty keys in step with what its batches found."""

    def __init__(self, vectorizer_id: int, pk_names: Sequence[str]) -> None:
        self._vectorizer_id = vectorizer_id
        self._pk_names = tuple(pk_names)
        self._usable: bool | None = None

    async def record(
        self,
        conn: psycopg.AsyncConnection,
        claimed: Sequence[tuple[Any, ...]],
        empty: Sequence[tuple[Any, ...]],
    ) -> int:
        """In the batch's transaction: `empty` keys are in the set, the other claimed ones are
        not. Returns how many keys were empty."""
        if not claimed or not await self._can_record(conn):
            return len(empty)
        await conn.execute(
            RECORD,
            {
                "vectorizer_id": self._vectorizer_id,
                "claimed": self._jsonb(claimed),
                "empty": self._jsonb(empty),
            },
        )
        return len(empty)

    async def _can_record(self, conn: psycopg.AsyncConnection) -> bool:
        if self._usable is None:
            cursor = await conn.execute(USABLE)
            row = await cursor.fetchone()
            self._usable = bool(row and row[0])
            if not self._usable and self._vectorizer_id not in _warned:
                _warned.add(self._vectorizer_id)
                log.warning(
                    "empty inputs of vectorizer %s are not counted: ai._vectorizer_empty_input "
                    "is missing or not writable (run `vectorizer install`, or grant select, "
                    "insert, delete on it to the worker's role)",
                    self._vectorizer_id,
                )
        return self._usable

    def _jsonb(self, keys: Sequence[tuple[Any, ...]]) -> Jsonb:
        """The keys as one jsonb array of `{column: value}` objects."""
        names = self._pk_names
        return Jsonb([dict(zip(names, key, strict=True)) for key in keys], dumps=_dumps)


def _dumps(document: object) -> str:
    # Values the JSON module can't write become text that casts back to the column's type in
    # SQL: that is how ai._vectorizer_empty_rows finds their rows.
    return json.dumps(document, default=key_text)
