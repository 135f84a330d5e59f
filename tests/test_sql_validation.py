"""The `ai._validate_*` functions (vectorizer/sql/idempotent/020-validators.sql).

Every message of the pgai 0.12 catalogue is raised by the input that should raise it, with the
exact text, plus the checks this project adds. Validators that look up source columns are run
against hostile identifiers (quotes, spaces, capitals, reserved words).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

CHAR_TYPES_MESSAGE = (
    "column_name {col} in config is of invalid type {typ}."
    " Supported types are: text, varchar, char, bpchar, bytea"
)
URI_BYTEA_MESSAGE = (
    "the type of the column `{col}` in config is not compatible with `uri` loading"
    " implementation (type should be either text, varchar, char, bpchar, or bytea)"
)


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def assert_raises(
    conn: psycopg.Connection,
    query: str,
    message: str,
    params: Any = None,
    error: type[psycopg.Error] = errors.RaiseException,
) -> None:
    with pytest.raises(error) as info:
        conn.execute(query, params)
    assert info.value.diag.message_primary == message


def assert_ok(conn: psycopg.Connection, query: str, params: Any = None) -> None:
    # the validators return void: one row back means they ran to the end and raised nothing
    assert len(conn.execute(query, params).fetchall()) == 1


@pytest.fixture
def thing(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute(
        """
        create domain public.short_text as varchar(20);
        create table public.thing
        ( id int primary key
        , color text
        , weight float8
        , body text
        , title varchar(50)
        , code char(3)
        , document bytea
        , nick public.short_text
        , tags text[]
        , dropped text
        );
        alter table public.thing drop column dropped;
        """
    )
    return conn


@pytest.fixture
def hostile(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute(
        """
        create schema "Odd Schema";
        create table "Odd Schema"."select"
        ( "Id" int primary key
        , "Body Text" text
        , "we""ird" bytea
        , "Weight" float8
        );
        create table "Odd Schema"."My Table" (id int primary key, "chunk" text);
        """
    )
    return conn


# --- loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        "ai.loading_column('body')",
        "ai.loading_column('title')",
        "ai.loading_column('code')",
        "ai.loading_column('document')",
        "ai.loading_column('nick')",  # a domain over varchar counts as varchar
        "ai.loading_column('body', 0)",
        "ai.loading_uri('body')",
        "ai.loading_uri('title', aws_role_arn => 'arn:aws:iam::123456789012:role/reader')",
        # hand-written configs: retries as a string of digits, extra keys
        """'{"implementation":"column","config_type":"loading","column_name":"body",
            "retries":"3","note":"x"}'""",
    ],
)
def test_validate_loading_ok(thing: psycopg.Connection, config: str) -> None:
    assert_ok(thing, f"select ai._validate_loading({config}, 'public', 'thing')")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("'[]'::jsonb", "loading config is not a jsonb object"),
        ("'\"column\"'::jsonb", "loading config is not a jsonb object"),
        ("null::jsonb", "loading config is not a jsonb object"),
        ("ai.scheduling_none()", "invalid config_type for loading config"),
        (
            """'{"implementation":"column","column_name":"body","retries":6}'""",
            "invalid config_type for loading config",
        ),
        (
            """'{"config_type":"loading","column_name":"body","retries":6}'""",
            "invalid loading config implementation",
        ),
        (
            """'{"config_type":"loading","implementation":"s3","column_name":"body"}'""",
            "invalid loading config implementation",
        ),
        (
            """'{"config_type":"loading","implementation":"column","retries":6}'""",
            "invalid loading config, missing column_name",
        ),
        (
            "ai.loading_column('body', -1)",
            "invalid loading config, retries must be a non-negative integer",
        ),
        (
            "ai.loading_column('body', null)",
            "invalid loading config, retries must be a non-negative integer",
        ),
        (
            """'{"config_type":"loading","implementation":"uri","column_name":"body"}'""",
            "invalid loading config, retries must be a non-negative integer",
        ),
        (
            """'{"config_type":"loading","implementation":"column","column_name":"body",
                "retries":"many"}'""",
            "invalid loading config, retries must be a non-negative integer",
        ),
        (
            """'{"config_type":"loading","implementation":"column","column_name":"body",
                "retries":2.5}'""",
            "invalid loading config, retries must be a non-negative integer",
        ),
        (
            "ai.loading_uri('body', aws_role_arn => 'foo_bar')",
            "invalid loading config, aws_role_arn must match arn:aws:iam::*:role/*",
        ),
        (
            "ai.loading_column('nope')",
            "column_name in config does not exist in the table: nope",
        ),
        (
            "ai.loading_uri('nope')",
            "column_name in config does not exist in the table: nope",
        ),
        (
            # a dropped column does not exist any more
            "ai.loading_column('........pg.dropped.10........')",
            "column_name in config does not exist in the table: ........pg.dropped.10........",
        ),
        ("ai.loading_column('weight')", CHAR_TYPES_MESSAGE.format(col="weight", typ="float8")),
        ("ai.loading_uri('weight')", CHAR_TYPES_MESSAGE.format(col="weight", typ="float8")),
        ("ai.loading_column('id')", CHAR_TYPES_MESSAGE.format(col="id", typ="int4")),
        ("ai.loading_column('tags')", CHAR_TYPES_MESSAGE.format(col="tags", typ="_text")),
        ("ai.loading_uri('document')", URI_BYTEA_MESSAGE.format(col="document")),
    ],
)
def test_validate_loading_rejects(thing: psycopg.Connection, config: str, message: str) -> None:
    assert_raises(thing, f"select ai._validate_loading({config}, 'public', 'thing')", message)


