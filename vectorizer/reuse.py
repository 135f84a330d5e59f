"""Chunk-level reuse: a text is embedded once per vectorizer and embedding config.

Every chunk is identified by a hash of its formatted text (what the provider is sent) and
stored with the provenance of the embedding config that embedded it (a hash computed by
`ai._vectorizer_embedding_provenance`, so SQL and worker always agree). Before a batch is
embedded, inside the batch transaction, one query reads the keys' stored chunks and which of
the batch's other hashes the store holds; then a plan decides per chunk:

* the key's stored chunks are all equal to the new ones (same seq, text, hash, provenance):
  the row is unchanged, nothing is embedded and nothing is written;
* a stored chunk equal to the new one at the same seq stays where it is: only the other seqs
  of the key are deleted and written again (an edit rewrites the chunks it touched);
* a stored chunk of this key, or of any other key of the store, has the hash and the current
  provenance: the writer copies its vector inside Postgres (`INSERT ... SELECT`), so reused
  vectors never travel to the worker and back;
* otherwise the text is embedded, once per batch however many chunks share it.

A NULL hash or provenance (chunks written by pgai's worker or before the upgrade) never
matches. Two executors may embed the same new text at once: both write their own keys' rows,
so nothing is lost; the per-key lock of the claim keeps one key to one executor. A vector of
another key is looked up by its hash again when it is copied: if every copy was deleted in the
meantime, the text is embedded then (`TableWriter.write`'s `embed`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads
from pydantic import TypeAdapter, ValidationError

from vectorizer.config import ColumnDestination, Embedding, TableDestination, Vectorizer
from vectorizer.queue import queue_table
from vectorizer.registry import Registry
from vectorizer.reuse_counts import ReuseCounts
from vectorizer.sqlparts import keys_condition, named_keys_condition

if TYPE_CHECKING:
    # the counters are imported at start-up (tracking); numpy and the providers only with work
    import numpy as np

    from vectorizer.embedders import Embedder

log = logging.getLogger(__name__)

HASH_BYTES = 16
REUSE_COLUMNS = ("chunk_hash", "config_hash")
# what the chunker knows of each chunk (offsets, headings, page), in stores that have it
METADATA_COLUMN = "chunk_metadata"

_EMBEDDING = TypeAdapter(Embedding)
_PROVENANCE_FUNCTION = "ai._vectorizer_embedding_provenance(pg_catalog.jsonb)"

Key = tuple[Any, ...]


def text_hash(text: str) -> bytes:
    """The hash stored with a chunk: blake2b of its formatted text."""
    # surrogatepass: a text the provider will reject still gets a stable hash
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=HASH_BYTES).digest()


@dataclass
class RowPlan:
    """One key's new chunks; `vectors[i]` is None until chunk i is embedded (kept and copied
    chunks never get one: their vectors stay in Postgres)."""

    key: Key
    chunks: Sequence[str]
    hashes: list[bytes]
    vectors: list[np.ndarray | None]
    unchanged: bool = False
    # each chunk's chunk_metadata; a chunk is left in place only if its stored one is equal
    # (the same text can move: its offsets, its page)
    metadata: Sequence[dict[str, Any] | None] = ()
    # chunk seqs whose stored row already holds this chunk: neither embedded nor written
    kept: frozenset[int] = frozenset()
    # chunk seqs whose vector is copied inside Postgres from a stored row (of this key or
    # another) with the same hash and provenance, looked up by hash when written
    copies: set[int] = field(default_factory=set)
    # the ctids of the stored rows to delete before writing; None: every stored row of the key
    replaced: list[str] | None = None
    # what this row saved; added to the run's counters only once the row is written
    counts: ReuseCounts = field(default_factory=ReuseCounts)


@dataclass
class BatchPlan:
    rows: list[RowPlan]
    provenance: bytes | None
    # the distinct texts to send, and for each the (row, chunk) positions it fills
    texts: list[str] = field(default_factory=list)
    targets: list[list[tuple[int, int]]] = field(default_factory=list)

    @property
    def counts(self) -> ReuseCounts:
        """The plan's counts over every row (what it would save if every row is written)."""
        total = ReuseCounts()
        for row in self.rows:
            total.add(row.counts)
        return total


@dataclass(frozen=True)
class _Stored:
    ctid: str
    seq: int
    chunk_hash: bytes | None
    current: bool  # embedded by the current config (provenance equal)
    chunk: str | None = None
    metadata: dict[str, Any] | None = None


