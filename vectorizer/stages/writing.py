"""Destination writers: replace a batch's embeddings inside the batch transaction.

Table destination: delete the keys' old rows (all of them, or those chunk reuse replaces), copy
reused vectors inside Postgres (`INSERT ... SELECT` by hash, in the same statement), then binary
COPY the newly embedded ones, with each chunk's `chunk_metadata` when the store has that column
(a store made elsewhere without it is written without it, said once in the log). Column
destination: one UPDATE per row of the source's embedding column; with `aggregate => 'mean'`
the vector is the token-weighted, L2-normalised mean of the row's chunk vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
import psycopg
from pgvector import HalfVector
from psycopg import sql
from psycopg.adapt import PyFormat
from psycopg.types.json import Jsonb

from vectorizer.config import ColumnDestination, TableDestination, Vectorizer
from vectorizer.errors import VectorizerError
from vectorizer.registry import Registry
from vectorizer.reuse import METADATA_COLUMN, REUSE_COLUMNS
from vectorizer.sqlparts import keys_condition
from vectorizer.stages.binary_copy import BinaryRows, fits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowEmbeddings:
    """The new embeddings of one source row; `chunks[i]` is stored with chunk_seq i."""

    key: tuple[Any, ...]
    chunks: Sequence[str]
    vectors: Sequence[np.ndarray]
    # chunk reuse: the hash of each chunk's text and the provenance of the config that embedded
    # them (vectorizer.reuse); stored when the destination has room for them
    hashes: Sequence[bytes] = ()
    provenance: bytes | None = None
    # seqs whose stored row already holds this chunk (left alone; their vector may be None),
    # seqs whose vector is copied from a stored row with the same hash and provenance (their
    # vector is None), and the ctids of the stored rows to delete first; None deletes every
    # stored row of the key
    kept: frozenset[int] = frozenset()
    copies: AbstractSet[int] = frozenset()
    replaced: Sequence[str] | None = None
    # chunk_metadata per chunk (tokens, offsets, headings, page); empty: stored as NULL
    metadata: Sequence[dict[str, Any]] = field(default_factory=list)

    def metadata_at(self, seq: int) -> dict[str, Any] | None:
        return self.metadata[seq] if seq < len(self.metadata) else None


# Fills the vectors of chunks whose copy found no stored vector any more (another executor
# deleted the last copy since the plan): (row index, seq) pairs, embedded then.
Refill = Callable[[list[tuple[int, int]]], Awaitable[None]]


class Writer(Protocol):
    async def write(
        self,
        conn: psycopg.AsyncConnection,
        rows: Sequence[RowEmbeddings],
        refill: Refill | None = None,
    ) -> int:
        """Replaces the embeddings of `rows`; returns the number of chunks written."""
        ...

    async def delete(self, conn: psycopg.AsyncConnection, keys: Sequence[tuple[Any, ...]]) -> None:
        """Removes every embedding of `keys`, whose source rows are gone."""
        ...


class TableWriter:
    def __init__(self, vectorizer: Vectorizer, destination: TableDestination) -> None:
        self._pk = vectorizer.pk_names
        self._target = sql.Identifier(destination.target_schema, destination.target_table)
        self._destination = destination
        self._columns = [*self._pk, "chunk_seq", "chunk", "embedding"]
        self._copy = sql.SQL("copy {} ({}) from stdin with (format binary)").format(
            self._target, sql.SQL(", ").join(map(sql.Identifier, self._columns))
        )
        self._type_oids: list[int] | None = None
        # ctids travel as a binary text[] (%b): psycopg's text arrays escape element by element
        self._delete_ctids = sql.SQL(
            "delete from {} where ctid = any(%(gone)b::text[]::tid[])"
        ).format(self._target)
        self._copy_reused: sql.Composed | None = None
        self._with_metadata = False
        self._extra_columns: list[str] = []
        self._halfvec = False
        self._binary: BinaryRows | None = None  # None: a layout it does not know, write_row

    async def _types(self, conn: psycopg.AsyncConnection) -> list[int]:
        if self._type_oids is None:
            cursor = await conn.execute(
                """
                select a.attname, a.atttypid::int, a.atttypid::regtype::text
                from pg_catalog.pg_attribute a
                where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped
                """,
                (self._target.as_string(conn),),
            )
            found = await cursor.fetchall()
            by_name = {name: oid for name, oid, _ in found}
            # halfvec stores (ai.destination_table(vector_type => 'halfvec')) dump HalfVector
            self._halfvec = any(n == "embedding" and t.endswith("halfvec") for n, _, t in found)
            missing = [column for column in self._columns if column not in by_name]
            if missing:
                raise VectorizerError(
                    f"target table {self._target.as_string(conn)} has no column(s) "
                    f"{', '.join(missing)}",
                    step="writing",
                )
            self._use_metadata_column(METADATA_COLUMN in by_name, conn)
            # stores created before chunk reuse (or by pgai) lack these: written when present
            self._extra_columns = [c for c in REUSE_COLUMNS if c in by_name]
            columns = self._columns + self._extra_columns
            self._type_oids = [by_name[column] for column in columns]
            type_names = {name: regtype for name, _, regtype in found}
            if fits(columns[len(self._pk) :], type_names):
                self._binary = BinaryRows(
                    conn,
                    self._type_oids[: len(self._pk)],
                    halfvec=self._halfvec,
                    metadata=self._with_metadata,
                    hashes=bool(self._extra_columns),
                )
            self._copy = sql.SQL("copy {} ({}) from stdin with (format binary)").format(
                self._target, sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            self._copy_reused = self._copy_reused_statement(columns)
        return self._type_oids

    def _copy_reused_statement(self, columns: list[str]) -> sql.Composed:
        """Deletes the replaced rows by ctid, then inserts the copied chunks with a vector of
        the store that has the same hash and provenance. The deletes come first (the
        one-time filter waits for them), so a copied chunk may take the seq of a row deleted
        here, even one whose vector it takes: the statement still sees that row."""
        names = [c for c in columns if c != "embedding"]
        return sql.SQL(
            "with gone as (delete from {target}"
            " where ctid = any(%(gone)b::text[]::tid[]) returning 1)"
            " insert into {target} ({names}, embedding)"
            " select {values}, v.embedding"
            " from jsonb_populate_recordset(null::{target}, %(rows)s) as n"
            " cross join lateral (select s.embedding from {target} as s"
            " where s.chunk_hash = n.chunk_hash and s.config_hash = n.config_hash limit 1) as v"
            " where (select count(*) from gone) >= 0"
            " returning {pk}, chunk_seq"
        ).format(
            target=self._target,
            names=sql.SQL(", ").join(map(sql.Identifier, names)),
            values=sql.SQL(", ").join(sql.Identifier("n", name) for name in names),
            pk=sql.SQL(", ").join(map(sql.Identifier, self._pk)),
        )

    def _use_metadata_column(self, present: bool, conn: psycopg.AsyncConnection) -> None:
        self._with_metadata = present
        if not present:
            log.warning(
                "target table %s has no %s column; chunks are written without their metadata "
                "(alter table ... add column %s jsonb to keep it)",
                self._target.as_string(conn),
                METADATA_COLUMN,
                METADATA_COLUMN,
            )
            return
        self._columns.append(METADATA_COLUMN)

    async def delete(self, conn: psycopg.AsyncConnection, keys: Sequence[tuple[Any, ...]]) -> None:
        if not keys:
            return
        condition, params = keys_condition(self._pk, keys, row_type=self._target)
        await conn.execute(
            sql.SQL("delete from {} where {}").format(self._target, condition), params
        )

    async def _delete_and_copy(
        self,
        conn: psycopg.AsyncConnection,
        rows: Sequence[RowEmbeddings],
        refill: Refill | None,
    ) -> int:
        """Deletes the stored chunks `rows` replace (whole keys, or the rows chunk reuse names)
        and writes the chunks whose vectors are copied from the store, without the vectors
        leaving Postgres; returns how many were copied. A copy that found no source any more
        gets its vector from `refill` and is written with the embedded chunks."""
        await self.delete(conn, [row.key for row in rows if row.replaced is None])
        gone = [ctid for row in rows if row.replaced for ctid in row.replaced]
        # a copy refilled by an earlier attempt at this write (its vector is here) is COPYed
        copies = [
            (r, seq)
            for r, row in enumerate(rows)
            for seq in sorted(row.copies)
            if row.vectors[seq] is None
        ]
        if not copies:
            if gone:
                await conn.execute(self._delete_ctids, {"gone": gone})
            return 0
        values = [self._copy_values(conn, rows[r], seq) for r, seq in copies]
        cursor = await conn.execute(
            self._copy_reused, {"gone": gone, "rows": Jsonb(values, dumps=orjson.dumps)}
        )
        width = len(self._pk)
        written = {(tuple(found[:width]), found[width]) for found in await cursor.fetchall()}
        missing = [(r, seq) for r, seq in copies if (rows[r].key, seq) not in written]
        if not missing:
            return len(written)
        if refill is None:
            raise VectorizerError(
                f"{len(missing)} reused vector(s) vanished while being copied", step="writing"
            )
        log.info("%d reused vector(s) were deleted meanwhile; embedding them", len(missing))
        await refill(missing)
        return len(written)

    def _copy_values(
        self, conn: psycopg.AsyncConnection, row: RowEmbeddings, seq: int
    ) -> dict[str, Any]:
        """One copied chunk as the JSON object `jsonb_populate_recordset` turns into a store
        row: every value in its Postgres text form, typed by the store's own columns."""
        values: dict[str, Any] = {
            name: _pg_text(conn, value) for name, value in zip(self._pk, row.key, strict=True)
        }
        values["chunk_seq"] = seq
        values["chunk"] = row.chunks[seq]
        values["chunk_hash"] = "\\x" + row.hashes[seq].hex()
        values["config_hash"] = None if row.provenance is None else "\\x" + row.provenance.hex()
        if self._with_metadata:
            values[METADATA_COLUMN] = row.metadata_at(seq)
        return values

    async def write(
        self,
        conn: psycopg.AsyncConnection,
        rows: Sequence[RowEmbeddings],
        refill: Refill | None = None,
    ) -> int:
        types = await self._types(conn)
        written = await self._delete_and_copy(conn, rows, refill)
        if self._binary is not None:
            payload, encoded = self._binary.encode(rows)
            async with conn.cursor() as cursor, cursor.copy(self._copy) as copy:
                # a view: psycopg cuts a large buffer into pieces, which would copy bytes
                await copy.write(memoryview(payload))
            return written + encoded
        async with conn.cursor() as cursor, cursor.copy(self._copy) as copy:
            copy.set_types(types)
            for row in rows:
                extras = self._extras(row)
                for seq, (chunk, vector) in enumerate(zip(row.chunks, row.vectors, strict=True)):
                    # a copy has no vector here, unless its source vanished and it was refilled
                    if seq in row.kept or (seq in row.copies and vector is None):
                        continue
                    values = (*row.key, seq, chunk, HalfVector(vector) if self._halfvec else vector)
                    if self._with_metadata:
                        values = (*values, _jsonb(row.metadata_at(seq)))
                    await copy.write_row((*values, *extras[seq]))
                    written += 1
        return written

    def _extras(self, row: RowEmbeddings) -> list[tuple[Any, ...]]:
        """Per chunk, the values of the reuse columns the store has."""
        if not self._extra_columns:
            return [()] * len(row.chunks)
        hashes = row.hashes or [None] * len(row.chunks)
        return [(digest, row.provenance) for digest in hashes]