def test_validate_loading_checks_in_pgai_order(thing: psycopg.Connection) -> None:
    # everything is wrong: the config_type is reported first, then the implementation ...
    assert_raises(
        thing,
        """select ai._validate_loading('{"implementation":"x","retries":-1}', 'public', 'thing')""",
        "invalid config_type for loading config",
    )
    assert_raises(
        thing,
        """select ai._validate_loading
           ('{"config_type":"loading","implementation":"x","retries":-1}', 'public', 'thing')""",
        "invalid loading config implementation",
    )
    # ... and the config itself before the table
    assert_raises(
        thing,
        "select ai._validate_loading(ai.loading_column('nope', -1), 'public', 'thing')",
        "invalid loading config, retries must be a non-negative integer",
    )


def test_validate_loading_unknown_table(conn: psycopg.Connection) -> None:
    assert_raises(
        conn,
        "select ai._validate_loading(ai.loading_column('body'), 'public', 'missing')",
        "column_name in config does not exist in the table: body",
    )


def test_validate_loading_hostile_identifiers(hostile: psycopg.Connection) -> None:
    call = "select ai._validate_loading(ai.loading_column(%s), 'Odd Schema', 'select')"
    assert_ok(hostile, call, ["Body Text"])
    assert_ok(hostile, call, ['we"ird'])
    assert_ok(
        hostile,
        "select ai._validate_loading(ai.loading_uri(%s), 'Odd Schema', 'select')",
        ["Body Text"],
    )
    assert_raises(hostile, call, CHAR_TYPES_MESSAGE.format(col="Weight", typ="float8"), ["Weight"])
    # names are matched exactly, not case-folded
    assert_raises(
        hostile, call, "column_name in config does not exist in the table: body text", ["body text"]
    )
    assert_raises(
        hostile,
        "select ai._validate_loading(ai.loading_column('Body Text'), 'odd schema', 'select')",
        "column_name in config does not exist in the table: Body Text",
    )
    assert_raises(
        hostile,
        "select ai._validate_loading(ai.loading_uri(%s), 'Odd Schema', 'select')",
        URI_BYTEA_MESSAGE.format(col='we"ird'),
        ['we"ird'],
    )


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parsing", "loading"),
    [
        ("ai.parsing_auto()", "ai.loading_column('body')"),
        ("ai.parsing_auto()", "ai.loading_column('document')"),
        ("ai.parsing_none()", "ai.loading_column('body')"),
        ("ai.parsing_pymupdf()", "ai.loading_column('document')"),
        ("ai.parsing_docling()", "ai.loading_column('document')"),
        ("ai.parsing_pymupdf()", "ai.loading_uri('body')"),
        ("ai.parsing_docling()", "ai.loading_uri('body')"),
        ("ai.parsing_auto()", "ai.loading_uri('body')"),
    ],
)
def test_validate_parsing_ok(thing: psycopg.Connection, parsing: str, loading: str) -> None:
    assert_ok(thing, f"select ai._validate_parsing({parsing}, {loading}, 'public', 'thing')")