def token_counter(embedder: Embedder) -> Callable[[str], int]:
    """Tokens a text would have cost, by the provider's own count or estimate."""
    from vectorizer.embedders.base import BadInputError
    from vectorizer.embedders.estimates import estimate_tokens, utf8_size

    def count(text: str) -> int:
        try:
            tokens = embedder.prepare_input(text)[1]
            # providers that pack by inputs only count nothing: estimate then
            return tokens or estimate_tokens(utf8_size(text))
        except BadInputError:
            return 0

    return count


class Reuse:
    """Plans a batch's embedding for one vectorizer on one executor."""

    def __init__(self, vectorizer: Vectorizer, tokens: Callable[[str], int]) -> None:
        self.vectorizer = vectorizer
        self._tokens = tokens
        self._checked = False
        self._enabled = False
        self.provenance: bytes | None = None

    async def plan(
        self,
        conn: psycopg.AsyncConnection,
        rows: Sequence[tuple[Key, Sequence[str]]],
        metadata: Sequence[Sequence[dict[str, Any] | None]] | None = None,
    ) -> BatchPlan:
        """`metadata[r]` is row r's chunk_metadata, when the chunker reports it."""
        if not self._checked:
            await self._check(conn)
        plans = [
            RowPlan(key, chunks, [text_hash(c) for c in chunks], [None] * len(chunks))
            for key, chunks in rows
        ]
        for row, row_metadata in zip(plans, metadata or (), strict=False):
            row.metadata = row_metadata
        plan = BatchPlan(plans, self.provenance)
        if self._enabled and self.provenance is not None and plans:
            await self._reuse_stored(conn, plan)
        self._dedupe(plan)
        return plan

    def tokens(self, text: str) -> int:
        """What embedding `text` costs, by the count the savings are estimated with."""
        return self._tokens(text)

    async def _check(self, conn: psycopg.AsyncConnection) -> None:
        self._checked = True
        self.provenance = await _provenance(conn, self.vectorizer)
        self._enabled = self.provenance is not None and await self._supported(conn)
        if not self._enabled:
            log.info(
                "vectorizer %s: chunk reuse is off (run `vectorizer install` to upgrade the "
                "schema, or the config changed during this run)",
                self.vectorizer.id,
            )

    async def _supported(self, conn: psycopg.AsyncConnection) -> bool:
        return False

    async def _reuse_stored(self, conn: psycopg.AsyncConnection, plan: BatchPlan) -> None:
        return  # the base class reuses only within the batch

    def _unchanged(self, row: RowPlan) -> None:
        row.unchanged = True
        row.counts.rows_unchanged += 1
        row.counts.same_row += len(row.chunks)
        row.counts.tokens_saved += sum(self._tokens(chunk) for chunk in row.chunks)

    def _saved(self, row: RowPlan, index: int, same_row: bool) -> None:
        if same_row:
            row.counts.same_row += 1
        else:
            row.counts.other_row += 1
        row.counts.tokens_saved += self._tokens(row.chunks[index])

    def _dedupe(self, plan: BatchPlan) -> None:
        """Collects the texts still to embed, each once; repeats count as reused (the row that
        sends a text counts it as embedded)."""
        first: dict[bytes, int] = {}
        for r, row in enumerate(plan.rows):
            if row.unchanged:
                continue
            for i, digest in enumerate(row.hashes):
                if i in row.kept or i in row.copies:
                    continue
                index = first.get(digest)
                if index is None:
                    first[digest] = len(plan.texts)
                    plan.texts.append(row.chunks[i])
                    plan.targets.append([(r, i)])
                    row.counts.embedded += 1
                    continue
                self._saved(row, i, same_row=plan.targets[index][0][0] == r)
                plan.targets[index].append((r, i))