class ColumnWriter:
    def __init__(self, vectorizer: Vectorizer, destination: ColumnDestination) -> None:
        pk = vectorizer.pk_names
        self._aggregate = destination.aggregate
        self._update = sql.SQL("update {} set {} = %s where ({}) = ({})").format(
            sql.Identifier(vectorizer.source_schema, vectorizer.source_table),
            sql.Identifier(destination.embedding_column),
            sql.SQL(", ").join(map(sql.Identifier, pk)),
            sql.SQL(", ").join(sql.Placeholder() * len(pk)),
        )
        self._hashes = ColumnHashes(vectorizer)

    async def delete(self, conn: psycopg.AsyncConnection, keys: Sequence[tuple[Any, ...]]) -> None:
        """Nothing to do: the embedding lived in the source row and went with it."""

    async def write(
        self,
        conn: psycopg.AsyncConnection,
        rows: Sequence[RowEmbeddings],
        refill: Refill | None = None,
    ) -> int:
        # column reuse never copies (ColumnReuse only leaves unchanged rows alone): no refill
        params = [(self._row_vector(row), *row.key) for row in rows]
        if params:
            async with conn.cursor() as cursor:
                await cursor.executemany(self._update, params)
            await self._hashes.save(conn, rows)
        return sum(len(row.vectors) for row in rows)

    def _row_vector(self, row: RowEmbeddings) -> np.ndarray | None:
        if not row.vectors:
            return None
        if self._aggregate == "mean":
            return weighted_mean(
                row.vectors, [_weight(row.metadata_at(i)) for i in range(len(row.vectors))]
            )
        return row.vectors[0]