@pytest.mark.parametrize(
    ("parsing", "loading", "message"),
    [
        ("'[1]'::jsonb", "ai.loading_column('body')", "parsing config is not a jsonb object"),
        ("null::jsonb", "ai.loading_column('body')", "parsing config is not a jsonb object"),
        (
            "ai.chunking_none()",
            "ai.loading_column('body')",
            "invalid config_type for parsing config",
        ),
        (
            """'{"config_type":"parsing","implementation":"tika"}'""",
            "ai.loading_column('body')",
            "invalid parsing config implementation",
        ),
        (
            """'{"config_type":"parsing"}'""",
            "ai.loading_column('body')",
            "invalid parsing config implementation",
        ),
        (
            "ai.parsing_none()",
            "ai.loading_column('document')",
            "cannot use parsing_none with bytea columns",
        ),
        (
            "ai.parsing_pymupdf()",
            "ai.loading_column('body')",
            "parsing_pymupdf must be used with a bytea column",
        ),
        (
            "ai.parsing_docling()",
            "ai.loading_column('title')",
            "parsing_docling must be used with a bytea column",
        ),
    ],
)
def test_validate_parsing_rejects(
    thing: psycopg.Connection, parsing: str, loading: str, message: str
) -> None:
    assert_raises(
        thing, f"select ai._validate_parsing({parsing}, {loading}, 'public', 'thing')", message
    )


def test_validate_parsing_hostile_identifiers(hostile: psycopg.Connection) -> None:
    call = "select ai._validate_parsing({}, ai.loading_column(%s), 'Odd Schema', 'select')"
    assert_ok(hostile, call.format("ai.parsing_pymupdf()"), ['we"ird'])
    assert_raises(
        hostile,
        call.format("ai.parsing_none()"),
        "cannot use parsing_none with bytea columns",
        ['we"ird'],
    )
    assert_raises(
        hostile,
        call.format("ai.parsing_docling()"),
        "parsing_docling must be used with a bytea column",
        ["Body Text"],
    )


# --- chunking --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        "ai.chunking_none()",
        "ai.chunking_character_text_splitter()",
        "ai.chunking_recursive_character_text_splitter(100, 10)",
    ],
)
def test_validate_chunking_ok(conn: psycopg.Connection, config: str) -> None:
    assert_ok(conn, f"select ai._validate_chunking({config})")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("'1'::jsonb", "chunking config is not a jsonb object"),
        ("null::jsonb", "chunking config is not a jsonb object"),
        ("ai.parsing_none()", "invalid config_type for chunking config"),
        (
            """'{"config_type":"chunking","implementation":"semantic"}'""",
            "invalid chunking config implementation",
        ),
        ("""'{"config_type":"chunking"}'""", "invalid chunking config implementation"),
    ],
)
def test_validate_chunking_rejects(conn: psycopg.Connection, config: str, message: str) -> None:
    assert_raises(conn, f"select ai._validate_chunking({config})", message)


# --- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "$chunk",
        "${chunk}",
        "title: $title $chunk",
        "$chunk.",
        "[$chunk]",
        "price: $$5 $chunk",
        "$$$chunk",  # an escaped dollar, then the placeholder
        "line one\n$chunk",
    ],
)
def test_validate_formatting_template_ok(thing: psycopg.Connection, template: str) -> None:
    assert_ok(
        thing,
        "select ai._validate_formatting(ai.formatting_python_template(%s), 'public', 'thing')",
        [template],
    )


@pytest.mark.parametrize(
    "template",
    [
        "no placeholder",
        "$title",
        "$chunky",  # a different identifier
        "$chunk_text",
        "$$chunk",  # an escaped dollar: literal text
        "$Chunk",
        "{chunk}",
        "",
    ],
)
def test_validate_formatting_template_without_chunk(
    thing: psycopg.Connection, template: str
) -> None:
    assert_raises(
        thing,
        "select ai._validate_formatting(ai.formatting_python_template(%s), 'public', 'thing')",
        "template must contain $chunk placeholder",
        [template],
    )


