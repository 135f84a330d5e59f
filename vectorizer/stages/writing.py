"""Destination writers: replace a batch's embeddings inside the batch transaction.

Table destination: delete the keys' old rows, then binary COPY the new ones. Column
destination: one UPDATE per row of the source's embedding column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import psycopg
from pgvector import HalfVector
from psycopg import sql

from vectorizer.config import ColumnDestination, TableDestination, Vectorizer
from vectorizer.queue import keys_condition


@dataclass(frozen=True)
class RowEmbeddings:
    """The new embeddings of one source row; `chunks[i]` is stored with chunk_seq i."""

    key: tuple[Any, ...]
    chunks: Sequence[str]
    vectors: Sequence[np.ndarray]


class Writer(Protocol):
    async def write(self, conn: psycopg.AsyncConnection, rows: Sequence[RowEmbeddings]) -> int:
        """Replaces the embeddings of `rows`; returns the number of chunks written."""
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
        self._halfvec = False

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
                raise LookupError(
                    f"target table {self._target.as_string(conn)} has no column(s) "
                    f"{', '.join(missing)}"
                )
            self._type_oids = [by_name[column] for column in self._columns]
        return self._type_oids

    async def delete(self, conn: psycopg.AsyncConnection, keys: Sequence[tuple[Any, ...]]) -> None:
        if not keys:
            return
        condition, params = keys_condition(self._pk, keys)
        await conn.execute(
            sql.SQL("delete from {} where {}").format(self._target, condition), params
        )

    async def write(self, conn: psycopg.AsyncConnection, rows: Sequence[RowEmbeddings]) -> int:
        types = await self._types(conn)
        await self.delete(conn, [row.key for row in rows])
        written = 0
        async with conn.cursor() as cursor, cursor.copy(self._copy) as copy:
            copy.set_types(types)
            for row in rows:
                for seq, (chunk, vector) in enumerate(zip(row.chunks, row.vectors, strict=True)):
                    value = HalfVector(vector) if self._halfvec else vector
                    await copy.write_row((*row.key, seq, chunk, value))
                written += len(row.chunks)
        return written


class ColumnWriter:
    def __init__(self, vectorizer: Vectorizer, destination: ColumnDestination) -> None:
        pk = vectorizer.pk_names
        self._update = sql.SQL("update {} set {} = %s where ({}) = ({})").format(
            sql.Identifier(vectorizer.source_schema, vectorizer.source_table),
            sql.Identifier(destination.embedding_column),
            sql.SQL(", ").join(map(sql.Identifier, pk)),
            sql.SQL(", ").join(sql.Placeholder() * len(pk)),
        )

    async def write(self, conn: psycopg.AsyncConnection, rows: Sequence[RowEmbeddings]) -> int:
        params = [(row.vectors[0] if row.vectors else None, *row.key) for row in rows]
        if params:
            async with conn.cursor() as cursor:
                await cursor.executemany(self._update, params)
        return sum(len(row.vectors) for row in rows)


def make_writer(vectorizer: Vectorizer) -> TableWriter | ColumnWriter:
    destination = vectorizer.config.destination
    if isinstance(destination, TableDestination):
        return TableWriter(vectorizer, destination)
    return ColumnWriter(vectorizer, destination)