class TableReuse(Reuse):
    """Reuse from a table destination's store: the key's own chunks, then any key's."""

    def __init__(
        self, vectorizer: Vectorizer, destination: TableDestination, tokens: Callable[[str], int]
    ) -> None:
        super().__init__(vectorizer, tokens)
        self._pk = vectorizer.pk_names
        self._target = sql.Identifier(destination.target_schema, destination.target_table)
        self._with_metadata = False
        self._metadata: sql.Composable = sql.SQL("null::jsonb")

    def _query(self, keys: sql.Composable) -> sql.Composed:
        """One round trip: the keys' stored chunks (kind 0), then those of the batch's other
        hashes that some other row of the store holds with the current provenance (kind 1)."""
        pk = sql.SQL(", ").join(map(sql.Identifier, self._pk))
        return sql.SQL(
            "with mine as materialized (select ctid, {pk}, chunk_seq, chunk_hash, config_hash,"
            " chunk, {metadata} as meta from {target} where {keys})"
            " select 0, ctid::text, {pk}, chunk_seq, chunk_hash,"
            " config_hash is not distinct from %(provenance)s, chunk, meta from mine"
            " union all select 1, null, {nulls}, null, h.digest, true, null, null"
            " from (select pg_catalog.substr(p.packed, i * {size} + 1, {size}) as digest"
            " from (select %(hashes)s::bytea as packed) as p,"
            " pg_catalog.generate_series(0, pg_catalog.length(p.packed) / {size} - 1) as i) as h"
            " where not exists (select from mine m where m.chunk_hash = h.digest"
            " and m.config_hash = %(provenance)s)"
            " and exists (select from {target} s where s.chunk_hash = h.digest"
            " and s.config_hash = %(provenance)s)"
        ).format(
            pk=pk,
            metadata=self._metadata,
            target=self._target,
            nulls=sql.SQL(", ").join([sql.NULL] * len(self._pk)),
            size=sql.Literal(HASH_BYTES),
            keys=keys,
        )

    async def _supported(self, conn: psycopg.AsyncConnection) -> bool:
        cursor = await conn.execute(
            "select attname from pg_catalog.pg_attribute"
            " where attrelid = to_regclass(%s) and attname = any(%s) and not attisdropped",
            (self._target.as_string(conn), [*REUSE_COLUMNS, METADATA_COLUMN]),
        )
        columns = {row[0] for row in await cursor.fetchall()}
        if METADATA_COLUMN in columns:
            self._metadata = sql.Identifier(METADATA_COLUMN)
            self._with_metadata = True
        return all(column in columns for column in REUSE_COLUMNS)

    async def _reuse_stored(self, conn: psycopg.AsyncConnection, plan: BatchPlan) -> None:
        stored, elsewhere = await self._stored(conn, plan)
        for row in plan.rows:
            chunks = stored.get(row.key, [])
            kept = _kept_in_place(chunks, row, self._with_metadata)
            if len(kept) == len(chunks) == len(row.chunks):
                self._unchanged(row)
                continue
            row.kept = kept
            row.replaced = [c.ctid for c in chunks if c.seq not in kept]
            for seq in kept:
                self._saved(row, seq, same_row=True)
            own = {c.chunk_hash for c in chunks if c.chunk_hash and c.current}
            for i, digest in enumerate(row.hashes):
                if i in kept:
                    continue
                if digest in own:
                    row.copies.add(i)
                    self._saved(row, i, same_row=True)
                elif digest in elsewhere:
                    row.copies.add(i)
                    self._saved(row, i, same_row=False)

    async def _stored(
        self, conn: psycopg.AsyncConnection, plan: BatchPlan
    ) -> tuple[dict[Key, list[_Stored]], set[bytes]]:
        keys, params = named_keys_condition(
            self._pk, [row.key for row in plan.rows], row_type=self._target
        )
        # one bytea of fixed-size hashes, cut apart in SQL: psycopg dumps an array param
        # element by element in Python, ~0.15 ms per batch of 400
        hashes = b"".join(sorted({digest for row in plan.rows for digest in row.hashes}))
        params.update(hashes=hashes, provenance=plan.provenance)
        async with conn.cursor() as cursor:
            # orjson: a stored chunk_metadata is parsed for every stored chunk of the batch
            set_json_loads(orjson.loads, cursor)
            await cursor.execute(self._query(keys), params)
            records = await cursor.fetchall()
        width = len(self._pk)
        stored: dict[Key, list[_Stored]] = {}
        elsewhere: set[bytes] = set()
        for record in records:
            chunk_hash = _bytes(record[width + 3])
            if record[0] == 1:
                if chunk_hash is not None:
                    elsewhere.add(chunk_hash)
                continue
            ctid, seq, current, chunk, metadata = (record[1], record[width + 2], *record[-3:])
            stored.setdefault(tuple(record[2 : 2 + width]), []).append(
                _Stored(ctid, seq, chunk_hash, bool(current), chunk, metadata)
            )
            if current and chunk_hash is not None:
                # a stored chunk of another key of this batch is a source too (the probe
                # leaves out the hashes these keys hold)
                elsewhere.add(chunk_hash)
        return stored, elsewhere