def test_validate_formatting_template_missing(thing: psycopg.Connection) -> None:
    assert_raises(
        thing,
        """select ai._validate_formatting
           ('{"config_type":"formatting","implementation":"python_template"}', 'public', 'thing')
        """,
        "template must contain $chunk placeholder",
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("'[]'::jsonb", "formatting config is not a jsonb object"),
        ("null::jsonb", "formatting config is not a jsonb object"),
        ("ai.indexing_none()", "invalid config_type for formatting config"),
        (
            """'{"config_type":"formatting","implementation":"jinja"}'""",
            "unrecognized formatting implementation",
        ),
        ("""'{"config_type":"formatting"}'""", "unrecognized formatting implementation"),
    ],
)
def test_validate_formatting_rejects(thing: psycopg.Connection, config: str, message: str) -> None:
    assert_raises(thing, f"select ai._validate_formatting({config}, 'public', 'thing')", message)


def test_validate_formatting_chunk_column(hostile: psycopg.Connection) -> None:
    assert_raises(
        hostile,
        "select ai._validate_formatting(ai.formatting_python_template(), 'Odd Schema', 'My Table')",
        'formatting_python_template may not be used when source table has a column named "chunk"',
    )
    # the template check comes first
    assert_raises(
        hostile,
        "select ai._validate_formatting"
        "(ai.formatting_python_template('x'), 'Odd Schema', 'My Table')",
        "template must contain $chunk placeholder",
    )
    # chunk_value does not substitute anything: a chunk column is fine
    assert_ok(
        hostile,
        "select ai._validate_formatting(ai.formatting_chunk_value(), 'Odd Schema', 'My Table')",
    )
    # a table without a chunk column, behind quoted names
    assert_ok(
        hostile,
        "select ai._validate_formatting(ai.formatting_python_template(), 'Odd Schema', 'select')",
    )


def test_validate_formatting_python_template_directly(thing: psycopg.Connection) -> None:
    assert_ok(
        thing,
        "select ai._validate_formatting_python_template"
        "(ai.formatting_python_template('$id: $chunk'), 'public', 'thing')",
    )
    thing.execute("alter table public.thing add column chunk text")
    assert_raises(
        thing,
        "select ai._validate_formatting_python_template"
        "(ai.formatting_python_template('$id: $chunk'), 'public', 'thing')",
        'formatting_python_template may not be used when source table has a column named "chunk"',
    )


# --- embedding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        "ai.embedding_openai('text-embedding-3-small', 768)",
        "ai.embedding_ollama('nomic-embed-text', 768)",
        "ai.embedding_voyageai('voyage-3', 1024)",
        "ai.embedding_voyageai('voyage-3', 256, output_dimension => 256, output_dtype => 'int8')",
        "ai.embedding_litellm('cohere/embed-english-v3.0', 1024)",
        "ai.embedding_sentence_transformers('all-MiniLM-L6-v2', 384)",
        # unknown extra keys are kept and accepted
        """ai.embedding_openai('m', 3) || '{"send_dimensions": false}'""",
        """ai.embedding_sentence_transformers('m', 3) || '{"trust_remote_code": true}'""",
    ],
)
def test_validate_embedding_ok(conn: psycopg.Connection, config: str) -> None:
    assert_ok(conn, f"select ai._validate_embedding({config})")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("'\"openai\"'::jsonb", "embedding config is not a jsonb object"),
        ("null::jsonb", "embedding config is not a jsonb object"),
        ("ai.chunking_none()", "invalid config_type for embedding config"),
        ("""'{"config_type":"embedding"}'""", "embedding implementation not specified"),
        (
            """'{"config_type":"embedding","implementation":"cohere"}'""",
            'invalid embedding implementation: "cohere"',
        ),
        (
            """'{"config_type":"embedding","implementation":"voyageai","model":"m",
                "dimensions":8,"output_dtype":"binary"}'""",
            'invalid output_dtype for voyage ai "binary": binary and ubinary embeddings'
            " cannot be stored in a vector column; use float, int8 or uint8",
        ),
        (
            """'{"config_type":"embedding","implementation":"voyageai","model":"m",
                "dimensions":8,"output_dtype":"int4"}'""",
            'invalid output_dtype for voyage ai "int4": use float, int8 or uint8',
        ),
        (
            """'{"config_type":"embedding","implementation":"voyageai","model":"m",
                "dimensions":8,"output_dimension":1024}'""",
            "invalid output_dimension for voyage ai 1024: it must equal dimensions (8) because"
            " the embeddings are stored in a vector(8) column",
        ),
        (
            """'{"config_type":"embedding","implementation":"voyageai","model":"m",
                "dimensions":8,"input_type":"classify"}'""",
            'invalid input_type for voyage ai "classify"',
        ),
    ],
)
def test_validate_embedding_rejects(conn: psycopg.Connection, config: str, message: str) -> None:
    assert_raises(conn, f"select ai._validate_embedding({config})", message)


