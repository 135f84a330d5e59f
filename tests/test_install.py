"""The installer (vectorizer/install.py) and `vectorizer install`, against a real Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO_ROOT
from vectorizer import PGAI_COMPAT_VERSION, __version__
from vectorizer.install import SQL_DIR, install, installed_version

MIGRATIONS = sorted(
    f.name.removesuffix(".sql")
    for f in (SQL_DIR / "migrations").iterdir()
    if f.name.endswith(".sql")
)


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("VECTORIZER_DB_URL", "DATABASE_URL")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "vectorizer", *args],
        cwd=REPO_ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


BAD_URL = "postgresql://vz_nobody@127.0.0.1:1/nowhere?connect_timeout=3"


# --- the library call ------------------------------------------------------------------------


def test_install_into_an_empty_database(empty_db_url: str) -> None:
    with connect(empty_db_url) as conn:
        assert installed_version(conn) is None
        assert install(empty_db_url) is True
        assert one(conn, "select count(*) from pg_extension where extname = 'vector'") == 1
        assert one(conn, "select count(*) from pg_namespace where nspname = 'ai'") == 1
        for relation in (
            "ai.vectorizer",
            "ai._vectorizer_errors",
            "ai.vectorizer_errors",
            "ai.vectorizer_status",
            "ai.vectorizer_worker_process",
            "ai.vectorizer_worker_progress",
            "ai.pgai_lib_version",
            "ai.pgai_lib_migration",
            "ai.pgai_lib_feature_flag",
        ):
            assert one(conn, "select to_regclass(%s) is not null", (relation,)), relation
        for function in (
            "ai.create_vectorizer(regclass,text,jsonb,jsonb,jsonb,jsonb,jsonb,jsonb,jsonb,jsonb,"
            "jsonb,name,name,name[],boolean,boolean)",
            "ai.drop_vectorizer(integer,boolean)",
            "ai._worker_start(text,interval)",
        ):
            assert one(conn, "select to_regprocedure(%s) is not null", (function,)), function
        assert installed_version(conn) == __version__
        assert conn.execute("select name, version from ai.pgai_lib_version").fetchall() == [
            ("ai", PGAI_COMPAT_VERSION)
        ]
        assert PGAI_COMPAT_VERSION == "0.12.1"
        assert conn.execute(
            "select name, applied_at_version from ai._vectorizer_lib_migration order by name"
        ).fetchall() == [(name, __version__) for name in MIGRATIONS]
        assert MIGRATIONS[0] == "001-catalog"


def test_reinstall_is_a_no_op(empty_db_url: str) -> None:
    assert install(empty_db_url) is True
    with connect(empty_db_url) as conn:
        before = conn.execute("select * from ai._vectorizer_lib_version").fetchall()
        pgai_before = conn.execute("select * from ai.pgai_lib_version").fetchall()
        # a no-op must not re-run the idempotent files: a replaced function stays replaced
        conn.execute(
            "create or replace function ai.vectorizer_queue_pending"
            "(name text, exact_count bool default false)"
            " returns int8 as 'select -1::int8' language sql"
        )
        assert install(empty_db_url) is False
        assert conn.execute("select * from ai._vectorizer_lib_version").fetchall() == before
        assert conn.execute("select * from ai.pgai_lib_version").fetchall() == pgai_before
        assert one(conn, "select ai.vectorizer_queue_pending('x', false)") == -1
        assert one(conn, "select count(*) from ai._vectorizer_lib_migration") == len(MIGRATIONS)


def test_reinstall_on_the_fixture_database(db_url: str) -> None:
    assert install(db_url) is False


def test_install_with_vector_in_another_schema(empty_db_url: str) -> None:
    with connect(empty_db_url) as conn:
        conn.execute("create schema vex; create extension vector schema vex")
        assert install(empty_db_url) is True
        conn.execute("create table public.t (id int primary key, body text)")
        conn.execute(
            "select ai.create_vectorizer('public.t'::regclass, loading => ai.loading_column('body')"
            ", embedding => ai.embedding_openai('m', 4))"
        )
        assert (
            one(
                conn,
                "select format_type(atttypid, atttypmod) from pg_attribute"
                " where attrelid = 'public.t_embedding_store'::regclass and attname = 'embedding'",
            )
            == "vex.vector(4)"
        )
        assert one(conn, "select count(*) from pg_extension where extname = 'vector'") == 1


def test_concurrent_installs(empty_db_url: str) -> None:
    results: list[bool] = []
    failures: list[BaseException] = []
    start = threading.Barrier(5)

    def worker() -> None:
        try:
            start.wait(timeout=30)
            results.append(install(empty_db_url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert sorted(results) == [False, False, False, False, True]
    with connect(empty_db_url) as conn:
        assert one(conn, "select count(*) from ai._vectorizer_lib_version") == 1
        assert one(conn, "select count(*) from ai._vectorizer_lib_migration") == len(MIGRATIONS)
        assert one(conn, "select count(*) from ai.pgai_lib_version") == 1
        assert one(conn, "select count(*) from pg_extension where extname = 'vector'") == 1


def test_reinstall_regenerates_trigger_functions(db_url: str) -> None:
    with connect(db_url) as conn:
        conn.execute(
            """
            create table public.blog (id int primary key, body text);
            select ai.create_vectorizer('public.blog'::regclass
            , loading => ai.loading_column('body')
            , embedding => ai.embedding_openai('m', 3)
            , enqueue_existing => false);
            select ai.create_vectorizer('public.blog'::regclass
            , loading => ai.loading_column('body')
            , embedding => ai.embedding_openai('m', 3)
            , destination => ai.destination_column('emb')
            , chunking => ai.chunking_none()
            , enqueue_existing => false);
            """
        )
        ids = [r[0] for r in conn.execute("select id from ai.vectorizer order by id").fetchall()]
        original = {
            vid: one(
                conn,
                "select prosrc from pg_proc where oid = %s::regprocedure",
                (f"ai._vectorizer_src_trg_{vid}()",),
            )
            for vid in ids
        }
        for vid in ids:
            conn.execute(
                f"create or replace function ai._vectorizer_src_trg_{vid}() returns trigger"
                " as $$begin raise exception 'broken trigger'; end$$ language plpgsql"
            )
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("insert into public.blog values (1, 'x')")

        # same version and checksum: a no-op leaves the broken body
        assert install(db_url) is False
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("insert into public.blog values (1, 'x')")

        conn.execute("update ai._vectorizer_lib_version set checksum = 'stale'")
        assert install(db_url) is True
        for vid in ids:
            row = conn.execute(
                "select prosrc, prosecdef, proconfig,"
                " has_function_privilege('public', oid, 'execute')"
                " from pg_proc where oid = %s::regprocedure",
                (f"ai._vectorizer_src_trg_{vid}()",),
            ).fetchone()
            assert row == (original[vid], True, ["search_path=pg_catalog, pg_temp"], False)
        conn.execute("insert into public.blog values (1, 'x')")
        for vid in ids:
            assert one(conn, f"select array_agg(id) from ai._vectorizer_q_{vid}") == [1]
        assert one(conn, "select checksum from ai._vectorizer_lib_version") != "stale"


def test_reinstall_survives_a_vectorizer_whose_source_is_gone(db_url: str) -> None:
    with connect(db_url) as conn:
        conn.execute(
            """
            create table public.gone (id int primary key, body text);
            select ai.create_vectorizer('public.gone'::regclass
            , loading => ai.loading_column('body')
            , embedding => ai.embedding_openai('m', 3));
            drop table public.gone cascade;
            update ai._vectorizer_lib_version set checksum = 'stale';
            """
        )
        assert install(db_url) is True
        assert one(conn, "select count(*) from ai.vectorizer") == 1


def test_changed_sql_is_reapplied(db_url: str) -> None:
    # a different recorded version (an upgrade) re-runs the idempotent files
    with connect(db_url) as conn:
        conn.execute("drop function ai.vectorizer_queue_pending(text, boolean)")
        conn.execute("update ai._vectorizer_lib_version set version = '0.0.1'")
        assert installed_version(conn) == "0.0.1"
        assert install(db_url) is True
        assert installed_version(conn) == __version__
        assert one(
            conn, "select to_regprocedure('ai.vectorizer_queue_pending(text,boolean)') is not null"
        )


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_install_and_reinstall(empty_db_url: str) -> None:
    first = run_cli("install", "--db-url", empty_db_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"vectorizer {__version__} installed"
    second = run_cli("install", "-d", empty_db_url)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"vectorizer {__version__} is already installed"
    with connect(empty_db_url) as conn:
        assert installed_version(conn) == __version__


def test_cli_vectorizer_db_url_env(empty_db_url: str) -> None:
    result = run_cli("install", env={"VECTORIZER_DB_URL": empty_db_url, "DATABASE_URL": BAD_URL})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"vectorizer {__version__} installed"


def test_cli_database_url_env(empty_db_url: str) -> None:
    result = run_cli("install", env={"DATABASE_URL": empty_db_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"vectorizer {__version__} installed"
    with connect(empty_db_url) as conn:
        assert installed_version(conn) == __version__


def test_cli_flag_beats_env(empty_db_url: str) -> None:
    result = run_cli(
        "install",
        "--db-url",
        empty_db_url,
        env={"VECTORIZER_DB_URL": BAD_URL, "DATABASE_URL": BAD_URL},
    )
    assert result.returncode == 0, result.stderr


def test_cli_bad_url() -> None:
    result = run_cli("install", "--db-url", BAD_URL)
    assert result.returncode == 1
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("error: ")
    assert "Traceback" not in message
    assert "127.0.0.1" in message or "connect" in message.lower()


def test_cli_malformed_url() -> None:
    result = run_cli("install", "--db-url", "not a url at all =")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
