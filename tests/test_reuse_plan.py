"""The reuse plan against a real store: what is unchanged, reused or sent, for vector and
halfvec stores (the embedding column may be either)."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from pgvector import HalfVector, Vector
from pgvector.psycopg import register_vector_async

from tests.worker_helpers import create_source, create_vectorizer
from vectorizer.catalog import load_vectorizer
from vectorizer.config import TableDestination
from vectorizer.reuse import TableReuse, as_array, text_hash
from vectorizer.stages.writing import RowEmbeddings, make_writer

STORED = np.array([0.5, -0.25, 0.125, 1.0, 0.0, -1.0, 0.75, 0.3333], dtype=np.float32)


def test_as_array_takes_vectors_halfvectors_and_arrays() -> None:
    for value in (Vector(STORED), HalfVector(STORED), STORED, STORED.tolist()):
        array = as_array(value)
        assert array.dtype == np.float32
        np.testing.assert_allclose(array, STORED, rtol=1e-3)


@pytest.mark.parametrize("column_type", ["vector(8)", "halfvec(8)"])
async def test_plan_marks_unchanged_rows_reuses_stored_vectors_and_sends_the_rest(
    conn: psycopg.Connection, db_url: str, column_type: str
) -> None:
    create_source(conn, rows=[(i, "t", "x") for i in range(1, 5)])
    vid = create_vectorizer(conn)
    conn.execute(
        "insert into docs_embedding_store (id, chunk_seq, chunk, embedding, chunk_hash,"
        " config_hash) select 1, 0, 'shared text', %s::vector, %s,"
        " ai._vectorizer_embedding_provenance(config) from ai.vectorizer where id = %s",
        (STORED.tolist(), text_hash("shared text"), vid),
    )
    # key 3's stored chunk has the right text but another config's provenance
    conn.execute(
        "insert into docs_embedding_store (id, chunk_seq, chunk, embedding, chunk_hash,"
        " config_hash) values (3, 0, 'old model text', %s::vector, %s, '\\x00')",
        (STORED.tolist(), text_hash("old model text")),
    )
    # key 4: its first chunk stays as it is, its second one is replaced, its third one dropped
    conn.execute(
        "insert into docs_embedding_store (id, chunk_seq, chunk, embedding, chunk_hash,"
        " config_hash) select 4, s, t, %s::vector, h, ai._vectorizer_embedding_provenance(config)"
        " from ai.vectorizer, unnest(%s::int[], %s::text[], %s::bytea[]) as x(s, t, h)"
        " where id = %s",
        (
            STORED.tolist(),
            [0, 1, 2],
            ["stays", "old tail", "gone"],
            [text_hash(t) for t in ("stays", "old tail", "gone")],
            vid,
        ),
    )
    conn.execute("drop view docs_embedding")  # it pins the column's type
    conn.execute(f"alter table docs_embedding_store alter column embedding type {column_type}")

    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        await register_vector_async(aconn)
        vectorizer = await load_vectorizer(aconn, vid)
        assert vectorizer is not None
        destination = vectorizer.config.destination
        assert isinstance(destination, TableDestination)
        reuse = TableReuse(vectorizer, destination, len)
        async with aconn.transaction():
            plan = await reuse.plan(
                aconn,
                [
                    ((1,), ["shared text"]),
                    ((2,), ["shared text", "new text", "new text"]),
                    ((3,), ["old model text"]),
                    ((4,), ["stays", "new tail"]),
                ],
            )

    unchanged, edited, other_model, partly = plan.rows
    assert unchanged.unchanged and not edited.unchanged and not other_model.unchanged
    # key 1's vector is copied inside Postgres when written: no vector comes to the worker
    assert edited.copies == {0}
    assert edited.vectors == [None, None, None]
    assert other_model.vectors == [None] and not other_model.copies
    # each text to embed once: "new text" fills two chunks of key 2
    assert plan.texts == ["new text", "old model text", "new tail"]
    assert plan.targets == [[(1, 1), (1, 2)], [(2, 0)], [(3, 1)]]
    # what the writer is told: delete only what changed (by ctid), leave the rest in place
    assert (edited.kept, edited.replaced) == (frozenset(), [])
    assert other_model.kept == frozenset() and len(other_model.replaced or []) == 1
    assert partly.kept == frozenset({0}) and len(partly.replaced or []) == 2
    assert partly.vectors == [None, None] and not partly.copies
    counts = plan.counts
    assert (counts.embedded, counts.same_row, counts.other_row, counts.rows_unchanged) == (
        3,
        3,  # key 1's chunk (unchanged), key 2's repeated "new text", key 4's first chunk
        1,  # key 2's "shared text", stored for key 1
        1,
    )
    assert counts.tokens_saved == len("shared text") * 2 + len("new text") + len("stays")


async def test_a_copy_whose_source_vanished_is_embedded_then(
    conn: psycopg.Connection, db_url: str
) -> None:
    """Another executor deleted the last stored copy of a hash between plan and write: the
    writer asks for the vector (refill) and writes it; the copy that still has a source is
    taken inside Postgres."""
    create_source(conn, rows=[(1, "t", "x"), (2, "t", "y")])
    vid = create_vectorizer(conn)
    conn.execute(
        "insert into docs_embedding_store (id, chunk_seq, chunk, embedding, chunk_hash,"
        " config_hash) select 1, 0, 'kept source', %s::vector, %s,"
        " ai._vectorizer_embedding_provenance(config) from ai.vectorizer where id = %s",
        (STORED.tolist(), text_hash("kept source"), vid),
    )
    fresh = np.linspace(-1, 1, 8, dtype=np.float32)
    asked: list[tuple[int, int]] = []

    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        await register_vector_async(aconn)
        vectorizer = await load_vectorizer(aconn, vid)
        assert vectorizer is not None
        provenance = await aconn.execute(
            "select ai._vectorizer_embedding_provenance(config) from ai.vectorizer where id = %s",
            (vid,),
        )
        found = await provenance.fetchone()
        assert found is not None
        chunks = ["kept source", "vanished text"]
        vectors: list[np.ndarray | None] = [None, None]
        row = RowEmbeddings(
            key=(2,),
            chunks=chunks,
            vectors=vectors,  # type: ignore[arg-type]
            hashes=[text_hash(c) for c in chunks],
            provenance=bytes(found[0]),
            copies={0, 1},
            replaced=[],
        )

        async def refill(missing: list[tuple[int, int]]) -> None:
            asked.extend(missing)
            for _, seq in missing:
                vectors[seq] = fresh

        async with aconn.transaction():
            await make_writer(vectorizer).write(aconn, [row], refill)

    assert asked == [(0, 1)]
    stored = conn.execute(
        "select chunk_seq, chunk, embedding::float4[] from docs_embedding_store where id = 2"
        " order by chunk_seq"
    ).fetchall()
    assert [(seq, chunk) for seq, chunk, _ in stored] == [(0, "kept source"), (1, "vanished text")]
    np.testing.assert_allclose(stored[0][2], STORED, rtol=1e-6)
    np.testing.assert_allclose(stored[1][2], fresh, rtol=1e-6)