# --- indexing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        "ai.indexing_none()",
        "ai.indexing_diskann()",
        "ai.indexing_diskann(storage_layout => 'memory_optimized')",
        "ai.indexing_diskann(storage_layout => 'plain')",
        "ai.indexing_hnsw()",
        "ai.indexing_hnsw(opclass => 'vector_ip_ops')",
        "ai.indexing_hnsw(opclass => 'vector_l1_ops')",
        "ai.indexing_hnsw(opclass => 'vector_l2_ops')",  # pgai rejected it
        "ai.indexing_hnsw(opclass => null)",
    ],
)
def test_validate_indexing_ok(conn: psycopg.Connection, config: str) -> None:
    assert_ok(conn, f"select ai._validate_indexing({config})")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("'[]'::jsonb", "indexing config is not a jsonb object"),
        ("null::jsonb", "indexing config is not a jsonb object"),
        ("ai.scheduling_none()", "invalid config_type for indexing config"),
        ("""'{"config_type":"indexing"}'""", "indexing implementation not specified"),
        # 'default' must be resolved before validation
        ("ai.indexing_default()", 'invalid indexing implementation: "default"'),
        (
            """'{"config_type":"indexing","implementation":"ivfflat"}'""",
            'invalid indexing implementation: "ivfflat"',
        ),
        ("ai.indexing_diskann(storage_layout => 'compressed')", "invalid storage_layout"),
        ("ai.indexing_hnsw(opclass => 'vector_hamming_ops')", "invalid opclass"),
        ("ai.indexing_hnsw(opclass => 'halfvec_l2_ops')", "invalid opclass"),
    ],
)
def test_validate_indexing_rejects(conn: psycopg.Connection, config: str, message: str) -> None:
    assert_raises(conn, f"select ai._validate_indexing({config})", message)


def test_validate_indexing_specific_validators(conn: psycopg.Connection) -> None:
    assert_ok(
        conn, "select ai._validate_indexing_hnsw(ai.indexing_hnsw(opclass => 'vector_l2_ops'))"
    )
    assert_raises(
        conn,
        "select ai._validate_indexing_hnsw(ai.indexing_hnsw(opclass => 'x'))",
        "invalid opclass",
    )
    assert_ok(conn, "select ai._validate_indexing_diskann(ai.indexing_diskann())")
    assert_raises(
        conn,
        "select ai._validate_indexing_diskann(ai.indexing_diskann(storage_layout => 'x'))",
        "invalid storage_layout",
    )


# --- scheduling ------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["ai.scheduling_none()", "ai.scheduling_timescaledb()"])
def test_validate_scheduling_ok(conn: psycopg.Connection, config: str) -> None:
    assert_ok(conn, f"select ai._validate_scheduling({config})")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("'[]'::jsonb", "scheduling config is not a jsonb object"),
        ("null::jsonb", "scheduling config is not a jsonb object"),
        ("ai.indexing_none()", "invalid config_type for scheduling config"),
        ("""'{"config_type":"scheduling"}'""", "scheduling implementation not specified"),
        ("ai.scheduling_default()", 'unrecognized scheduling implementation: "default"'),
        (
            """'{"config_type":"scheduling","implementation":"pg_cron"}'""",
            'unrecognized scheduling implementation: "pg_cron"',
        ),
    ],
)
def test_validate_scheduling_rejects(conn: psycopg.Connection, config: str, message: str) -> None:
    assert_raises(conn, f"select ai._validate_scheduling({config})", message)


