"""Installs or upgrades the `ai` schema in a database.

`vectorizer/sql/migrations/*.sql` run once each, in name order, and are recorded;
`vectorizer/sql/idempotent/*.sql` run on every install. They ship inside the package and are read
with importlib.resources, so an installed wheel and a checkout read the same files. Everything
happens in one transaction under an advisory lock, so concurrent installs serialise and a failed
install leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql

from vectorizer.version import PGAI_COMPAT_VERSION, __version__

log = logging.getLogger(__name__)

SQL_DIR: Traversable = resources.files("vectorizer") / "sql"
MIN_SERVER_VERSION = 15
# an arbitrary constant: the advisory lock that serialises installs in one database
INSTALL_LOCK_KEY = 7_305_166_421


class InstallError(RuntimeError):
    """The database cannot take the schema; the message says why and what to do."""


@dataclass(frozen=True)
class SqlFile:
    name: str
    body: str


def _read_dir(kind: str) -> list[SqlFile]:
    files = sorted(
        (f for f in (SQL_DIR / kind).iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
    )
    return [SqlFile(name=f.name.removesuffix(".sql"), body=f.read_text("utf-8")) for f in files]


def sql_checksum(files: list[SqlFile]) -> str:
    digest = hashlib.sha256(__version__.encode())
    for sql_file in files:
        digest.update(sql_file.name.encode())
        digest.update(sql_file.body.encode())
    return digest.hexdigest()


def resolve_db_url(db_url: str | None) -> str:
    """--db-url, else VECTORIZER_DB_URL, else pgai's PGAI_VECTORIZER_WORKER_DB_URL, else
    DATABASE_URL, else libpq's defaults ("")."""
    return (
        db_url
        or os.environ.get("VECTORIZER_DB_URL")
        or os.environ.get("PGAI_VECTORIZER_WORKER_DB_URL")
        or os.environ.get("DATABASE_URL")
        or ""
    )


def _check_server_version(conn: psycopg.Connection) -> None:
    row = conn.execute("select current_setting('server_version_num')::int").fetchone()
    assert row is not None
    major = row[0] // 10000
    if major < MIN_SERVER_VERSION:
        raise InstallError(
            f"postgres {major} is unsupported, vectorizer requires postgres version "
            f"{MIN_SERVER_VERSION} or greater"
        )


def _ensure_vector_extension(conn: psycopg.Connection) -> str:
    available = conn.execute(
        "select exists (select 1 from pg_catalog.pg_available_extensions where name = 'vector')"
    ).fetchone()
    installed = _vector_schema(conn)
    if installed:
        return installed
    if not (available and available[0]):
        raise InstallError(
            "the pgvector extension (`vector`) is not available on this Postgres server: "
            "install pgvector on the server (e.g. the postgresql-NN-pgvector package, or "
            "build it from https://github.com/pgvector/pgvector), then run "
            "`vectorizer install` again"
        )
    try:
        with conn.transaction():
            conn.execute("create extension if not exists vector")
    except psycopg.errors.InsufficientPrivilege as exc:
        raise InstallError(
            "could not create the `vector` extension: permission denied. Ask a superuser "
            "(or the database owner on PG 15+ with trusted extensions) to run "
            "`CREATE EXTENSION vector;` in this database, then run `vectorizer install` again"
        ) from exc
    schema = _vector_schema(conn)
    if not schema:
        raise InstallError("vector extension not installed")
    return schema


def _vector_schema(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        """
        select n.nspname from pg_catalog.pg_extension x
        join pg_catalog.pg_namespace n on n.oid = x.extnamespace
        where x.extname = 'vector'
        """
    ).fetchone()
    return row[0] if row else None


def _render(body: str, vector_schema: str) -> str:
    quoted = sql.Identifier(vector_schema).as_string()
    return body.replace("@extschema:vector@", quoted).replace(
        "@vectorizer_config_version@", PGAI_COMPAT_VERSION
    )