class ColumnReuse(Reuse):
    """Column destinations keep the hash in ai._vectorizer_column_hash: a row whose formatted
    text and config are those of its current embedding is left alone."""

    def __init__(
        self, vectorizer: Vectorizer, destination: ColumnDestination, tokens: Callable[[str], int]
    ) -> None:
        super().__init__(vectorizer, tokens)
        self._pk = vectorizer.pk_names
        source = sql.Identifier(vectorizer.source_schema, vectorizer.source_table)
        self._queue = queue_table(vectorizer)  # the row type of the batch's keys
        self._stored_query = sql.SQL(
            "select {s_pk}, h.chunk_hash, h.config_hash, s.{column} is not null"
            " from {source} s join ai._vectorizer_column_hash h"
            " on h.vectorizer_id = {id} and h.pk = jsonb_build_array({s_pk})"
            " where "
        ).format(
            s_pk=sql.SQL(", ").join(sql.Identifier("s", name) for name in self._pk),
            column=sql.Identifier(destination.embedding_column),
            source=source,
            id=sql.Literal(vectorizer.id),
        )

    async def _supported(self, conn: psycopg.AsyncConnection) -> bool:
        cursor = await conn.execute("select to_regclass('ai._vectorizer_column_hash') is not null")
        row = await cursor.fetchone()
        return bool(row and row[0])

    async def _reuse_stored(self, conn: psycopg.AsyncConnection, plan: BatchPlan) -> None:
        condition, params = keys_condition(
            self._pk, [row.key for row in plan.rows], prefix="s", row_type=self._queue
        )
        cursor = await conn.execute(self._stored_query + condition, params)
        width = len(self._pk)
        stored = {
            tuple(record[:width]): (_bytes(record[width]), _bytes(record[width + 1]), record[-1])
            for record in await cursor.fetchall()
        }
        for row in plan.rows:
            found = stored.get(row.key)
            if found is None or len(row.hashes) != 1:
                continue
            chunk_hash, config_hash, has_vector = found
            if has_vector and chunk_hash == row.hashes[0] and config_hash == plan.provenance:
                self._unchanged(row)


def make_reuse(vectorizer: Vectorizer, embedder: Embedder) -> Reuse:
    destination = vectorizer.config.destination
    return _REUSE.lookup(destination)(vectorizer, destination, token_counter(embedder))


def as_array(value: Any) -> np.ndarray:
    """A stored vector (pgvector's Vector or HalfVector, or an array) as float32."""
    import numpy as np

    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy is not None else value, dtype=np.float32)


async def _provenance(conn: psycopg.AsyncConnection, vectorizer: Vectorizer) -> bytes | None:
    """The current config's provenance, or None when it cannot be vouched for: the schema
    predates it, or the config in the catalog is no longer the one this run embeds with."""
    cursor = await conn.execute("select to_regprocedure(%s) is not null", (_PROVENANCE_FUNCTION,))
    row = await cursor.fetchone()
    if not row or not row[0]:
        return None
    cursor = await conn.execute(
        "select ai._vectorizer_embedding_provenance(config), config -> 'embedding'"
        " from ai.vectorizer where id = %s",
        (vectorizer.id,),
    )
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        return None
    try:
        current = _EMBEDDING.validate_python(row[1])
    except ValidationError:
        return None  # hand-edited into something this run cannot read: not its config
    if current != vectorizer.config.embedding:
        return None
    return bytes(row[0])


def _kept_in_place(stored: list[_Stored], row: RowPlan, with_metadata: bool) -> frozenset[int]:
    """The seqs whose stored chunk is the new one: same text, hash, provenance and (where the
    store keeps it) chunk_metadata."""
    return frozenset(
        old.seq
        for old in stored
        if old.seq < len(row.chunks)
        and old.chunk_hash is not None
        and old.chunk_hash == row.hashes[old.seq]
        and old.current
        and old.chunk == row.chunks[old.seq]
        and (not with_metadata or old.metadata == _metadata_at(row, old.seq))
    )


def _metadata_at(row: RowPlan, seq: int) -> dict[str, Any] | None:
    return row.metadata[seq] if seq < len(row.metadata) else None


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


# One line per destination: its config class and how its stored chunks are reused.
_REUSE: Registry[Callable[[Vectorizer, Any, Callable[[str], int]], Reuse]] = Registry(
    "writing", {TableDestination: TableReuse, ColumnDestination: ColumnReuse}
)