def _pg_text(conn: psycopg.AsyncConnection, value: Any) -> Any:
    """A key value as Postgres would read it from text (jsonb_populate_recordset parses it
    with the column type's input function): psycopg's own text dumper for the value's type."""
    if value is None or isinstance(value, str | int):
        return value
    dumper = conn.adapters.get_dumper(type(value), PyFormat.TEXT)(type(value), conn)
    return bytes(dumper.dump(value)).decode()


def _jsonb(value: dict[str, Any] | None) -> Jsonb | None:
    # orjson: several times faster than json.dumps, on a value written for every chunk
    return None if value is None else Jsonb(value, dumps=orjson.dumps)


def weighted_mean(vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of `vectors`, scaled to unit length (left as is if it is zero)."""
    stacked = np.asarray(vectors, dtype=np.float64)
    mean = np.average(stacked, axis=0, weights=np.asarray(weights, dtype=np.float64))
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def _weight(meta: dict[str, Any] | None) -> float:
    # a chunk weighs its tokens; one without a count (no metadata) weighs as one token
    tokens = (meta or {}).get("tokens")
    return float(tokens) if isinstance(tokens, int) and tokens > 0 else 1.0


def make_writer(vectorizer: Vectorizer) -> TableWriter | ColumnWriter:
    destination = vectorizer.config.destination
    return _WRITERS.lookup(destination)(vectorizer, destination)


class ColumnHashes:
    """The side table that remembers, per source row of a column destination, the hash and
    provenance of the text behind its embedding (the user's table gets no extra column)."""

    def __init__(self, vectorizer: Vectorizer) -> None:
        pk = vectorizer.pk_names
        source = sql.Identifier(vectorizer.source_schema, vectorizer.source_table)
        where = sql.SQL("({}) = ({})").format(
            sql.SQL(", ").join(sql.Identifier("s", name) for name in pk),
            sql.SQL(", ").join(sql.Placeholder() * len(pk)),
        )
        row_key = sql.SQL("jsonb_build_array({})").format(
            sql.SQL(", ").join(sql.Identifier("s", name) for name in pk)
        )
        self._upsert = sql.SQL(
            "insert into ai._vectorizer_column_hash (vectorizer_id, pk, chunk_hash, config_hash)"
            " select {id}, {row_key}, %s, %s from {source} s where {where}"
            " on conflict (vectorizer_id, pk) do update"
            " set chunk_hash = excluded.chunk_hash, config_hash = excluded.config_hash"
        ).format(id=sql.Literal(vectorizer.id), row_key=row_key, source=source, where=where)
        self._delete = sql.SQL(
            "delete from ai._vectorizer_column_hash h using {source} s"
            " where h.vectorizer_id = {id} and h.pk = {row_key} and {where}"
        ).format(id=sql.Literal(vectorizer.id), row_key=row_key, source=source, where=where)
        self._exists: bool | None = None

    async def save(self, conn: psycopg.AsyncConnection, rows: Sequence[RowEmbeddings]) -> None:
        if self._exists is None:
            cursor = await conn.execute(
                "select to_regclass('ai._vectorizer_column_hash') is not null"
            )
            found = await cursor.fetchone()
            self._exists = bool(found and found[0])
        if not self._exists:
            return
        # one chunk, one hash; an aggregate of several chunks is not reused (ColumnReuse)
        hashed = [(row.hashes[0], row.provenance, *row.key) for row in rows if len(row.hashes) == 1]
        blank = [row.key for row in rows if len(row.hashes) != 1]
        async with conn.cursor() as cursor:
            if hashed:
                await cursor.executemany(self._upsert, hashed)
            if blank:
                await cursor.executemany(self._delete, blank)


# One line per destination: its config class and its writer.
_WRITERS: Registry[Callable[[Vectorizer, Any], TableWriter | ColumnWriter]] = Registry(
    "writing", {TableDestination: TableWriter, ColumnDestination: ColumnWriter}
)
