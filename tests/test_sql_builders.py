"""The configuration builders of the `ai` schema (vectorizer/sql/idempotent/010-builders.sql).

Each builder's jsonb is compared whole, with its defaults and with explicit arguments, so a
missing, extra or renamed key fails. Also: grant_to and its GUC, the GUC-driven default
resolvers and destination evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILDERS_SQL = REPO_ROOT / "vectorizer" / "sql" / "idempotent" / "010-builders.sql"


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def assert_raises(conn: psycopg.Connection, query: str, message: str) -> None:
    with pytest.raises(errors.RaiseException) as info:
        conn.execute(query)
    assert info.value.diag.message_primary == message


# --- every builder, whole jsonb --------------------------------------------------------------

DEFAULT_SEPARATORS = ["\n\n", "\n", ".", "?", "!", " ", ""]

BUILDER_CASES: list[tuple[str, dict[str, Any]]] = [
    # loading
    (
        "ai.loading_column('body')",
        {"implementation": "column", "config_type": "loading", "column_name": "body", "retries": 6},
    ),
    (
        "ai.loading_column('body', 10)",
        {
            "implementation": "column",
            "config_type": "loading",
            "column_name": "body",
            "retries": 10,
        },
    ),
    (
        # not strip-nulls: retries stays, as null
        "ai.loading_column('body', null)",
        {
            "implementation": "column",
            "config_type": "loading",
            "column_name": "body",
            "retries": None,
        },
    ),
    (
        "ai.loading_uri('url')",
        {"implementation": "uri", "config_type": "loading", "column_name": "url", "retries": 6},
    ),
    (
        "ai.loading_uri('url', 2, 'arn:aws:iam::123:role/reader')",
        {
            "implementation": "uri",
            "config_type": "loading",
            "column_name": "url",
            "retries": 2,
            "aws_role_arn": "arn:aws:iam::123:role/reader",
        },
    ),
    (
        "ai.loading_uri('url', retries => null)",
        {"implementation": "uri", "config_type": "loading", "column_name": "url"},
    ),
    # parsing
    ("ai.parsing_auto()", {"implementation": "auto", "config_type": "parsing"}),
    ("ai.parsing_none()", {"implementation": "none", "config_type": "parsing"}),
    ("ai.parsing_pymupdf()", {"implementation": "pymupdf", "config_type": "parsing"}),
    ("ai.parsing_docling()", {"implementation": "docling", "config_type": "parsing"}),
    # chunking
    ("ai.chunking_none()", {"implementation": "none", "config_type": "chunking"}),
    (
        "ai.chunking_character_text_splitter()",
        {
            "implementation": "character_text_splitter",
            "config_type": "chunking",
            "chunk_size": 800,
            "chunk_overlap": 400,
            "separator": "\n\n",
            "is_separator_regex": False,
        },
    ),
    (
        "ai.chunking_character_text_splitter(128, 10, E';\\\\s*', true)",
        {
            "implementation": "character_text_splitter",
            "config_type": "chunking",
            "chunk_size": 128,
            "chunk_overlap": 10,
            "separator": ";\\s*",
            "is_separator_regex": True,
        },
    ),
    (
        "ai.chunking_character_text_splitter(separator => null)",
        {
            "implementation": "character_text_splitter",
            "config_type": "chunking",
            "chunk_size": 800,
            "chunk_overlap": 400,
            "is_separator_regex": False,
        },
    ),
    (
        "ai.chunking_recursive_character_text_splitter()",
        {
            "implementation": "recursive_character_text_splitter",
            "config_type": "chunking",
            "chunk_size": 800,
            "chunk_overlap": 400,
            "separators": DEFAULT_SEPARATORS,
            "is_separator_regex": False,
        },
    ),
    (
        "ai.chunking_recursive_character_text_splitter"
        "(chunk_size => 50, chunk_overlap => 5, separators => array['|', ' '],"
        " is_separator_regex => true)",
        {
            "implementation": "recursive_character_text_splitter",
            "config_type": "chunking",
            "chunk_size": 50,
            "chunk_overlap": 5,
            "separators": ["|", " "],
            "is_separator_regex": True,
        },
    ),
    # formatting
    (
        "ai.formatting_python_template()",
        {"implementation": "python_template", "config_type": "formatting", "template": "$chunk"},
    ),
    (
        "ai.formatting_python_template('title: $title $chunk')",
        {
            "implementation": "python_template",
            "config_type": "formatting",
            "template": "title: $title $chunk",
        },
    ),
    (
        "ai.formatting_chunk_value()",
        {"implementation": "chunk_value", "config_type": "formatting"},
    ),
    # embedding
    (
        "ai.embedding_openai('text-embedding-3-small', 768)",
        {
            "implementation": "openai",
            "config_type": "embedding",
            "model": "text-embedding-3-small",
            "dimensions": 768,
            "api_key_name": "OPENAI_API_KEY",
        },
    ),
    (
        "ai.embedding_openai('m', 3, chat_user => 'bob', api_key_name => 'K',"
        " base_url => 'http://localhost:1/v1')",
        {
            "implementation": "openai",
            "config_type": "embedding",
            "model": "m",
            "dimensions": 3,
            "user": "bob",
            "api_key_name": "K",
            "base_url": "http://localhost:1/v1",
        },
    ),
    (
        "ai.embedding_openai('m', 3, api_key_name => null)",
        {"implementation": "openai", "config_type": "embedding", "model": "m", "dimensions": 3},
    ),
    (
        "ai.embedding_ollama('nomic-embed-text', 768)",
        {
            "implementation": "ollama",
            "config_type": "embedding",
            "model": "nomic-embed-text",
            "dimensions": 768,
        },
    ),
    (
        "ai.embedding_ollama('m', 4, 'http://ollama:11434', '{\"num_ctx\": 1024}', '5m')",
        {
            "implementation": "ollama",
            "config_type": "embedding",
            "model": "m",
            "dimensions": 4,
            "base_url": "http://ollama:11434",
            "options": {"num_ctx": 1024},
            "keep_alive": "5m",
        },
    ),
    (
        "ai.embedding_voyageai('voyage-3', 1024)",
        {
            "implementation": "voyageai",
            "config_type": "embedding",
            "model": "voyage-3",
            "dimensions": 1024,
            "input_type": "document",
            "api_key_name": "VOYAGE_API_KEY",
        },
    ),
    (
        "ai.embedding_voyageai('voyage-3', 256, 'query', 'VK', 256, 'int8', 'http://v:1/v1')",
        {
            "implementation": "voyageai",
            "config_type": "embedding",
            "model": "voyage-3",
            "dimensions": 256,
            "input_type": "query",
            "api_key_name": "VK",
            "output_dimension": 256,
            "output_dtype": "int8",
            "base_url": "http://v:1/v1",
        },
    ),
    (
        "ai.embedding_voyageai('voyage-3', 8, input_type => null, output_dtype => 'uint8')",
        {
            "implementation": "voyageai",
            "config_type": "embedding",
            "model": "voyage-3",
            "dimensions": 8,
            "api_key_name": "VOYAGE_API_KEY",
            "output_dtype": "uint8",
        },
    ),
    (
        "ai.embedding_voyageai('voyage-3', 8, output_dtype => 'float')",
        {
            "implementation": "voyageai",
            "config_type": "embedding",
            "model": "voyage-3",
            "dimensions": 8,
            "input_type": "document",
            "api_key_name": "VOYAGE_API_KEY",
            "output_dtype": "float",
        },
    ),
    (
        "ai.embedding_litellm('cohere/embed-english-v3.0', 1024)",
        {
            "implementation": "litellm",
            "config_type": "embedding",
            "model": "cohere/embed-english-v3.0",
            "dimensions": 1024,
        },
    ),
    (
        "ai.embedding_litellm('m', 2, 'COHERE_API_KEY', '{\"timeout\": 3}')",
        {
            "implementation": "litellm",
            "config_type": "embedding",
            "model": "m",
            "dimensions": 2,
            "api_key_name": "COHERE_API_KEY",
            "extra_options": {"timeout": 3},
        },
    ),
    (
        "ai.embedding_sentence_transformers('all-MiniLM-L6-v2', 384)",
        {
            "implementation": "sentence_transformers",
            "config_type": "embedding",
            "model": "all-MiniLM-L6-v2",
            "dimensions": 384,
            "batch_size": 32,
            "normalize": True,
        },
    ),
    (
        "ai.embedding_sentence_transformers('m', 8, 'cpu', 4, false)",
        {
            "implementation": "sentence_transformers",
            "config_type": "embedding",
            "model": "m",
            "dimensions": 8,
            "device": "cpu",
            "batch_size": 4,
            "normalize": False,
        },
    ),
    (
        "ai.embedding_sentence_transformers('m', 8, batch_size => null, \"normalize\" => null)",
        {
            "implementation": "sentence_transformers",
            "config_type": "embedding",
            "model": "m",
            "dimensions": 8,
        },
    ),
    # indexing
    ("ai.indexing_default()", {"implementation": "default", "config_type": "indexing"}),
    ("ai.indexing_none()", {"implementation": "none", "config_type": "indexing"}),
    (
        "ai.indexing_diskann()",
        {
            "implementation": "diskann",
            "config_type": "indexing",
            "min_rows": 100000,
            "create_when_queue_empty": True,
        },
    ),
    (
        "ai.indexing_diskann(10, 'plain', 50, 100, 1.2, 768, 2, false)",
        {
            "implementation": "diskann",
            "config_type": "indexing",
            "min_rows": 10,
            "storage_layout": "plain",
            "num_neighbors": 50,
            "search_list_size": 100,
            "max_alpha": 1.2,
            "num_dimensions": 768,
            "num_bits_per_dimension": 2,
            "create_when_queue_empty": False,
        },
    ),
    (
        "ai.indexing_hnsw()",
        {
            "implementation": "hnsw",
            "config_type": "indexing",
            "min_rows": 100000,
            "opclass": "vector_cosine_ops",
            "create_when_queue_empty": True,
        },
    ),
    (
        "ai.indexing_hnsw(5, 'vector_l2_ops', 16, 64, false)",
        {
            "implementation": "hnsw",
            "config_type": "indexing",
            "min_rows": 5,
            "opclass": "vector_l2_ops",
            "m": 16,
            "ef_construction": 64,
            "create_when_queue_empty": False,
        },
    ),
    # builders do not validate: bad values come back and are rejected at create time
    (
        "ai.indexing_hnsw(opclass => 'bogus_ops')",
        {
            "implementation": "hnsw",
            "config_type": "indexing",
            "min_rows": 100000,
            "opclass": "bogus_ops",
            "create_when_queue_empty": True,
        },
    ),
    (
        "ai.indexing_diskann(storage_layout => 'bogus')",
        {
            "implementation": "diskann",
            "config_type": "indexing",
            "min_rows": 100000,
            "storage_layout": "bogus",
            "create_when_queue_empty": True,
        },
    ),
    # scheduling
    ("ai.scheduling_default()", {"implementation": "default", "config_type": "scheduling"}),
    ("ai.scheduling_none()", {"implementation": "none", "config_type": "scheduling"}),
    (
        "ai.scheduling_timescaledb()",
        {
            "implementation": "timescaledb",
            "config_type": "scheduling",
            "schedule_interval": "00:05:00",
        },
    ),
    (
        "ai.scheduling_timescaledb(interval '1 hour 30 minutes',"
        " '2050-01-06 00:00:00+00', true, 'America/Chicago')",
        {
            "implementation": "timescaledb",
            "config_type": "scheduling",
            "schedule_interval": "01:30:00",
            "initial_start": "2050-01-06T00:00:00+00:00",
            "fixed_schedule": True,
            "timezone": "America/Chicago",
        },
    ),
    # processing
    ("ai.processing_default()", {"implementation": "default", "config_type": "processing"}),
    (
        "ai.processing_default(batch_size => 64, concurrency => 50)",
        {
            "implementation": "default",
            "config_type": "processing",
            "batch_size": 64,
            "concurrency": 50,
        },
    ),
    (
        "ai.processing_default(concurrency => 3)",
        {"implementation": "default", "config_type": "processing", "concurrency": 3},
    ),
    # destination
    ("ai.destination_table()", {"implementation": "table", "config_type": "destination"}),
    (
        "ai.destination_table('docs')",
        {"implementation": "table", "config_type": "destination", "destination": "docs"},
    ),
    (
        "ai.destination_table(target_schema => 'emb', target_table => 'tt',"
        " view_schema => 'vs', view_name => 'vv')",
        {
            "implementation": "table",
            "config_type": "destination",
            "target_schema": "emb",
            "target_table": "tt",
            "view_schema": "vs",
            "view_name": "vv",
        },
    ),
    (
        "ai.destination_table('d', 's', 't', 'v', 'n')",
        {
            "implementation": "table",
            "config_type": "destination",
            "destination": "d",
            "target_schema": "s",
            "target_table": "t",
            "view_schema": "v",
            "view_name": "n",
        },
    ),
    (
        "ai.destination_column('embedding')",
        {"implementation": "column", "config_type": "destination", "embedding_column": "embedding"},
    ),
]


@pytest.mark.parametrize(("call", "expected"), BUILDER_CASES, ids=[c for c, _ in BUILDER_CASES])
def test_builder_jsonb(conn: psycopg.Connection, call: str, expected: dict[str, Any]) -> None:
    conn.execute("set timezone = 'UTC'")
    assert one(conn, f"select {call}") == expected


def test_builders_return_jsonb(conn: psycopg.Connection) -> None:
    names = {call.split("(")[0] for call, _ in BUILDER_CASES}
    rows = conn.execute(
        """
        select p.proname, pg_catalog.format_type(p.prorettype, null)
        from pg_catalog.pg_proc p
        where p.pronamespace = 'ai'::regnamespace
        and p.proname = any(%s)
        """,
        [[n.removeprefix("ai.") for n in names]],
    ).fetchall()
    assert len(rows) == len(names)
    assert {rettype for _, rettype in rows} == {"jsonb"}


def test_builder_key_order_as_built(conn: psycopg.Connection) -> None:
    # jsonb sorts keys itself; the json text the builders start from follows pgai's order
    body = one(
        conn,
        "select pg_catalog.pg_get_functiondef('ai.embedding_openai(text,int4,text,text,text)'"
        "::regprocedure)",
    )
    keys = ["'implementation'", "'config_type'", "'model'", "'dimensions'", "'user'"]
    positions = [body.index(k) for k in keys]
    assert positions == sorted(positions)


# --- signatures (pgai compatibility: names, types, defaults) ---------------------------------

SIGNATURES = {
    "ai.loading_column(name,int4)": "column_name name, retries integer DEFAULT 6",
    "ai.loading_uri(name,int4,text)": (
        "column_name name, retries integer DEFAULT 6, aws_role_arn text DEFAULT NULL::text"
    ),
    "ai.chunking_character_text_splitter(int4,int4,text,bool)": (
        "chunk_size integer DEFAULT 800, chunk_overlap integer DEFAULT 400,"
        " separator text DEFAULT '\n\n'::text, is_separator_regex boolean DEFAULT false"
    ),
    "ai.chunking_recursive_character_text_splitter(int4,int4,text[],bool)": (
        "chunk_size integer DEFAULT 800, chunk_overlap integer DEFAULT 400,"
        " separators text[] DEFAULT ARRAY['\n\n'::text, '\n'::text, '.'::text, '?'::text,"
        " '!'::text, ' '::text, ''::text], is_separator_regex boolean DEFAULT false"
    ),
    "ai.formatting_python_template(text)": "template text DEFAULT '$chunk'::text",
    "ai.embedding_openai(text,int4,text,text,text)": (
        "model text, dimensions integer, chat_user text DEFAULT NULL::text,"
        " api_key_name text DEFAULT 'OPENAI_API_KEY'::text, base_url text DEFAULT NULL::text"
    ),
    "ai.embedding_ollama(text,int4,text,jsonb,text)": (
        "model text, dimensions integer, base_url text DEFAULT NULL::text,"
        " options jsonb DEFAULT NULL::jsonb, keep_alive text DEFAULT NULL::text"
    ),
    "ai.embedding_voyageai(text,int4,text,text,int4,text,text)": (
        "model text, dimensions integer, input_type text DEFAULT 'document'::text,"
        " api_key_name text DEFAULT 'VOYAGE_API_KEY'::text,"
        " output_dimension integer DEFAULT NULL::integer, output_dtype text DEFAULT NULL::text,"
        " base_url text DEFAULT NULL::text"
    ),
    "ai.embedding_litellm(text,int4,text,jsonb)": (
        "model text, dimensions integer, api_key_name text DEFAULT NULL::text,"
        " extra_options jsonb DEFAULT NULL::jsonb"
    ),
    "ai.embedding_sentence_transformers(text,int4,text,int4,bool)": (
        "model text, dimensions integer, device text DEFAULT NULL::text,"
        ' batch_size integer DEFAULT 32, "normalize" boolean DEFAULT true'
    ),
    "ai.indexing_diskann(int4,text,int4,int4,float8,int4,int4,bool)": (
        "min_rows integer DEFAULT 100000, storage_layout text DEFAULT NULL::text,"
        " num_neighbors integer DEFAULT NULL::integer,"
        " search_list_size integer DEFAULT NULL::integer,"
        " max_alpha double precision DEFAULT NULL::double precision,"
        " num_dimensions integer DEFAULT NULL::integer,"
        " num_bits_per_dimension integer DEFAULT NULL::integer,"
        " create_when_queue_empty boolean DEFAULT true"
    ),
    "ai.indexing_hnsw(int4,text,int4,int4,bool)": (
        "min_rows integer DEFAULT 100000, opclass text DEFAULT 'vector_cosine_ops'::text,"
        " m integer DEFAULT NULL::integer, ef_construction integer DEFAULT NULL::integer,"
        " create_when_queue_empty boolean DEFAULT true"
    ),
    "ai.scheduling_timescaledb(interval,timestamptz,bool,text)": (
        "schedule_interval interval DEFAULT '00:05:00'::interval,"
        " initial_start timestamp with time zone DEFAULT NULL::timestamp with time zone,"
        " fixed_schedule boolean DEFAULT NULL::boolean, timezone text DEFAULT NULL::text"
    ),
    "ai.processing_default(int4,int4)": (
        "batch_size integer DEFAULT NULL::integer, concurrency integer DEFAULT NULL::integer"
    ),
    # pgai's five arguments plus ours, vector_type
    "ai.destination_table(name,name,name,name,name,text)": (
        "destination name DEFAULT NULL::name, target_schema name DEFAULT NULL::name,"
        " target_table name DEFAULT NULL::name, view_schema name DEFAULT NULL::name,"
        " view_name name DEFAULT NULL::name, vector_type text DEFAULT NULL::text"
    ),
    "ai.destination_column(name,text)": (
        "embedding_column name, aggregate text DEFAULT NULL::text"
    ),
    "ai.chunking_recursive_token_splitter(int4,int4,text[],text)": (
        "chunk_tokens integer DEFAULT 512, overlap_tokens integer DEFAULT 64,"
        " separators text[] DEFAULT ARRAY['\n\n'::text, '\n'::text, '.'::text, '?'::text,"
        " '!'::text, ' '::text, ''::text], tokenizer text DEFAULT NULL::text"
    ),
    "ai.chunking_markdown(int4,int4,int4,text)": (
        "chunk_tokens integer DEFAULT 512, overlap_tokens integer DEFAULT 64,"
        " heading_levels integer DEFAULT 3, tokenizer text DEFAULT NULL::text"
    ),
    "ai.grant_to(name[])": "VARIADIC grantees name[]",
    "ai._evaluate_destination(jsonb,name,name)": (
        "destination jsonb, source_schema name, source_table name"
    ),
}


@pytest.mark.parametrize(("proc", "arguments"), SIGNATURES.items(), ids=list(SIGNATURES))
def test_signature(conn: psycopg.Connection, proc: str, arguments: str) -> None:
    actual = one(conn, "select pg_catalog.pg_get_function_arguments(%s::regprocedure)", [proc])
    assert actual == arguments


def test_every_function_is_invoker_with_pinned_search_path(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        """
        select p.oid::regprocedure::text, p.prosecdef, p.proconfig, p.provolatile
        from pg_catalog.pg_proc p
        where p.pronamespace = 'ai'::regnamespace
        and (p.proname like any (array[
            'loading\\_%', 'parsing\\_%', 'chunking\\_%', 'formatting\\_%',
            'embedding\\_%', 'indexing\\_%', 'scheduling\\_%', 'processing\\_%',
            'destination\\_%'])
            or p.proname in ('grant_to', '_evaluate_destination',
                             '_resolve_indexing_default', '_resolve_scheduling_default'))
        """
    ).fetchall()
    assert len(rows) >= 30
    for proc, secdef, config, volatility in rows:
        assert secdef is False, proc
        assert config == ["search_path=pg_catalog, pg_temp"], proc
        reads_settings = proc.startswith(("ai.grant_to", "ai._"))
        assert volatility == ("s" if reads_settings else "i"), proc


def test_pgai_voyageai_signature_is_replaced(conn: psycopg.Connection) -> None:
    # a database where pgai 0.12 was installed has the four-argument builder
    conn.execute(
        """
        create function ai.embedding_voyageai
        (model text, dimensions int4, input_type text default 'document',
         api_key_name text default 'VOYAGE_API_KEY')
        returns jsonb as $$ select '{}'::jsonb $$ language sql immutable
        """
    )
    vector_schema = one(
        conn,
        "select n.nspname from pg_catalog.pg_extension e"
        " join pg_catalog.pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector'",
    )
    script = BUILDERS_SQL.read_text().replace("@extschema:vector@", vector_schema)
    with conn.transaction():
        conn.execute(script)
    overloads = one(
        conn,
        "select count(*) from pg_catalog.pg_proc"
        " where pronamespace = 'ai'::regnamespace and proname = 'embedding_voyageai'",
    )
    assert overloads == 1
    assert one(conn, "select ai.embedding_voyageai('voyage-3', 8)->>'input_type'") == "document"


# --- voyageai argument checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "ai.embedding_voyageai('m', 8, input_type => 'search')",
            'invalid input_type for voyage ai "search"',
        ),
        (
            "ai.embedding_voyageai('m', 8, output_dtype => 'binary')",
            'invalid output_dtype for voyage ai "binary": binary and ubinary embeddings cannot'
            " be stored in a vector column; use float, int8 or uint8",
        ),
        (
            "ai.embedding_voyageai('m', 8, output_dtype => 'ubinary')",
            'invalid output_dtype for voyage ai "ubinary": binary and ubinary embeddings cannot'
            " be stored in a vector column; use float, int8 or uint8",
        ),
        (
            "ai.embedding_voyageai('m', 8, output_dtype => 'float16')",
            'invalid output_dtype for voyage ai "float16": use float, int8 or uint8',
        ),
        (
            "ai.embedding_voyageai('m', 8, output_dimension => 16)",
            "invalid output_dimension for voyage ai 16: it must equal dimensions (8) because"
            " the embeddings are stored in a vector(8) column",
        ),
    ],
)
def test_voyageai_rejects(conn: psycopg.Connection, call: str, message: str) -> None:
    assert_raises(conn, f"select {call}", message)


def test_voyageai_accepts_matching_output_dimension(conn: psycopg.Connection) -> None:
    config = one(conn, "select ai.embedding_voyageai('m', 512, output_dimension => 512)")
    assert config["output_dimension"] == 512
    assert config["dimensions"] == 512


# --- grant_to --------------------------------------------------------------------------------


def test_grant_to_without_anything_is_empty(conn: psycopg.Connection) -> None:
    assert one(conn, "select ai.grant_to()") == []
    assert one(conn, "select ai.grant_to(variadic array[]::name[])") == []


def test_grant_to_arguments_deduplicated_in_order(conn: psycopg.Connection) -> None:
    assert one(conn, "select ai.grant_to('bob', 'alice', 'bob')") == ["bob", "alice"]
    assert one(conn, "select ai.grant_to('Mixed Case', 'select')") == ["Mixed Case", "select"]


def test_grant_to_adds_the_default_guc(conn: psycopg.Connection) -> None:
    conn.execute("set ai.grant_to_default = ' reader ,  writer,,alice '")
    assert one(conn, "select ai.grant_to()") == ["reader", "writer", "alice"]
    assert one(conn, "select ai.grant_to('alice', 'bob')") == ["alice", "bob", "reader", "writer"]


def test_grant_to_with_empty_guc(conn: psycopg.Connection) -> None:
    conn.execute("set ai.grant_to_default = ''")
    assert one(conn, "select ai.grant_to()") == []
    assert one(conn, "select ai.grant_to('bob')") == ["bob"]


def test_grant_to_returns_name_array(conn: psycopg.Connection) -> None:
    assert one(conn, "select pg_typeof(ai.grant_to('x'))::text") == "name[]"


# --- default resolvers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        # unlike pgai (none): unset means an HNSW index, built by the worker
        (
            None,
            {
                "implementation": "hnsw",
                "config_type": "indexing",
                "min_rows": 100000,
                "opclass": "vector_cosine_ops",
                "create_when_queue_empty": True,
            },
        ),
        (
            "",
            {
                "implementation": "hnsw",
                "config_type": "indexing",
                "min_rows": 100000,
                "opclass": "vector_cosine_ops",
                "create_when_queue_empty": True,
            },
        ),
        ("indexing_none", {"implementation": "none", "config_type": "indexing"}),
        (
            "something_else",
            {
                "implementation": "hnsw",
                "config_type": "indexing",
                "min_rows": 100000,
                "opclass": "vector_cosine_ops",
                "create_when_queue_empty": True,
            },
        ),
        (
            "indexing_diskann",
            {
                "implementation": "diskann",
                "config_type": "indexing",
                "min_rows": 100000,
                "create_when_queue_empty": True,
            },
        ),
        (
            "indexing_hnsw",
            {
                "implementation": "hnsw",
                "config_type": "indexing",
                "min_rows": 100000,
                "opclass": "vector_cosine_ops",
                "create_when_queue_empty": True,
            },
        ),
    ],
)
def test_resolve_indexing_default(
    conn: psycopg.Connection, setting: str | None, expected: dict[str, Any]
) -> None:
    if setting is not None:
        conn.execute("select pg_catalog.set_config('ai.indexing_default', %s, false)", [setting])
    assert one(conn, "select ai._resolve_indexing_default()") == expected


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, {"implementation": "none", "config_type": "scheduling"}),
        ("scheduling_none", {"implementation": "none", "config_type": "scheduling"}),
        ("cron", {"implementation": "none", "config_type": "scheduling"}),
        (
            "scheduling_timescaledb",
            {
                "implementation": "timescaledb",
                "config_type": "scheduling",
                "schedule_interval": "00:05:00",
            },
        ),
    ],
)
def test_resolve_scheduling_default(
    conn: psycopg.Connection, setting: str | None, expected: dict[str, Any]
) -> None:
    if setting is not None:
        conn.execute("select pg_catalog.set_config('ai.scheduling_default', %s, false)", [setting])
    assert one(conn, "select ai._resolve_scheduling_default()") == expected


# --- _evaluate_destination -------------------------------------------------------------------


def table_dest(target_schema: str, target_table: str, view_schema: str, view_name: str) -> dict:
    return {
        "implementation": "table",
        "config_type": "destination",
        "target_schema": target_schema,
        "target_table": target_table,
        "view_schema": view_schema,
        "view_name": view_name,
    }


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        (
            "ai.destination_table()",
            table_dest("website", "blog_embedding_store", "website", "blog_embedding"),
        ),
        (
            "ai.destination_table('blog_vec')",
            table_dest("website", "blog_vec_store", "website", "blog_vec"),
        ),
        (
            "ai.destination_table('blog_vec', target_table => 'chunks')",
            table_dest("website", "chunks", "website", "blog_vec"),
        ),
        (
            "ai.destination_table('blog_vec', view_name => 'v')",
            table_dest("website", "blog_vec_store", "website", "v"),
        ),
        (
            "ai.destination_table(target_schema => 'emb')",
            table_dest("emb", "blog_embedding_store", "website", "blog_embedding"),
        ),
        (
            # view_schema is honoured (pgai 0.12 ignored it)
            "ai.destination_table(view_schema => 'api')",
            table_dest("website", "blog_embedding_store", "api", "blog_embedding"),
        ),
        (
            "ai.destination_table(target_schema => 'emb', target_table => 'tt',"
            " view_schema => 'api', view_name => 'vv')",
            table_dest("emb", "tt", "api", "vv"),
        ),
        (
            '\'{"implementation": "table", "config_type": "destination"}\'::jsonb',
            table_dest("website", "blog_embedding_store", "website", "blog_embedding"),
        ),
        (
            "ai.destination_column('body_vec')",
            {
                "implementation": "column",
                "config_type": "destination",
                "embedding_column": "body_vec",
            },
        ),
    ],
)
def test_evaluate_destination(
    conn: psycopg.Connection, destination: str, expected: dict[str, Any]
) -> None:
    actual = one(conn, f"select ai._evaluate_destination({destination}, 'website', 'blog')")
    assert actual == expected


def test_evaluate_destination_keeps_hostile_names_verbatim(conn: psycopg.Connection) -> None:
    actual = one(
        conn,
        "select ai._evaluate_destination(ai.destination_table(), %s, %s)",
        ["Odd Schema", 'My "Table"'],
    )
    assert actual == table_dest(
        "Odd Schema", 'My "Table"_embedding_store', "Odd Schema", 'My "Table"_embedding'
    )


def test_evaluate_destination_rejects_unknown_implementation(conn: psycopg.Connection) -> None:
    assert_raises(
        conn,
        "select ai._evaluate_destination("
        '\'{"implementation": "s3", "config_type": "destination"}\', \'public\', \'blog\')',
        "invalid implementation for destination config",
    )
    assert_raises(
        conn,
        "select ai._evaluate_destination('{}', 'public', 'blog')",
        "invalid implementation for destination config",
    )
