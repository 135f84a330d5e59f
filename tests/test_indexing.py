"""Vector indexes built by the worker (vectorizer/indexing.py) and their SQL surface: real
Postgres, the real worker CLI as a subprocess, the fake OpenAI server over real HTTP."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.fake_openai import Behaviour, FakeOpenAI
from tests.test_status import cli
from tests.worker_helpers import (
    DIMS,
    MODEL,
    REPO_ROOT,
    create_source,
    daemon,
    doc_rows,
    error_rows,
    insert_rows,
    queue_count,
    run_ok,
    run_worker,
    wait_for,
    worker_env,
)
from vectorizer.indexing import IndexBuilder
from vectorizer.search import search
from vectorizer.tracking import WorkerTracking

SCHEMA = 'Idx "Schema'
TABLE = "Big Table"


def _create(
    conn: psycopg.Connection,
    indexing: str,
    *,
    schema: str = "public",
    table: str = "docs",
    name: str = "docs",
    vector_type: str = "vector",
    processing: str = "ai.processing_default()",
) -> int:
    source = sql.Identifier(schema, table).as_string(conn)
    row = conn.execute(
        f"""
        select ai.create_vectorizer({sql.quote(source)}::regclass, name => '{name}',
            loading => ai.loading_column('body'),
            embedding => ai.embedding_openai('{MODEL}', {DIMS}),
            chunking => ai.chunking_none(),
            indexing => {indexing},
            processing => {processing},
            destination => ai.destination_table(vector_type => '{vector_type}'))
        """
    ).fetchone()
    assert row is not None
    return int(row[0])


def _six_docs(
    conn: psycopg.Connection, indexing: str, fake: FakeOpenAI
) -> tuple[int, dict[str, str]]:
    """A vectorizer on six rows of public.docs, and the worker environment for `fake`."""
    create_source(conn, "docs", doc_rows(6))
    return _create(conn, indexing), worker_env(fake)


def _index(conn: psycopg.Connection, schema: str, vid: int) -> tuple[str, bool] | None:
    row = conn.execute(
        """
        select pg_get_indexdef(c.oid), i.indisvalid from pg_class c
        join pg_index i on i.indexrelid = c.oid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %s and c.relname = %s
        """,
        (schema, f"_vectorizer_ann_{vid}"),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _state(conn: psycopg.Connection, vid: int) -> str:
    row = conn.execute("select index_state from ai.vectorizer_status where id = %s", (vid,))
    found = row.fetchone()
    assert found is not None
    return str(found[0])


def _build_row(conn: psycopg.Connection, vid: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        return cursor.execute(
            "select * from ai._vectorizer_index_build where vectorizer_id = %s", (vid,)
        ).fetchone()


def test_worker_builds_the_hnsw_index_once_the_store_has_min_rows(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(SCHEMA)))
    create_source(conn, TABLE, doc_rows(12), schema=SCHEMA)
    vid = _create(
        conn,
        "ai.indexing_hnsw(min_rows => 20, opclass => 'vector_l2_ops', m => 8,"
        " ef_construction => 32)",
        schema=SCHEMA,
        table=TABLE,
    )
    env = worker_env(fake_openai)

    run_ok(db_url, env=env)
    assert _index(conn, SCHEMA, vid) is None  # 12 rows < min_rows
    assert _state(conn, vid) == "none"

    insert_rows(conn, TABLE, doc_rows(10, start=13), schema=SCHEMA)
    result = run_ok(db_url, env=env)

    index = _index(conn, SCHEMA, vid)
    assert index is not None, result.stderr
    definition, valid = index
    assert valid
    assert "USING hnsw (embedding vector_l2_ops) WITH (m='8', ef_construction='32')" in definition
    assert _state(conn, vid) == "ready"
    build = _build_row(conn, vid)
    assert build is not None
    assert (build["state"], build["percent"], build["attempts"]) == ("ready", 100, 1)
    assert build["index_name"] == f"_vectorizer_ann_{vid}"
    # search uses the operator of the index's opclass, so the index can answer it
    hits = search(db_url, "docs", "body of document 7", k=3)
    assert hits[0].primary_key == {"id": 7} and hits[0].distance == pytest.approx(0, abs=1e-5)
    with conn.transaction():
        conn.execute("set local enable_seqscan = off")
        plan = conn.execute(
            sql.SQL("explain select id from {} order by embedding <-> %s::vector limit 3").format(
                sql.Identifier(SCHEMA, f"{TABLE}_embedding")
            ),
            (str([0.1] * DIMS),),
        ).fetchall()
    assert f"_vectorizer_ann_{vid}" in " ".join(line[0] for line in plan)


# Runs the worker CLI in a subprocess and prints, at exit, which of these packages it imported.
_IMPORTS_OF_A_RUN = """
import atexit, runpy, sys
watched = set(sys.argv[2].split(","))
# top-level packages: a submodule's import imports its package too, and the worker command
# registers a stand-in module under httpx's name without importing httpx (lean_imports.py)
loaded = lambda: ",".join(sorted(watched & {name for name in sys.modules if "." not in name}))
atexit.register(lambda: print("imported:" + loaded()))
sys.argv = ["vectorizer", "worker", "--db-url", sys.argv[1], "--once"]
runpy.run_module("vectorizer", run_name="__main__", alter_sys=True)
"""
_HEAVY = ("pydantic", "numpy", "httpx")


def _imports_of_a_once_run(db_url: str, env: dict[str, str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS_OF_A_RUN, db_url, ",".join(_HEAVY)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("imported:"))
    return [name for name in line.removeprefix("imported:").split(",") if name]


def test_an_idle_once_run_reads_the_config_only_when_the_index_may_be_due(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid, env = _six_docs(conn, "ai.indexing_hnsw(min_rows => 5)", fake_openai)
    assert set(_imports_of_a_once_run(db_url, env)) >= set(_HEAVY)  # work: the whole pipeline
    assert _index(conn, "public", vid) is not None

    # nothing queued and the index there: SQL alone says there is nothing to do
    assert _imports_of_a_once_run(db_url, env) == []

    conn.execute(sql.SQL("drop index {}").format(sql.Identifier(f"_vectorizer_ann_{vid}")))
    imported = _imports_of_a_once_run(db_url, env)  # the index is due: checked the full way
    assert "pydantic" in imported and "numpy" not in imported
    index = _index(conn, "public", vid)
    assert index is not None and index[1]


def test_halfvec_store_gets_the_halfvec_opclass(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, "docs", doc_rows(6))
    vid = _create(conn, "ai.indexing_hnsw(min_rows => 5)", vector_type="halfvec")

    run_ok(db_url, env=worker_env(fake_openai))

    index = _index(conn, "public", vid)
    assert index is not None and index[1]
    assert "USING hnsw (embedding halfvec_cosine_ops)" in index[0]


def test_indexing_default_waits_for_100000_rows(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, "docs", doc_rows(5))
    vid = _create(conn, "ai.indexing_default()")
    config = conn.execute("select config->'indexing' from ai.vectorizer where id = %s", (vid,))
    assert config.fetchone() == (
        {
            "implementation": "hnsw",
            "config_type": "indexing",
            "min_rows": 100000,
            "opclass": "vector_cosine_ops",
            "create_when_queue_empty": True,
        },
    )

    run_ok(db_url, env=worker_env(fake_openai))

    assert _index(conn, "public", vid) is None
    assert _state(conn, vid) == "none"


def test_diskann_without_pgvectorscale_is_said_once_and_stops_nothing(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid, env = _six_docs(conn, "ai.indexing_diskann(min_rows => 5)", fake_openai)

    first = run_worker(db_url, env=env)
    insert_rows(conn, "docs", doc_rows(2, start=7))
    second = run_worker(db_url, env=env)

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert conn.execute("select count(*) from docs_embedding_store").fetchone() == (8,)
    errors = [e for e in error_rows(conn, vid) if e[1] == "vector index build failed"]
    assert len(errors) == 1
    assert "pgvectorscale" in errors[0][2]["error_reason"]
    assert errors[0][2]["step"] == "indexing"
    assert _state(conn, vid).startswith("failed: indexing_diskann needs the index access method")


def test_a_failed_build_is_recorded_and_retried_after_the_config_is_fixed(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid, env = _six_docs(conn, "ai.indexing_hnsw(min_rows => 5, m => 1000)", fake_openai)

    assert run_worker(db_url, env=env).returncode == 0

    assert _index(conn, "public", vid) is None
    state = _state(conn, vid)
    assert state.startswith("failed: ") and '"m"' in state, state
    assert [e[1] for e in error_rows(conn, vid)] == ["vector index build failed"]

    conn.execute(
        "select ai.set_scheduling(%s, ai.scheduling_none(), ai.indexing_hnsw(min_rows => 5))",
        (vid,),
    )
    run_ok(db_url, env=env)

    assert _state(conn, vid) == "ready"
    build = _build_row(conn, vid)
    assert build is not None and build["attempts"] == 2 and build["error"] is None


def test_an_invalid_index_left_by_an_interrupted_build_is_dropped_first(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    vid, env = _six_docs(conn, "ai.indexing_none()", fake_openai)
    run_ok(db_url, env=env)
    # a CONCURRENTLY build that fails leaves an invalid index of that name behind
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            sql.SQL(
                "create unique index concurrently {} on docs_embedding_store (chunk_seq)"
            ).format(sql.Identifier(f"_vectorizer_ann_{vid}"))
        )
    assert _index(conn, "public", vid) == (
        f"CREATE UNIQUE INDEX _vectorizer_ann_{vid} ON public.docs_embedding_store"
        " USING btree (chunk_seq)",
        False,
    )
    conn.execute(
        "select ai.set_scheduling(%s, ai.scheduling_none(), ai.indexing_hnsw(min_rows => 5))",
        (vid,),
    )

    result = run_ok(db_url, env=env)

    index = _index(conn, "public", vid)
    assert index is not None and index[1] and "USING hnsw" in index[0]
    assert "dropping the invalid index" in result.stderr


def test_the_index_is_built_under_a_continuous_ingest(
    conn: psycopg.Connection, db_url: str
) -> None:
    """pgai #791: a queue that never empties must not postpone the index for ever."""
    create_source(conn, "docs", doc_rows(5))
    vid = _create(
        conn,
        "ai.indexing_hnsw(min_rows => 30, create_when_queue_empty => true)",
        processing="ai.processing_default(batch_size => 1)",
    )
    stop = threading.Event()
    inserted: list[int] = []

    def ingest() -> None:  # a row every 100 ms, for as long as the test runs
        with psycopg.connect(db_url, autocommit=True) as writer:
            next_id = 100
            while not stop.is_set():
                insert_rows(writer, "docs", [(next_id, "t", f"streamed row {next_id}")])
                inserted.append(next_id)
                next_id += 1
                time.sleep(0.1)

    # 0.3 s per embedding request and one row per batch: the worker falls ever further behind
    with FakeOpenAI(Behaviour(latency=0.3)) as fake:
        env = worker_env(fake, VECTORIZER_INDEX_CHECK_INTERVAL="1")
        thread = threading.Thread(target=ingest, daemon=True)
        thread.start()
        try:
            with daemon(db_url, "--poll-interval", "1s", env=env) as worker:

                def built() -> bool:
                    assert worker.alive(), worker.stderr()
                    return _index(conn, "public", vid) is not None

                wait_for(built, 120, interval=0.5, what="the vector index")
                pending_when_built = queue_count(conn, vid)
                ingest_running = thread.is_alive()
                stored = conn.execute("select count(*) from docs_embedding_store").fetchone()
        finally:
            stop.set()
            thread.join(timeout=10)

    assert ingest_running
    assert pending_when_built > 0  # the queue was not empty when the index was built
    assert stored is not None and stored[0] >= 30
    index = _index(conn, "public", vid)
    assert index is not None and "USING hnsw" in index[0]
    assert len(inserted) > 20


