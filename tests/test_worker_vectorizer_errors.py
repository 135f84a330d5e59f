"""Failures that every row of a vectorizer would hit are the vectorizer's, not each row's:
a config that names what the database lacks, an installed-nowhere parser, a provider that is
down. They charge no key, write one error row, and end a once-run with exit 1 promptly; the
other vectorizers go on. Also: provider SDKs imported by several vectorizers at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.fake_ollama import FakeOllama
from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    create_source,
    create_vectorizer,
    doc_rows,
    error_rows,
    failed_rows,
    inputs_sent,
    queue_count,
    queue_rows,
    run_worker,
    store_rows,
    worker_env,
)
from vectorizer.config import PyMuPDFParsing
from vectorizer.errors import VectorizerError
from vectorizer.stages import parsing

# The bound for a config error: exit 1 within 30 s; for an outage, within 90 s.
CONFIG_ERROR_SECONDS = 30
OUTAGE_SECONDS = 90


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def untouched(conn: psycopg.Connection, vectorizer_id: int, keys: list[int]) -> None:
    """Nothing charged: every key still queued with 0 attempts, none failed."""
    assert [row[:2] for row in queue_rows(conn, vectorizer_id)] == [(k, 0) for k in keys]
    assert failed_rows(conn, vectorizer_id) == []


def timed_once(db_url: str, fake: FakeOpenAI | None, **env: str) -> tuple[int, float, str]:
    started = time.monotonic()
    result = run_worker(db_url, env=worker_env(fake, **env))
    return result.returncode, time.monotonic() - started, result.stderr


def test_template_naming_a_missing_column_is_one_vectorizer_error(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(3))
    broken = create_vectorizer(
        conn,
        name="broken_template",
        loading="ai.loading_column('body', retries => 1)",
        formatting="ai.formatting_python_template('$title $nosuch: $chunk')",
        destination="ai.destination_table('broken')",
    )
    good = create_vectorizer(
        conn,
        name="good_template",
        formatting="ai.formatting_python_template('$title: $chunk')",
        destination="ai.destination_table('good')",
    )

    code, seconds, stderr = timed_once(db_url, fake)

    assert code == 1, stderr
    assert seconds < CONFIG_ERROR_SECONDS
    untouched(conn, broken, [1, 2, 3])
    [(_, message, details)] = error_rows(conn, broken)
    assert message == "vectorizer failed with unexpected error"
    assert details["step"] == "formatting"
    assert '"nosuch"' in details["error_reason"]
    assert '"title"' in details["error_reason"]  # the columns it could have used
    assert "broken_template" in stderr  # the once-run names what failed
    # nothing of the broken vectorizer was sent; the good one on the same rows landed
    assert sorted(inputs_sent(fake)) == [f"title {i}: body of document {i}" for i in (1, 2, 3)]
    assert [row[:3] for row in store_rows(conn, "good_store")] == [
        (i, 0, f"title {i}: body of document {i}") for i in (1, 2, 3)
    ]
    assert error_rows(conn, good) == []


def test_a_column_dropped_after_creation_is_one_vectorizer_error(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn, formatting="ai.formatting_python_template('$title: $chunk')")
    conn.execute("alter table docs drop column title cascade")  # and the view with it

    code, seconds, stderr = timed_once(db_url, fake)

    assert code == 1, stderr
    assert seconds < CONFIG_ERROR_SECONDS
    untouched(conn, vid, [1, 2, 3])
    [(_, _, details)] = error_rows(conn, vid)
    assert details["step"] == "formatting"
    assert '"title"' in details["error_reason"]
    assert fake.requests == []


def test_a_dropped_loader_column_is_one_vectorizer_error(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    conn.execute("create table docs (id int primary key, title text, body text, extra text)")
    conn.execute("insert into docs select g, 't', 'b', 'e' from generate_series(1, 3) g")
    vid = create_vectorizer(conn, loading="ai.loading_column('extra')")
    conn.execute("alter table docs drop column extra cascade")

    code, _, stderr = timed_once(db_url, fake)

    assert code == 1, stderr
    untouched(conn, vid, [1, 2, 3])
    [(_, _, details)] = error_rows(conn, vid)
    assert details["step"] == "loading"
    assert 'no column "extra"' in details["error_reason"]


def test_a_dropped_store_is_one_vectorizer_error(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn)
    conn.execute("drop table docs_embedding_store cascade")

    code, _, stderr = timed_once(db_url, fake)

    assert code == 1, stderr
    untouched(conn, vid, [1, 2, 3])
    [(_, _, details)] = error_rows(conn, vid)
    assert details["step"] == "writing"
    assert "docs_embedding_store" in details["error_reason"]
    assert "does not exist" in details["error_reason"]
    assert fake.requests == []


def test_a_dropped_destination_column_is_one_vectorizer_error(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn, destination="ai.destination_column('emb')")
    conn.execute("alter table docs drop column emb")

    code, _, stderr = timed_once(db_url, fake)

    assert code == 1, stderr
    untouched(conn, vid, [1, 2, 3])
    [(_, _, details)] = error_rows(conn, vid)
    assert details["step"] == "writing"
    assert '"emb"' in details["error_reason"]


def test_a_parser_that_is_not_installed_fails_at_build_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what a worker without the `docs` extra sees: pymupdf4llm is not importable
    monkeypatch.setitem(parsing._PARSER_MODULES, parsing.PYMUPDF, "no_such_module_for_tests")

    with pytest.raises(VectorizerError) as raised:
        parsing.make_parser(PyMuPDFParsing(implementation="pymupdf"))

    assert raised.value.step == "parsing"
    assert "not installed" in raised.value.message
    assert "vectorizer[docs]" in raised.value.message


def test_an_outage_ends_a_once_run_promptly_without_charging_anything(
    conn: psycopg.Connection, db_url: str, fake_ollama: FakeOllama
) -> None:
    fake_ollama.fail_next(500, count=100_000, message="llama runner process has terminated")
    create_source(conn, rows=doc_rows(4))
    vid = create_vectorizer(
        conn,
        name="ollama_down",
        embedding=(
            f"ai.embedding_ollama('nomic-embed-text', 768, base_url => '{fake_ollama.host}')"
        ),
    )

    code, seconds, stderr = timed_once(db_url, None)

    assert code == 1, stderr
    assert seconds < OUTAGE_SECONDS
    untouched(conn, vid, [1, 2, 3, 4])
    [(_, message, details)] = error_rows(conn, vid)
    assert message == "embedding provider failed"
    assert details["provider"] == "ollama"
    assert "llama runner process has terminated" in details["error_reason"]
    assert "ollama_down" in stderr
    embeds = fake_ollama.requests_to("/api/embed")
    assert 2 <= len(embeds) <= 5  # retried in place, then given up on


def test_an_outage_that_ends_within_the_tries_loses_nothing(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    fake.fail_next(503, count=3)
    create_source(conn, rows=doc_rows(3))
    vid = create_vectorizer(conn)

    code, _, stderr = timed_once(db_url, fake)

    assert code == 0, stderr
    assert queue_count(conn, vid) == 0
    assert error_rows(conn, vid) == []
    assert len(store_rows(conn, "docs_embedding_store")) == 3


LOCAL_EMBEDDING = (
    "ai.embedding_sentence_transformers('sentence-transformers/all-MiniLM-L6-v2', 384)"
)


def test_local_model_and_api_providers_start_together(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    # The local model loads (importing transformers and hub clients) in a thread while the
    # other runners import the OpenAI SDK: both pull in httpx. Several runs, because the
    # race it guards against did not show every time.
    tables = ["local", "api_1", "api_2", "api_3"]
    ids = {}
    for table in tables:
        create_source(conn, table, doc_rows(2))
        embedding = LOCAL_EMBEDDING if table == "local" else None
        ids[table] = create_vectorizer(conn, table, embedding=embedding)
    for attempt in range(3):
        for table in tables:
            conn.execute(f"update {table} set body = body || ' {attempt}'")

        code, _, stderr = timed_once(db_url, fake)

        assert code == 0, stderr
        assert "partially initialized" not in stderr
        for table, vectorizer_id in ids.items():
            assert queue_count(conn, vectorizer_id) == 0, table
            assert error_rows(conn, vectorizer_id) == [], table
            assert [row[2] for row in store_rows(conn, f"{table}_embedding_store")] == [
                f"body of document {i}" + "".join(f" {n}" for n in range(attempt + 1))
                for i in (1, 2)
            ]
