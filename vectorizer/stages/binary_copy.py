"""A store's rows encoded as one `COPY ... (format binary)` stream, a batch at a time.

`copy.write_row` adapts every value of every chunk through psycopg's dumpers and wraps each
vector in a pgvector object first: a fifth of a backfill's worker CPU. Here a batch's vectors
are converted to big-endian in one numpy call, each key is dumped once per source row (not
per chunk), and the stream goes out in one `copy.write`. Only for the store layout we create
(int4 chunk_seq, text chunk, vector/halfvec embedding, jsonb metadata, bytea hashes);
`TableWriter` keeps `write_row` for any other.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import psycopg
from psycopg.adapt import Transformer
from psycopg.pq import Format

if TYPE_CHECKING:
    from vectorizer.stages.writing import RowEmbeddings

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"
# the types, by regtype name, of the columns after the key that this encoder writes
FAST_TYPES = {
    "chunk_seq": ("integer",),
    "chunk": ("text",),
    "embedding": ("vector", "halfvec"),
    "chunk_metadata": ("jsonb",),
    "chunk_hash": ("bytea",),
    "config_hash": ("bytea",),
}

_INT4 = struct.Struct(">ii")  # length 4, value
_LENGTH = struct.Struct(">i")
_FIELDS = struct.Struct(">h")


def fits(columns: Sequence[str], types: dict[str, str]) -> bool:
    """Whether every non-key column of `columns` has the type this encoder writes."""
    return all(
        any(types.get(column, "").endswith(name) for name in FAST_TYPES[column])
        for column in columns
    )


class BinaryRows:
    """Encodes RowEmbeddings as COPY binary rows: key..., chunk_seq, chunk, embedding
    [, chunk_metadata] [, chunk_hash, config_hash]."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection | psycopg.Connection[Any],
        key_oids: Sequence[int],
        *,
        halfvec: bool,
        metadata: bool,
        hashes: bool,
    ) -> None:
        self._keys = Transformer(conn)
        self._keys.set_dumper_types(list(key_oids), Format.BINARY)
        self._key_formats = [Format.BINARY] * len(key_oids)
        self._dtype = ">f2" if halfvec else ">f4"
        self._metadata = metadata
        self._hashes = hashes
        fields = len(key_oids) + 3 + int(metadata) + 2 * int(hashes)
        self._row_header = _FIELDS.pack(fields)

    def encode(self, rows: Sequence[RowEmbeddings]) -> tuple[bytes, int]:
        """The whole COPY stream (signature to trailer) and the number of chunks in it."""
        parts: list[bytes | np.ndarray] = [SIGNATURE]
        written = 0
        for row in rows:
            written += self._encode_row(row, parts)
        parts.append(TRAILER)
        return b"".join(parts), written

    def _encode_row(self, row: RowEmbeddings, parts: list[bytes | np.ndarray]) -> int:
        # kept in place, or copied inside Postgres (a copy has a vector only when refilled)
        seqs = [
            seq
            for seq in range(len(row.chunks))
            if seq not in row.kept and not (seq in row.copies and row.vectors[seq] is None)
        ]
        if not seqs:
            return 0
        key = self._dump_key(row.key)
        matrix = np.asarray([row.vectors[seq] for seq in seqs], dtype=self._dtype)
        vector_prefix = _vector_prefix(matrix.shape[1], matrix.itemsize)
        provenance = _bytea(row.provenance) if self._hashes else b""
        append = parts.append
        for index, seq in enumerate(seqs):
            append(self._row_header)
            append(key)
            append(_INT4.pack(4, seq))
            append(_text(row.chunks[seq]))
            append(vector_prefix)
            append(matrix[index])  # joined from the array itself, not from a copy
            if self._metadata:
                append(_jsonb(row.metadata_at(seq)))
            if self._hashes:
                append(_bytea(row.hashes[seq] if row.hashes else None))
                append(provenance)
        return len(seqs)

    def _dump_key(self, key: tuple[Any, ...]) -> bytes:
        dumped = self._keys.dump_sequence(key, self._key_formats)
        return b"".join(
            NULL if value is None else _LENGTH.pack(len(value)) + bytes(value) for value in dumped
        )


def _vector_prefix(dimensions: int, itemsize: int) -> bytes:
    # field length, then pgvector's header: dimensions and an unused int16
    return struct.pack(">iHH", 4 + dimensions * itemsize, dimensions, 0)


def _text(value: str) -> bytes:
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # as the server would refuse it: the writer isolates the row that holds it
        raise psycopg.DataError(f"the chunk is not valid UTF-8: {exc.reason}") from None
    return _LENGTH.pack(len(data)) + data


def _jsonb(value: dict[str, Any] | None) -> bytes:
    if value is None:
        return NULL
    data = b"\x01" + orjson.dumps(value)  # jsonb's binary format: version 1, then the text
    return _LENGTH.pack(len(data)) + data


def _bytea(value: bytes | None) -> bytes:
    return NULL if value is None else _LENGTH.pack(len(value)) + value