# --- SQL -------------------------------------------------------------------------------------


def test_indexing_needs_no_scheduling_any_more(conn: psycopg.Connection) -> None:
    create_source(conn, "docs")
    vid = _create(conn, "ai.indexing_hnsw()")
    conn.execute(
        "select ai.set_scheduling(%s, ai.scheduling_none(), ai.indexing_diskann())", (vid,)
    )
    row = conn.execute(
        "select config->'indexing'->>'implementation', config->'scheduling'->>'implementation'"
        " from ai.vectorizer where id = %s",
        (vid,),
    ).fetchone()
    assert row == ("diskann", "none")


def test_destination_table_vector_type(conn: psycopg.Connection) -> None:
    built = conn.execute(
        "select ai.destination_table('x', vector_type => 'halfvec'), ai.destination_table('x'),"
        " ai._evaluate_destination(ai.destination_table(vector_type => 'halfvec'), 's', 't'),"
        " ai._evaluate_destination(ai.destination_table(), 's', 't')"
    ).fetchone()
    assert built is not None
    assert built[0] == {
        "implementation": "table",
        "config_type": "destination",
        "destination": "x",
        "vector_type": "halfvec",
    }
    assert "vector_type" not in built[1] and "vector_type" not in built[3]
    assert built[2]["vector_type"] == "halfvec"
    create_source(conn, "docs")
    with pytest.raises(psycopg.errors.RaiseException, match=r'invalid vector_type .*"float16"'):
        _create(conn, "ai.indexing_none()", vector_type="float16")


