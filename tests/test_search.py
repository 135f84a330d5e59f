"""Search (vectorizer.search / asearch / `vectorizer search`): real Postgres, the real worker
as a subprocess where stores are filled by it, and the fake providers' real HTTP for the query
embedding."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

import vectorizer
from tests.fake_ollama import FakeOllama
from tests.fake_openai import FakeOpenAI, expected_vector
from tests.fake_voyage import TEST_API_KEY as VOYAGE_KEY
from tests.fake_voyage import FakeVoyage
from tests.worker_helpers import DIMS, MODEL, REPO_ROOT, run_ok, run_worker, worker_env
from vectorizer.config import LiteLLMEmbedding, OpenAIEmbedding, VoyageAIEmbedding
from vectorizer.search import SearchError, SearchHit, asearch, query_embedding_config, search

# hostile names: quotes, spaces, upper case
SCHEMA = 'Odd "Schema'
TABLE = "My Docs"
VIEW = "Doc's View"
NAME = "my_docs"

DOCS = [
    (1, "baking", "Sourdough", "keep the sourdough starter fed with flour and water"),
    (2, "ocean", "Coral", "warm water bleaches coral reefs"),
    (3, "money", "Funds", "index funds keep retirement savings cheap"),
    (4, "baking", "O'Reilly's bread", "an alpha loaf baked with gamma flour and beta"),
    (5, "cycling", "Traffic", "alpha beta"),
]


def _source(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(SCHEMA)))
    conn.execute(
        sql.SQL(
            'create table {} ("Doc Id" int primary key, topic text, title text, body text)'
        ).format(sql.Identifier(SCHEMA, TABLE))
    )
    with conn.cursor() as cursor:
        cursor.executemany(
            sql.SQL("insert into {} values (%s, %s, %s, %s)").format(sql.Identifier(SCHEMA, TABLE)),
            DOCS,
        )


def _vectorizer(conn: psycopg.Connection, embedding: str, vector_type: str = "vector") -> int:
    row = conn.execute(
        f"""
        select ai.create_vectorizer(
            {sql.quote(sql.Identifier(SCHEMA, TABLE).as_string(conn))}::regclass,
            name => '{NAME}',
            loading => ai.loading_column('body'),
            embedding => {embedding},
            chunking => ai.chunking_none(),
            formatting => ai.formatting_python_template('$chunk'),
            destination => ai.destination_table(target_table => 'Store "X"',
                                                view_name => {sql.quote(VIEW)},
                                                vector_type => '{vector_type}'))
        """
    ).fetchone()
    assert row is not None
    return int(row[0])


def _embedded_by_worker(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, vector_type: str = "vector"
) -> int:
    _source(conn)
    vid = _vectorizer(conn, f"ai.embedding_openai('{MODEL}', {DIMS})", vector_type)
    run_ok(db_url, env=worker_env(fake))
    return vid


def test_vector_search_ranks_the_exact_chunk_first(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid = _embedded_by_worker(conn, db_url, fake_openai)
    query = "warm water bleaches coral reefs"

    hits = search(db_url, NAME, query, k=3)

    assert [type(hit) for hit in hits] == [SearchHit] * 3
    assert hits[0].primary_key == {"Doc Id": 2}
    assert hits[0].chunk == query and hits[0].chunk_seq == 0
    assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert [hit.rank for hit in hits] == [1, 2, 3]
    # the rest in exact cosine order of the fake's vectors
    q = expected_vector(query, DIMS)
    expected = sorted(DOCS, key=lambda d: 1 - float(np.dot(q, expected_vector(d[3], DIMS))))
    assert [hit.primary_key["Doc Id"] for hit in hits] == [d[0] for d in expected[:3]]
    for hit in hits:
        text = next(d[3] for d in DOCS if d[0] == hit.primary_key["Doc Id"])
        cosine = float(np.dot(q, expected_vector(text, DIMS)))
        assert hit.distance == pytest.approx(1 - cosine, abs=1e-5)
        assert hit.row["title"] and "embedding" not in hit.row
    # by id, through a connection, and through the package-level name
    with psycopg.connect(db_url) as own:
        assert [h.primary_key for h in search(own, vid, query, k=3)] == [
            h.primary_key for h in hits
        ]
    assert vectorizer.search(db_url, str(vid), query, k=1)[0].primary_key == {"Doc Id": 2}
    # the query went through the fake's real HTTP endpoint
    assert query in [text for r in fake_openai.embedded_requests for text in r.inputs]


def test_filter_values_are_parameters(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    _embedded_by_worker(conn, db_url, fake_openai)
    query = "alpha beta"

    baking = search(db_url, NAME, query, k=5, filter="topic = %s", params=["baking"])
    named = search(db_url, NAME, query, k=5, filter="topic = %(t)s", params={"t": "baking"})
    quoted = search(db_url, NAME, query, filter="title = %s", params=["O'Reilly's bread"])
    # a value that would break out of a spliced string stays a value
    hostile = search(db_url, NAME, query, filter="title = %s", params=["x' or '1'='1"])

    assert sorted(h.primary_key["Doc Id"] for h in baking) == [1, 4]
    assert [h.primary_key for h in named] == [h.primary_key for h in baking]
    assert [h.primary_key["Doc Id"] for h in quoted] == [4]
    assert hostile == []


def test_filter_runs_read_only(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    _embedded_by_worker(conn, db_url, fake_openai)
    conn.execute("create sequence side_effect")

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        search(db_url, NAME, "alpha", filter="nextval('side_effect') > 0")

    assert conn.execute("select last_value, is_called from side_effect").fetchone() == (1, False)


def test_hybrid_fuses_full_text_and_vector_ranks(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid = _embedded_by_worker(conn, db_url, fake_openai)
    index = conn.execute("select ai.enable_hybrid_search(%s)", (NAME,)).fetchone()
    assert index == (f"_vectorizer_fts_{vid}",)
    definition = conn.execute(
        "select indexdef from pg_indexes where indexname = %s", (f"_vectorizer_fts_{vid}",)
    ).fetchone()
    assert definition is not None and "to_tsvector('english'::regconfig, chunk)" in definition[0]

    hits = search(db_url, NAME, "alpha beta", k=5, hybrid=True)

    by_id = {h.primary_key["Doc Id"]: h for h in hits}
    # doc 5 is the exact text: first in both rankings
    assert hits[0].primary_key == {"Doc Id": 5}
    assert (hits[0].vector_rank, hits[0].text_rank) == (1, 1)
    assert hits[0].score == pytest.approx(1 / 61 + 1 / 61)
    # doc 4 matches the words too; docs without them have no text rank
    assert by_id[4].text_rank == 2
    assert all(by_id[d].text_rank is None for d in (1, 2, 3) if d in by_id)
    for hit in hits:
        expected = sum(1 / (60 + r) for r in (hit.vector_rank, hit.text_rank) if r is not None)
        assert hit.score == pytest.approx(expected)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # weights: with the text ranking off, the order is the vector order
    vector_only = search(db_url, NAME, "alpha beta", k=5, hybrid=True, text_weight=0)
    plain = search(db_url, NAME, "alpha beta", k=5)
    assert [h.primary_key for h in vector_only] == [h.primary_key for h in plain]


def test_hybrid_filter_params_repeat_in_both_rankings(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    _embedded_by_worker(conn, db_url, fake_openai)
    conn.execute("select ai.enable_hybrid_search(%s, 'simple')", (NAME,))

    hits = search(db_url, NAME, "alpha beta", hybrid=True, filter="topic = %s", params=["cycling"])

    assert [h.primary_key["Doc Id"] for h in hits] == [5]


def test_halfvec_store_is_written_and_searched(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    _embedded_by_worker(conn, db_url, fake_openai, vector_type="halfvec")
    column_type = conn.execute(
        "select format_type(atttypid, atttypmod) from pg_attribute"
        " where attrelid = %s::regclass and attname = 'embedding'",
        (sql.Identifier(SCHEMA, 'Store "X"').as_string(conn),),
    ).fetchone()
    assert column_type == (f"halfvec({DIMS})",)

    hits = search(db_url, NAME, "index funds keep retirement savings cheap", k=2)

    assert hits[0].primary_key == {"Doc Id": 3}
    assert hits[0].distance == pytest.approx(0.0, abs=1e-3)  # half precision


def test_async_search(conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI) -> None:
    _embedded_by_worker(conn, db_url, fake_openai)

    async def run() -> list[SearchHit]:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:
            return await asearch(aconn, NAME, "keep the sourdough starter fed with flour and water")

    hits = asyncio.run(run())

    assert hits[0].primary_key == {"Doc Id": 1}


def test_voyage_embeds_the_query_as_a_query(
    conn: psycopg.Connection, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _source(conn)
    _vectorizer(conn, "ai.embedding_voyageai('voyage-3.5-lite', 1024, input_type => 'document')")
    with FakeVoyage() as fake:
        monkeypatch.setenv("VOYAGE_API_KEY", VOYAGE_KEY)
        monkeypatch.setenv("VOYAGE_BASE_URL", fake.base_url)
        run_ok(db_url, env=worker_env(VOYAGE_API_KEY=VOYAGE_KEY, VOYAGE_BASE_URL=fake.base_url))

        hits = search(db_url, NAME, "warm water bleaches coral reefs", k=1)

        bodies = [r.body for r in fake.requests_to("/v1/embeddings")]
    assert {b["input_type"] for b in bodies[:-1]} == {"document"}  # the worker's
    assert bodies[-1]["input_type"] == "query" and bodies[-1]["input"] == [
        "warm water bleaches coral reefs"
    ]
    assert hits[0].primary_key == {"Doc Id": 2}


def test_local_model_search(conn: psycopg.Connection, db_url: str) -> None:
    _source(conn)
    _vectorizer(
        conn,
        "ai.embedding_sentence_transformers('sentence-transformers/all-MiniLM-L6-v2', 384)",
    )
    run_ok(db_url, env=worker_env(HF_HUB_OFFLINE="1"))

    bread = search(db_url, NAME, "feeding my sourdough starter", k=1)
    reef = search(db_url, NAME, "what happens to reefs when the sea heats up", k=1)

    assert bread[0].primary_key == {"Doc Id": 1}
    assert reef[0].primary_key == {"Doc Id": 2}


def test_bad_requests_say_what_is_wrong(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    _embedded_by_worker(conn, db_url, fake_openai)
    conn.execute("create table flat (id int primary key, body text)")
    conn.execute(
        "select ai.create_vectorizer('flat'::regclass, name => 'flat',"
        f" loading => ai.loading_column('body'), embedding => ai.embedding_openai('{MODEL}', 8),"
        " chunking => ai.chunking_none(), destination => ai.destination_column('emb'))"
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"vectorizer": "nope'; drop table x; --"}, "no vectorizer with the name or id"),
        ({"query": "  "}, "the query text is empty"),
        ({"k": 0}, "k must be at least 1"),
        ({"filter": " "}, "filter is empty"),
        ({"params": [1]}, "params were given without a filter"),
        ({"vectorizer": "flat", "hybrid": True}, "hybrid search needs a table destination"),
    ]
    for change, message in cases:
        arguments: dict[str, Any] = {"vectorizer": NAME, "query": "alpha"} | change
        with pytest.raises(SearchError, match=message):
            search(db_url, **arguments)


def _search_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vectorizer", "search", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def test_search_command(conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI) -> None:
    _embedded_by_worker(conn, db_url, fake_openai)
    env = worker_env(fake_openai)

    as_json = _search_cli(env, "-d", db_url, NAME, "alpha beta", "-k", "2", "--json", "--hybrid")
    table = _search_cli(
        env, "-d", db_url, NAME, "warm water bleaches coral reefs",
        "--filter", "topic = %(t)s", "--param", "t=ocean",
    )  # fmt: skip
    bad = _search_cli(env, "-d", db_url, NAME, "x", "--param", "no-equals")

    assert as_json.returncode == 0, as_json.stderr
    hits = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(hits) == 2 and hits[0]["primary_key"] == {"Doc Id": 5}
    assert hits[0]["rank"] == 1 and hits[0]["chunk"] == "alpha beta"
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == [
        "  1  distance 0.0000  [Doc Id=2]  warm water bleaches coral reefs"
    ]
    assert bad.returncode == 2 and "use NAME=VALUE" in bad.stderr


def test_ollama_embeds_the_query(conn: psycopg.Connection, db_url: str) -> None:
    _source(conn)
    with FakeOllama() as fake:
        _vectorizer(conn, f"ai.embedding_ollama('all-minilm', 384, base_url => '{fake.host}')")
        run_ok(db_url, env=worker_env())

        hits = search(db_url, NAME, "index funds keep retirement savings cheap", k=1)

        last = fake.requests_to("/api/embed")[-1].body
    assert last["model"] == "all-minilm"
    assert last["input"] in (
        ["index funds keep retirement savings cheap"],
        "index funds keep retirement savings cheap",
    )
    assert hits[0].primary_key == {"Doc Id": 3}


def test_litellm_query_gets_the_query_input_type(
    conn: psycopg.Connection, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _source(conn)
    with FakeVoyage() as fake:
        options = json.dumps({"api_base": fake.base_url, "input_type": "document"})
        _vectorizer(
            conn,
            "ai.embedding_litellm('voyage/voyage-3-lite', 512, api_key_name => 'VOYAGE_API_KEY',"
            f" extra_options => {sql.quote(options)}::jsonb)",
        )
        monkeypatch.setenv("VOYAGE_API_KEY", VOYAGE_KEY)
        run_ok(db_url, env=worker_env(VOYAGE_API_KEY=VOYAGE_KEY))

        hits = search(db_url, NAME, "warm water bleaches coral reefs", k=1)

        bodies = [r.body for r in fake.requests_to("/v1/embeddings")]
    assert {b["input_type"] for b in bodies[:-1]} == {"document"}
    assert bodies[-1]["input_type"] == "query"
    assert hits[0].primary_key == {"Doc Id": 2}


def test_query_embedding_config_per_provider() -> None:
    voyage = VoyageAIEmbedding(
        implementation="voyageai", model="voyage-3", dimensions=8, input_type="document"
    )
    untyped = VoyageAIEmbedding(implementation="voyageai", model="voyage-3", dimensions=8)
    cohere = LiteLLMEmbedding(
        implementation="litellm",
        model="cohere/embed-english-v3.0",
        dimensions=8,
        extra_options={"input_type": "search_document", "truncate": "END"},
    )
    gemini = LiteLLMEmbedding(
        implementation="litellm",
        model="gemini/text-embedding-004",
        dimensions=8,
        extra_options={"task_type": "RETRIEVAL_DOCUMENT"},
    )
    openai = OpenAIEmbedding(implementation="openai", model="m", dimensions=8)

    assert query_embedding_config(voyage).input_type == "query"  # type: ignore[union-attr]
    assert query_embedding_config(untyped).input_type is None  # type: ignore[union-attr]
    assert query_embedding_config(cohere).extra_options == {  # type: ignore[union-attr]
        "input_type": "search_query",
        "truncate": "END",
    }
    assert query_embedding_config(gemini).extra_options == {  # type: ignore[union-attr]
        "task_type": "RETRIEVAL_QUERY"
    }
    assert query_embedding_config(openai) == openai
    assert cohere.extra_options["input_type"] == "search_document"  # the original is untouched


def test_a_role_granted_vectorizer_usage_can_search(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    _embedded_by_worker(conn, db_url, fake_openai)
    conn.execute("select ai.enable_hybrid_search(%s)", (NAME,))
    role = f"vz_searcher_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
    try:
        conn.execute("select ai.grant_vectorizer_usage(%s)", (role,))
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(
            sql.Identifier(SCHEMA), sql.Identifier(role)))  # fmt: skip
        conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(
            sql.Identifier(SCHEMA), sql.Identifier(role)))  # fmt: skip
        with psycopg.connect(db_url, autocommit=True) as searcher:
            searcher.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
            hits = search(searcher, NAME, "alpha beta", k=2, hybrid=True)
            status = searcher.execute(
                "select index_state from ai.vectorizer_status where name = %s", (NAME,)
            ).fetchone()
        assert hits[0].primary_key == {"Doc Id": 5}
        assert status == ("none",)
    finally:
        conn.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(role)))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_column_destination_search(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    conn.execute('create table flat ("Key" text primary key, body text)')
    conn.execute("insert into flat values ('a', 'first text'), ('b', 'second text'), ('c', null)")
    conn.execute(
        "select ai.create_vectorizer('flat'::regclass, name => 'flat',"
        f" loading => ai.loading_column('body'), embedding => ai.embedding_openai('{MODEL}', 8),"
        " chunking => ai.chunking_none(), destination => ai.destination_column('emb'))"
    )
    run_worker(db_url, env=worker_env(fake_openai))

    hits = search(db_url, "flat", "second text", k=5)

    assert [h.primary_key for h in hits] == [{"Key": "b"}, {"Key": "a"}]  # no vector, no hit
    assert hits[0].chunk == "second text" and hits[0].chunk_seq is None
    assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
