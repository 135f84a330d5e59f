"""Every embedding provider end to end: `ai.embedding_*` in SQL, the real worker CLI as a
subprocess, real HTTP to the fake Ollama, Voyage and OpenAI servers (LiteLLM routed to the
latter), and the local model in the worker process, offline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from tests.fake_ollama import FakeOllama
from tests.fake_openai import FakeOpenAI, expected_vector
from tests.fake_voyage import TEST_API_KEY as VOYAGE_KEY
from tests.fake_voyage import FakeVoyage, expected_voyage_vector
from tests.worker_helpers import (
    create_source,
    create_vectorizer,
    error_rows,
    queue_count,
    queue_rows,
    run_ok,
    run_worker,
    store_rows,
    worker_env,
)

ROWS = [
    (1, "first", "Postgres keeps the embeddings next to the rows they describe."),
    (2, "second", "A worker beside the database embeds whatever changed."),
    (3, "third", "Each provider speaks its own protocol."),
]


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def fake_voyage() -> Iterator[FakeVoyage]:
    with FakeVoyage() as server:
        yield server


@pytest.fixture
def fake_openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def ollama_embedding(server: FakeOllama) -> str:
    return f"ai.embedding_ollama('nomic-embed-text', 768, base_url => {sql.quote(server.host)})"


def voyage_embedding(server: FakeVoyage, api_key_name: str | None = None) -> str:
    key = "" if api_key_name is None else f", api_key_name => {sql.quote(api_key_name)}"
    base_url = sql.quote(server.base_url)
    return f"ai.embedding_voyageai('voyage-3-lite', 512, base_url => {base_url}{key})"


def litellm_embedding(server: FakeOpenAI) -> str:
    options = json.dumps({"api_base": server.base_url})
    return (
        "ai.embedding_litellm('openai/text-embedding-3-small', 1536,"
        f" extra_options => {sql.quote(options)}::jsonb)"
    )


LOCAL_EMBEDDING = (
    "ai.embedding_sentence_transformers('sentence-transformers/all-MiniLM-L6-v2', 384)"
)


def stored(conn: psycopg.Connection, table: str) -> dict[int, tuple[str, np.ndarray]]:
    """id -> (chunk, embedding) of a single-chunk-per-row store."""
    rows = store_rows(conn, f"{table}_embedding_store")
    assert [row[1] for row in rows] == [0] * len(rows)
    return {row[0]: (row[2], np.asarray(row[3], dtype=np.float32)) for row in rows}


def local_vectors(texts: list[str]) -> np.ndarray:
    from vectorizer.embedders.sentence_transformers import shared_model

    local = asyncio.run(shared_model("sentence-transformers/all-MiniLM-L6-v2", None))
    return np.asarray(local.model.encode(texts, normalize_embeddings=True), dtype=np.float32)


def test_every_provider_embeds_through_the_worker(
    conn: psycopg.Connection,
    db_url: str,
    fake_ollama: FakeOllama,
    fake_voyage: FakeVoyage,
    fake_openai_server: FakeOpenAI,
) -> None:
    pytest.importorskip("sentence_transformers", reason="the `local` extra is not installed")
    # Not on the Ollama server yet: the worker pulls it first.
    fake_ollama.add_model("nomic-embed-text", dimensions=768, context_length=2048, pulled=False)
    embeddings = {
        "docs_ollama": ollama_embedding(fake_ollama),
        "docs_voyage": voyage_embedding(fake_voyage),
        "docs_litellm": litellm_embedding(fake_openai_server),
        "docs_local": LOCAL_EMBEDDING,
    }
    ids = {}
    for table, embedding in embeddings.items():
        create_source(conn, table, ROWS)
        ids[table] = create_vectorizer(conn, table, embedding=embedding)

    run_ok(db_url, env=worker_env(fake_openai_server, VOYAGE_API_KEY=VOYAGE_KEY))

    bodies = {key: body for key, _, body in ROWS}
    expectations: dict[str, Any] = {
        "docs_ollama": lambda text: expected_vector(text, 768),
        "docs_voyage": lambda text: expected_voyage_vector(text, 512),
        "docs_litellm": lambda text: expected_vector(text, 1536),
    }
    local = dict(zip(bodies, local_vectors(list(bodies.values())), strict=True))
    for table, vectorizer_id in ids.items():
        rows = stored(conn, table)
        assert sorted(rows) == [1, 2, 3], table
        for key, (chunk, vector) in rows.items():
            assert chunk == bodies[key]
            expected = local[key] if table == "docs_local" else expectations[table](chunk)
            assert vector.shape == expected.shape, table
            np.testing.assert_allclose(vector, expected, atol=1e-5, err_msg=table)
        assert queue_count(conn, vectorizer_id) == 0
        assert error_rows(conn, vectorizer_id) == []

    assert [r.path for r in fake_ollama.requests][:3] == ["/api/show", "/api/pull", "/api/show"]
    [voyage_request] = fake_voyage.requests_to("/v1/embeddings")
    assert voyage_request.body["input_type"] == "document"
    assert voyage_request.body["model"] == "voyage-3-lite"
    [litellm_request] = fake_openai_server.embedded_requests
    assert litellm_request.model == "text-embedding-3-small"
    assert litellm_request.dimensions is None


def test_a_missing_key_fails_only_its_own_vectorizer(
    conn: psycopg.Connection,
    db_url: str,
    fake_ollama: FakeOllama,
    fake_voyage: FakeVoyage,
) -> None:
    create_source(conn, "keyless", ROWS)
    create_source(conn, "local_ok", ROWS)
    keyless = create_vectorizer(
        conn, "keyless", embedding=voyage_embedding(fake_voyage, "NO_SUCH_VOYAGE_KEY")
    )
    fine = create_vectorizer(conn, "local_ok", embedding=ollama_embedding(fake_ollama))

    result = run_worker(db_url, env=worker_env(None, api_key=None))

    assert result.returncode == 1, result.stderr  # once mode reports the error by its exit code
    assert sorted(stored(conn, "local_ok")) == [1, 2, 3]
    assert queue_count(conn, fine) == 0
    assert error_rows(conn, fine) == []
    assert store_rows(conn, "keyless_embedding_store") == []
    assert [row[:2] for row in queue_rows(conn, keyless)] == [(1, 0), (2, 0), (3, 0)]
    [(_, message, details)] = error_rows(conn, keyless)
    assert message == "embedding provider failed"
    assert details["provider"] == "voyageai"
    assert "api_key_name=NO_SUCH_VOYAGE_KEY" in details["error_reason"]
    assert "NO_SUCH_VOYAGE_KEY" in result.stderr
    assert fake_voyage.requests == []