def test_pgai_five_argument_destination_table_is_replaced(conn: psycopg.Connection) -> None:
    """A catalog whose create_vectorizer default still names pgai's five-argument builder."""
    from vectorizer.install import install

    conn.execute(
        "drop function ai.destination_table(name, name, name, name, name, text) cascade"
    )  # cascade: create_vectorizer's default depended on it, as it did on pgai's
    conn.execute(
        """
        create function ai.destination_table(destination name default null,
            target_schema name default null, target_table name default null,
            view_schema name default null, view_name name default null) returns jsonb
        language sql immutable as
        $$ select jsonb_build_object('implementation', 'table', 'config_type', 'destination') $$
        """
    )
    conn.execute(
        "create function public.uses_it(d jsonb default ai.destination_table()) returns jsonb"
        " language sql as $$ select d $$"
    )
    conn.execute("update ai._vectorizer_lib_version set checksum = 'older'")  # an upgrade

    install(conn.info.dsn)

    functions = conn.execute(
        "select p.proname, pg_get_function_identity_arguments(p.oid) from pg_proc p"
        " where p.pronamespace = 'ai'::regnamespace"
        " and p.proname in ('destination_table', '_destination_table_5')"
        " order by 1"
    ).fetchall()
    assert ("destination_table", functions[1][1]) == functions[1]
    assert functions[1][1].endswith("vector_type text")
    # the user's function still depends on pgai's builder, so that one is kept, renamed
    assert functions[0] == (
        "_destination_table_5",
        "destination name, target_schema name, target_table name, view_schema name, view_name name",
    )
    create_source(conn, "docs")
    assert _create(conn, "ai.indexing_none()", vector_type="halfvec") > 0