# --- processing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        "ai.processing_default()",
        "ai.processing_default(batch_size => 1, concurrency => 1)",
        "ai.processing_default(batch_size => 2048, concurrency => 50)",
        "ai.processing_default(concurrency => 11)",  # pgai's worker stopped at 10; ours at 50
        """'{"config_type":"processing","implementation":"default","batch_size":null}'""",
    ],
)
def test_validate_processing_ok(conn: psycopg.Connection, config: str) -> None:
    assert_ok(conn, f"select ai._validate_processing({config})")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("'[]'::jsonb", "processing config is not a jsonb object"),
        ("null::jsonb", "processing config is not a jsonb object"),
        ("ai.indexing_none()", "invalid config_type for processing config"),
        (
            """'{"config_type":"processing","implementation":"default","batch_size":"10"}'""",
            "batch_size must be a number",
        ),
        (
            "ai.processing_default(batch_size => 2049)",
            "batch_size must be less than or equal to 2048",
        ),
        (
            """'{"config_type":"processing","implementation":"default",
                "batch_size":99999999999}'""",
            "batch_size must be less than or equal to 2048",
        ),
        ("ai.processing_default(batch_size => 0)", "batch_size must be greater than 0"),
        ("ai.processing_default(batch_size => -5)", "batch_size must be greater than 0"),
        (
            """'{"config_type":"processing","implementation":"default","batch_size":2.5}'""",
            "batch_size must be an integer",
        ),
        (
            """'{"config_type":"processing","implementation":"default","concurrency":true}'""",
            "concurrency must be a number",
        ),
        (
            "ai.processing_default(concurrency => 51)",
            "concurrency must be less than or equal to 50",
        ),
        ("ai.processing_default(concurrency => 0)", "concurrency must be greater than 0"),
        (
            """'{"config_type":"processing","implementation":"default","concurrency":1.5}'""",
            "concurrency must be an integer",
        ),
        ("""'{"config_type":"processing"}'""", "processing implementation not specified"),
        (
            """'{"config_type":"processing","implementation":"parallel"}'""",
            'unrecognized processing implementation: "parallel"',
        ),
    ],
)
def test_validate_processing_rejects(conn: psycopg.Connection, config: str, message: str) -> None:
    assert_raises(conn, f"select ai._validate_processing({config})", message)


def test_validate_processing_batch_size_before_concurrency(conn: psycopg.Connection) -> None:
    assert_raises(
        conn,
        "select ai._validate_processing(ai.processing_default(batch_size => 0, concurrency => 0))",
        "batch_size must be greater than 0",
    )


# --- destination -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "chunking"),
    [
        ("ai.destination_table()", "ai.chunking_recursive_character_text_splitter()"),
        ("ai.destination_table('x')", "ai.chunking_none()"),
        ("ai.destination_column('emb')", "ai.chunking_none()"),
    ],
)
def test_validate_destination_ok(conn: psycopg.Connection, destination: str, chunking: str) -> None:
    assert_ok(conn, f"select ai._validate_destination({destination}, {chunking})")


@pytest.mark.parametrize(
    ("destination", "chunking", "message"),
    [
        ("'[]'::jsonb", "ai.chunking_none()", "destination config is not a jsonb object"),
        ("null::jsonb", "ai.chunking_none()", "destination config is not a jsonb object"),
        (
            "ai.chunking_none()",
            "ai.chunking_none()",
            "invalid config_type for destination config",
        ),
        (
            "ai.destination_column('emb')",
            "ai.chunking_character_text_splitter()",
            "chunking must be none for column destination",
        ),
        (
            """'{"config_type":"destination","implementation":"kafka"}'""",
            "ai.chunking_none()",
            "invalid implementation for destination config",
        ),
        (
            """'{"config_type":"destination"}'""",
            "ai.chunking_none()",
            "invalid implementation for destination config",
        ),
        (
            """'{"config_type":"destination","implementation":"column"}'""",
            "ai.chunking_none()",
            "invalid destination config, missing embedding_column",
        ),
    ],
)
def test_validate_destination_rejects(
    conn: psycopg.Connection, destination: str, chunking: str, message: str
) -> None:
    assert_raises(conn, f"select ai._validate_destination({destination}, {chunking})", message)


# --- _validate_destination_can_create_objects ------------------------------------------------


def can_create(conn: psycopg.Connection, destination: str, schema: str, table: str) -> None:
    conn.execute(
        f"select ai._validate_destination_can_create_objects"
        f"(ai._evaluate_destination({destination}, %s, %s))",
        [schema, table],
    )