_BOOKKEEPING = """
set local search_path = pg_catalog, pg_temp;
create schema if not exists ai;
create table if not exists ai._vectorizer_lib_migration
( name text not null primary key
, applied_at_version text not null
, applied_at timestamptz not null default clock_timestamp()
, body text not null
);
create table if not exists ai._vectorizer_lib_version
( name text not null primary key
, version text not null
, checksum text not null
, installed_at timestamptz not null default clock_timestamp()
);
"""


def _installed(conn: psycopg.Connection) -> tuple[str, str] | None:
    row = conn.execute(
        "select version, checksum from ai._vectorizer_lib_version where name = 'vectorizer'"
    ).fetchone()
    return (row[0], row[1]) if row else None


def _apply_migrations(conn: psycopg.Connection, vector_schema: str) -> list[str]:
    applied = {
        name: body
        for name, body in conn.execute("select name, body from ai._vectorizer_lib_migration")
    }
    ran: list[str] = []
    for migration in _read_dir("migrations"):
        if migration.name in applied:
            if applied[migration.name] != migration.body:
                log.warning("the contents of migration %r have changed", migration.name)
            continue
        conn.execute(_render(migration.body, vector_schema))
        conn.execute(
            "insert into ai._vectorizer_lib_migration (name, applied_at_version, body)"
            " values (%s, %s, %s)",
            (migration.name, __version__, migration.body),
        )
        ran.append(migration.name)
    return ran


def _apply_idempotent(conn: psycopg.Connection, vector_schema: str) -> None:
    for sql_file in _read_dir("idempotent"):
        conn.execute(_render(sql_file.body, vector_schema))


def _regenerate_triggers(conn: psycopg.Connection) -> int:
    rows = conn.execute(
        "select ai._vectorizer_regenerate_trigger_function(id) from ai.vectorizer order by id"
    ).fetchall()
    return len(rows)


def _record_version(conn: psycopg.Connection, checksum: str) -> None:
    conn.execute(
        """
        insert into ai._vectorizer_lib_version (name, version, checksum)
        values ('vectorizer', %s, %s)
        on conflict (name) do update
        set version = excluded.version, checksum = excluded.checksum,
            installed_at = clock_timestamp()
        """,
        (__version__, checksum),
    )
    # pgai's marker: pgai tooling (and its worker) read it to tell the schema is present
    conn.execute(
        """
        insert into ai.pgai_lib_version (name, version) values ('ai', %s)
        on conflict (name) do update set version = excluded.version
        """,
        (PGAI_COMPAT_VERSION,),
    )


def install(db_url: str | None = None) -> bool:
    """Installs or upgrades the schema. Returns False when it was already up to date."""
    url = resolve_db_url(db_url)
    all_files = _read_dir("migrations") + _read_dir("idempotent")
    checksum = sql_checksum(all_files)
    with psycopg.connect(url, autocommit=True) as conn:
        _check_server_version(conn)
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (INSTALL_LOCK_KEY,))
            vector_schema = _ensure_vector_extension(conn)
            conn.execute(_BOOKKEEPING)
            if _installed(conn) == (__version__, checksum):
                log.debug("vectorizer %s is already installed", __version__)
                return False
            migrations = _apply_migrations(conn, vector_schema)
            _apply_idempotent(conn, vector_schema)
            triggers = _regenerate_triggers(conn)
            _record_version(conn, checksum)
    # debug: the CLI prints the outcome itself, and a library caller reads the return value
    log.debug(
        "vectorizer %s installed (%d migrations applied, %d trigger functions regenerated)",
        __version__,
        len(migrations),
        triggers,
    )
    return True


def installed_version(conn: psycopg.Connection) -> str | None:
    """The schema version recorded in the database, or None when it is not installed."""
    row = conn.execute("select to_regclass('ai._vectorizer_lib_version') is not null").fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute(
        "select version from ai._vectorizer_lib_version where name = 'vectorizer'"
    ).fetchone()
    return version[0] if version else None