def test_timescaledb_job_index_builder_uses_the_halfvec_opclass(
    conn: psycopg.Connection,
) -> None:
    conn.execute("create table h (id int primary key, embedding halfvec(3))")
    conn.execute("select ai._vectorizer_create_vector_index('public', 'h', ai.indexing_hnsw())")
    definition = conn.execute(
        "select indexdef from pg_indexes where tablename = 'h' and indexdef like '%hnsw%'"
    ).fetchone()
    assert definition is not None and "halfvec_cosine_ops" in definition[0]


def test_enable_hybrid_search_errors(conn: psycopg.Connection) -> None:
    conn.execute("create table flat (id int primary key, body text)")
    conn.execute(
        "select ai.create_vectorizer('flat'::regclass, name => 'flat',"
        f" loading => ai.loading_column('body'), embedding => ai.embedding_openai('{MODEL}', 8),"
        " chunking => ai.chunking_none(), destination => ai.destination_column('emb'))"
    )
    with pytest.raises(psycopg.errors.RaiseException, match="hybrid search needs a table"):
        conn.execute("select ai.enable_hybrid_search('flat')")
    with pytest.raises(psycopg.errors.RaiseException, match="vectorizer nope not found"):
        conn.execute("select ai.enable_hybrid_search('nope')")
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("select ai.enable_hybrid_search('flat', 'klingon')")


def test_status_command_shows_the_index_state(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    create_source(conn, "docs", doc_rows(6))
    ready = _create(conn, "ai.indexing_hnsw(min_rows => 5)")
    create_source(conn, "other", doc_rows(6))
    broken = _create(
        conn, "ai.indexing_hnsw(min_rows => 5, m => 1000)", table="other", name="other"
    )
    worker = run_worker(db_url, env=worker_env(fake_openai))

    result = cli("status", "--db-url", db_url)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    column = lines[1].index(" index ") + 1  # the table is aligned: the state starts there
    states = {line.split()[0]: line[column:].split()[0] for line in lines[2:4]}
    assert states[str(broken)] == "failed", result.stdout + worker.stderr
    assert states[str(ready)] == "ready"
    assert any(
        line.startswith("  ! other: vector index failed: ") and '"m"' in line
        for line in result.stdout.splitlines()
    )


def test_build_progress_reaches_the_status(conn: psycopg.Connection, db_url: str) -> None:
    """The watcher copies pg_stat_progress_create_index of a running build into the status."""
    create_source(conn, "docs")
    vid = _create(conn, "ai.indexing_none()")
    conn.execute(
        "insert into ai._vectorizer_index_build (vectorizer_id, state) values (%s, 'building')",
        (vid,),
    )
    conn.execute(
        "create table big as select i, array[random(), random(), random(), random()]::vector(4)"
        " as v from generate_series(1, 100000) i"
    )
    builder = IndexBuilder(db_url, vid, WorkerTracking(db_url, timedelta(seconds=5)))
    seen: list[str] = []

    async def build_and_watch() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as building:
            watcher = asyncio.create_task(builder._watch_progress(building.info.backend_pid))
            build = asyncio.create_task(
                building.execute("create index on big using hnsw (v vector_l2_ops)")
            )
            while not build.done():
                seen.append(_state(conn, vid))
                await asyncio.sleep(0.2)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await build

    asyncio.run(build_and_watch())

    progressed = [s for s in seen if re.fullmatch(r"building \d+% \(.+\)", s)]
    assert progressed, seen
    assert _state(conn, vid).startswith("building ")  # nothing marked it ready: no ANN index