def test_can_create_objects_when_names_are_free(thing: psycopg.Connection) -> None:
    can_create(thing, "ai.destination_table()", "public", "thing")
    can_create(thing, "ai.destination_table('thing_vec')", "public", "thing")
    assert_ok(
        thing,
        "select ai._validate_destination_can_create_objects(ai.destination_column('body'))",
    )


def test_can_create_objects_view_exists(thing: psycopg.Connection) -> None:
    thing.execute("create view public.thing_embedding as select 1 as x")
    thing.execute("create table public.thing_embedding_store (x int)")
    # the view is checked first
    with pytest.raises(errors.DuplicateObject) as info:
        can_create(thing, "ai.destination_table()", "public", "thing")
    assert info.value.diag.message_primary == (
        "an object named public.thing_embedding already exists."
        " specify an alternate destination or view_name explicitly"
    )
    assert info.value.sqlstate == "42710"


def test_can_create_objects_target_exists(thing: psycopg.Connection) -> None:
    thing.execute("create table public.thing_embedding_store (x int)")
    with pytest.raises(errors.DuplicateObject) as info:
        can_create(thing, "ai.destination_table()", "public", "thing")
    assert info.value.diag.message_primary == (
        "an object named public.thing_embedding_store already exists."
        " specify an alternate destination or target_table explicitly"
    )
    # an explicit alternative name is free
    can_create(thing, "ai.destination_table(target_table => 'other_store')", "public", "thing")


def test_can_create_objects_destination_base_name(thing: psycopg.Connection) -> None:
    # the base name is the view's name: here it is the source table itself
    with pytest.raises(errors.DuplicateObject) as info:
        can_create(thing, "ai.destination_table('thing')", "public", "other")
    assert info.value.diag.message_primary == (
        "an object named public.thing already exists."
        " specify an alternate destination or view_name explicitly"
    )
    thing.execute("create table public.docs_store (x int)")
    with pytest.raises(errors.DuplicateObject) as info:
        can_create(thing, "ai.destination_table('docs')", "public", "thing")
    assert info.value.diag.message_primary == (
        "an object named public.docs_store already exists."
        " specify an alternate destination or target_table explicitly"
    )


def test_can_create_objects_honours_view_schema(thing: psycopg.Connection) -> None:
    thing.execute("create schema api; create view api.thing_embedding as select 1 as x")
    # the view in another schema does not block the default destination ...
    can_create(thing, "ai.destination_table()", "public", "thing")
    # ... but blocks one whose view goes to that schema
    with pytest.raises(errors.DuplicateObject) as info:
        can_create(thing, "ai.destination_table(view_schema => 'api')", "public", "thing")
    assert info.value.diag.message_primary == (
        "an object named api.thing_embedding already exists."
        " specify an alternate destination or view_name explicitly"
    )


def test_can_create_objects_hostile_identifiers(hostile: psycopg.Connection) -> None:
    hostile.execute('create view "Odd Schema"."select_embedding" as select 1 as x')
    with pytest.raises(errors.DuplicateObject) as info:
        can_create(hostile, "ai.destination_table()", "Odd Schema", "select")
    assert info.value.diag.message_primary == (
        "an object named Odd Schema.select_embedding already exists."
        " specify an alternate destination or view_name explicitly"
    )
    hostile.execute('create table "Odd Schema"."My ""Quoted"" Store" (x int)')
    with pytest.raises(errors.DuplicateObject) as info:
        can_create(
            hostile,
            "ai.destination_table(target_table => 'My \"Quoted\" Store', view_name => 'v')",
            "Odd Schema",
            "select",
        )
    assert info.value.diag.message_primary == (
        'an object named Odd Schema.My "Quoted" Store already exists.'
        " specify an alternate destination or target_table explicitly"
    )
    # lower-case lookalikes are different objects
    can_create(
        hostile,
        "ai.destination_table(target_table => 'my \"quoted\" store', view_name => 'v')",
        "Odd Schema",
        "select",
    )


def test_can_create_objects_ignores_column_destination(thing: psycopg.Connection) -> None:
    thing.execute("create view public.thing_embedding as select 1 as x")
    assert_ok(
        thing,
        "select ai._validate_destination_can_create_objects"
        "(ai._evaluate_destination(ai.destination_column('body'), 'public', 'thing'))",
    )
