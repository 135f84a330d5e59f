"""The pre-encoded binary COPY stream stores exactly what psycopg's `write_row` stores, for
the store layouts the worker writes (keys of several types and hostile names, metadata,
reuse hashes, halfvec, kept chunks skipped)."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector import HalfVector, Vector
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from vectorizer.stages.binary_copy import BinaryRows, fits
from vectorizer.stages.writing import RowEmbeddings

KEY = ['Id "x"', "part; drop table t"]  # hostile names: quoted everywhere


def _store(conn: psycopg.Connection, name: str, vector_type: str) -> None:
    conn.execute(
        sql.SQL(
            "create table {} ({} uuid, {} int8, chunk_seq int4, chunk text, embedding {}(3),"
            " chunk_metadata jsonb, chunk_hash bytea, config_hash bytea)"
        ).format(
            sql.Identifier(name),
            sql.Identifier(KEY[0]),
            sql.Identifier(KEY[1]),
            sql.SQL(vector_type),
        )
    )


def _rows() -> list[RowEmbeddings]:
    rng = np.random.default_rng(3)
    vectors = [rng.standard_normal(3).astype(np.float32) for _ in range(3)]
    return [
        RowEmbeddings(
            key=(uuid.UUID(int=1), -(2**40)),
            chunks=["héllo ✓", "", "third\nline\ttab\\"],
            vectors=vectors,
            metadata=[{"tokens": 2, "headings": ['A "q"']}, {}, {"page": None}],
            hashes=[b"\x00\x01", b"", b"\xff" * 16],
            provenance=b"prov",
        ),
        # seq 1 is kept in place: not written (its vector may be None)
        RowEmbeddings(
            key=(uuid.UUID(int=2), 7),
            chunks=["a", "b", "c"],
            vectors=[vectors[0], None, vectors[2]],  # type: ignore[list-item]
            kept=frozenset({1}),
        ),
        RowEmbeddings(key=(uuid.UUID(int=3), 8), chunks=[], vectors=[]),
    ]


def _columns(conn: psycopg.Connection, table: str) -> tuple[list[int], dict[str, str]]:
    found = conn.execute(
        "select attname, atttypid::int, atttypid::regtype::text from pg_attribute"
        " where attrelid = %s::regclass and attnum > 0 order by attnum",
        (table,),
    ).fetchall()
    return [oid for _, oid, _ in found], {name: regtype for name, _, regtype in found}


def _write_rows(
    conn: psycopg.Connection, table: str, rows: list[RowEmbeddings], half: bool
) -> None:
    oids, _ = _columns(conn, table)
    with (
        conn.cursor() as cursor,
        cursor.copy(
            sql.SQL("copy {} from stdin (format binary)").format(sql.Identifier(table))
        ) as copy,
    ):
        copy.set_types(oids)
        for row in rows:
            hashes = row.hashes or [None] * len(row.chunks)
            for seq, chunk in enumerate(row.chunks):
                if seq in row.kept:
                    continue
                vector: Any = (HalfVector if half else Vector)(row.vectors[seq])
                meta = row.metadata_at(seq)
                copy.write_row(
                    (
                        *row.key,
                        seq,
                        chunk,
                        vector,
                        None if meta is None else Jsonb(meta),
                        hashes[seq],
                        row.provenance,
                    )
                )


def _content(conn: psycopg.Connection, table: str) -> list[tuple[Any, ...]]:
    query = sql.SQL(
        "select {}, {}, chunk_seq, chunk, embedding::text, chunk_metadata, chunk_hash,"
        " config_hash from {} order by 1, 2, 3"
    ).format(sql.Identifier(KEY[0]), sql.Identifier(KEY[1]), sql.Identifier(table))
    return conn.execute(query).fetchall()


@pytest.mark.parametrize("vector_type", ["vector", "halfvec"])
def test_binary_rows_store_what_write_row_stores(
    conn: psycopg.Connection, vector_type: str
) -> None:
    register_vector(conn)
    _store(conn, "by_rows", vector_type)
    _store(conn, "by_stream", vector_type)
    rows = _rows()
    _write_rows(conn, "by_rows", rows, vector_type == "halfvec")

    oids, types = _columns(conn, "by_stream")
    assert fits(["chunk_seq", "chunk", "embedding", "chunk_metadata", "chunk_hash"], types)
    encoder = BinaryRows(
        conn, oids[:2], halfvec=vector_type == "halfvec", metadata=True, hashes=True
    )
    payload, written = encoder.encode(rows)
    with (
        conn.cursor() as cursor,
        cursor.copy(
            sql.SQL("copy {} from stdin (format binary)").format(sql.Identifier("by_stream"))
        ) as copy,
    ):
        copy.write(payload)

    assert written == 5
    expected = _content(conn, "by_rows")
    assert len(expected) == 5
    assert _content(conn, "by_stream") == expected


def test_other_column_types_fall_back_to_write_row(conn: psycopg.Connection) -> None:
    conn.execute("create table odd (id int, chunk_seq int8, chunk varchar, embedding vector(3))")
    _, types = _columns(conn, "odd")
    assert not fits(["chunk_seq", "chunk", "embedding"], types)


def test_a_lone_surrogate_is_a_data_error_the_writer_isolates(conn: psycopg.Connection) -> None:
    conn.execute("create table t (id int)")
    oids, _ = _columns(conn, "t")
    encoder = BinaryRows(conn, oids, halfvec=False, metadata=False, hashes=False)
    row = RowEmbeddings(key=(1,), chunks=["bad \ud800"], vectors=[np.zeros(3, np.float32)])
    with pytest.raises(psycopg.DataError, match="not valid UTF-8"):
        encoder.encode([row])
