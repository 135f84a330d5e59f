"""Managing vectorizers: drop, disable/enable, queue depth, the status and errors views,
usage grants and set_scheduling.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

EMBEDDING = "ai.embedding_openai('text-embedding-3-small', 3)"
VEC = "'[1,2,3]'"
MAX_BIGINT = 9223372036854775807


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def exists(conn: psycopg.Connection, relation: str) -> bool:
    return one(conn, "select to_regclass(%s) is not null", (relation,))


def function_exists(conn: psycopg.Connection, signature: str) -> bool:
    return one(conn, "select to_regprocedure(%s) is not null", (signature,))


def triggers_on(conn: psycopg.Connection, relation: str) -> list[str]:
    rows = conn.execute(
        "select tgname::text from pg_trigger where tgrelid = %s::regclass and not tgisinternal"
        " order by tgname",
        (relation,),
    ).fetchall()
    return [r[0] for r in rows]


def create(conn: psycopg.Connection, source: str = "public.blog", **args: str) -> int:
    args.setdefault("loading", "ai.loading_column('body')")
    args.setdefault("embedding", EMBEDDING)
    named = "".join(f", {key} => {value}" for key, value in args.items())
    return one(conn, f"select ai.create_vectorizer('{source}'::regclass{named})")


COLUMN = {"destination": "ai.destination_column('embedding')", "chunking": "ai.chunking_none()"}


@pytest.fixture
def blog(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        create table public.blog (id int primary key, title text, body text not null);
        insert into public.blog values (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'z');
        """
    )


@pytest.fixture
def make_role(conn: psycopg.Connection) -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        name = f"vz_mgmt_{uuid.uuid4().hex[:10]}"
        conn.execute(sql.SQL("create role {}").format(sql.Identifier(name)))
        created.append(name)
        return name

    yield make
    conn.execute("reset role")
    for name in created:
        conn.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(name)))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


# --- drop_vectorizer -------------------------------------------------------------------------


def assert_runtime_objects_gone(conn: psycopg.Connection, vid: int) -> None:
    assert triggers_on(conn, "public.blog") == []
    assert not function_exists(conn, f"ai._vectorizer_src_trg_{vid}()")
    assert not exists(conn, f"ai._vectorizer_q_{vid}")
    assert not exists(conn, f"ai._vectorizer_q_failed_{vid}")
    assert one(conn, "select count(*) from ai.vectorizer where id = %s", (vid,)) == 0


def test_drop_by_id_keeps_target_and_view(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn)
    assert triggers_on(conn, "public.blog") == [
        f"_vectorizer_src_trg_{vid}",
        f"_vectorizer_src_trg_{vid}_truncate",
    ]
    conn.execute(
        "insert into public.blog_embedding_store (id, chunk_seq, chunk, embedding)"
        f" values (1, 0, 'c', {VEC})"
    )
    conn.execute("insert into ai._vectorizer_errors (id, message) values (%s, 'boom')", (vid,))
    wid = one(conn, "select ai._worker_start('0.1.0', interval '1 minute')")
    conn.execute("select ai._worker_progress(%s, %s, 1, null)", (wid, vid))

    conn.execute("select ai.drop_vectorizer(%s)", (vid,))

    assert_runtime_objects_gone(conn, vid)
    assert exists(conn, "public.blog_embedding_store")
    assert exists(conn, "public.blog_embedding")
    assert one(conn, "select count(*) from public.blog_embedding") == 1
    assert one(conn, "select count(*) from ai._vectorizer_errors") == 0
    assert one(conn, "select count(*) from ai.vectorizer_worker_progress") == 0
    # the source works without the trigger, and its data is untouched
    conn.execute(
        "insert into public.blog values (4, 'd', 'w'); delete from public.blog where id = 1"
    )
    conn.execute("truncate public.blog")
    assert one(conn, "select count(*) from public.blog_embedding_store") == 1


def test_drop_by_name(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn, name="'by_name'")
    conn.execute("select ai.drop_vectorizer('by_name')")
    assert_runtime_objects_gone(conn, vid)
    assert exists(conn, "public.blog_embedding_store")


def test_drop_all_drops_view_and_target(conn: psycopg.Connection, blog: None) -> None:
    conn.execute("create schema emb; create schema views")
    vid = create(
        conn,
        destination="ai.destination_table(target_schema => 'emb', view_schema => 'views')",
    )
    assert exists(conn, "views.blog_embedding")
    conn.execute("select ai.drop_vectorizer(%s, drop_all => true)", (vid,))
    assert_runtime_objects_gone(conn, vid)
    assert not exists(conn, "emb.blog_embedding_store")
    assert not exists(conn, "views.blog_embedding")
    assert exists(conn, "public.blog")


def test_drop_all_by_name(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn, name="'all_by_name'")
    conn.execute("select ai.drop_vectorizer('all_by_name', true)")
    assert_runtime_objects_gone(conn, vid)
    assert not exists(conn, "public.blog_embedding_store")
    assert not exists(conn, "public.blog_embedding")


@pytest.mark.parametrize("drop_all", [False, True])
def test_drop_never_drops_the_embedding_column(
    conn: psycopg.Connection, blog: None, drop_all: bool
) -> None:
    vid = create(conn, **COLUMN)
    conn.execute(f"update public.blog set embedding = {VEC} where id = 1")
    conn.execute("select ai.drop_vectorizer(%s, %s)", (vid, drop_all))
    assert_runtime_objects_gone(conn, vid)
    assert one(conn, "select count(*) from public.blog where embedding is not null") == 1


def test_drop_one_of_two_leaves_the_other_working(conn: psycopg.Connection, blog: None) -> None:
    first = create(conn, enqueue_existing="false")
    second = create(conn, enqueue_existing="false", **COLUMN)
    conn.execute("select ai.drop_vectorizer(%s, true)", (first,))
    assert triggers_on(conn, "public.blog") == [
        f"_vectorizer_src_trg_{second}",
        f"_vectorizer_src_trg_{second}_truncate",
    ]
    conn.execute("insert into public.blog values (9, 'n', 'new')")
    assert one(conn, f"select array_agg(id) from ai._vectorizer_q_{second}") == [9]


def test_drop_after_the_source_table_is_gone(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn)
    conn.execute("drop table public.blog cascade")
    conn.execute("select ai.drop_vectorizer(%s, drop_all => true)", (vid,))
    assert not function_exists(conn, f"ai._vectorizer_src_trg_{vid}()")
    assert not exists(conn, f"ai._vectorizer_q_{vid}")
    assert not exists(conn, "public.blog_embedding_store")
    assert one(conn, "select count(*) from ai.vectorizer") == 0


def test_drop_unknown_id_raises(conn: psycopg.Connection) -> None:
    with pytest.raises(errors.NoDataFound):
        conn.execute("select ai.drop_vectorizer(12345)")


def test_drop_unknown_name_does_nothing(conn: psycopg.Connection, blog: None) -> None:
    create(conn)
    conn.execute("select ai.drop_vectorizer('no_such_vectorizer')")
    conn.execute("select ai.drop_vectorizer('no_such_vectorizer', true)")
    assert one(conn, "select count(*) from ai.vectorizer") == 1


# --- disable / enable ------------------------------------------------------------------------


def disabled(conn: psycopg.Connection, vid: int) -> bool:
    return one(conn, "select disabled from ai.vectorizer where id = %s", (vid,))


def test_disable_and_enable_by_id(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn)
    other = create(conn, **COLUMN)
    assert not disabled(conn, vid)
    conn.execute("select ai.disable_vectorizer_schedule(%s)", (vid,))
    assert disabled(conn, vid)
    assert not disabled(conn, other)
    # a disabled vectorizer keeps queueing
    conn.execute("insert into public.blog values (5, 'e', 'v')")
    assert one(conn, "select ai.vectorizer_queue_pending(%s)", (vid,)) == 4
    conn.execute("select ai.enable_vectorizer_schedule(%s)", (vid,))
    assert not disabled(conn, vid)


def test_disable_and_enable_by_name(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn, name="'switch'")
    conn.execute("select ai.disable_vectorizer_schedule('switch')")
    assert disabled(conn, vid)
    conn.execute("select ai.disable_vectorizer_schedule('switch')")
    assert disabled(conn, vid)
    conn.execute("select ai.enable_vectorizer_schedule('switch')")
    assert not disabled(conn, vid)


def test_enable_wakes_the_workers(conn: psycopg.Connection, db_url: str, blog: None) -> None:
    vid = create(conn)
    conn.execute("select ai.disable_vectorizer_schedule(%s)", (vid,))
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ai_vectorizer_queue")
        conn.execute("select ai.enable_vectorizer_schedule(%s)", (vid,))
        assert [n.payload for n in listener.notifies(timeout=5, stop_after=1)] == [str(vid)]


@pytest.mark.parametrize("function", ["disable_vectorizer_schedule", "enable_vectorizer_schedule"])
def test_unknown_id_raises_unknown_name_does_nothing(
    conn: psycopg.Connection, function: str
) -> None:
    with pytest.raises(errors.NoDataFound):
        conn.execute(f"select ai.{function}(4242)")
    conn.execute(f"select ai.{function}('no_such_vectorizer')")


# --- queue depth -----------------------------------------------------------------------------


def test_queue_pending(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn, name="'pending'")
    assert one(conn, "select ai.vectorizer_queue_pending(%s)", (vid,)) == 3
    assert one(conn, "select ai.vectorizer_queue_pending(%s, exact_count => true)", (vid,)) == 3
    assert one(conn, "select ai.vectorizer_queue_pending('pending')") == 3
    # duplicates count separately
    conn.execute("update public.blog set body = body || '!'")
    assert one(conn, "select ai.vectorizer_queue_pending('pending', true)") == 6


def test_queue_pending_approximates_above_10000(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn, name="'big'", enqueue_existing="false")
    queue = f"ai._vectorizer_q_{vid}"
    conn.execute(f"insert into {queue} (id) select generate_series(1, 10000)")
    assert one(conn, "select ai.vectorizer_queue_pending(%s)", (vid,)) == 10000
    conn.execute(f"insert into {queue} (id) values (10001)")
    assert one(conn, "select ai.vectorizer_queue_pending(%s)", (vid,)) == MAX_BIGINT
    assert one(conn, "select ai.vectorizer_queue_pending('big')") == MAX_BIGINT
    assert one(conn, "select ai.vectorizer_queue_pending(%s, exact_count => true)", (vid,)) == 10001
    assert one(conn, "select ai.vectorizer_queue_pending('big', exact_count => true)") == 10001


def test_queue_pending_unknown(conn: psycopg.Connection) -> None:
    assert one(conn, "select ai.vectorizer_queue_pending('no_such_vectorizer')") is None
    with pytest.raises(errors.RaiseException) as info:
        conn.execute("select ai.vectorizer_queue_pending(999)")
    assert info.value.diag.message_primary == "vectorizer has no queue table"


# --- status and errors views -----------------------------------------------------------------


PGAI_STATUS_COLUMNS = [
    "id",
    "name",
    "source_table",
    "target_table",
    "view",
    "embedding_column",
    "pending_items",
    "disabled",
]


def status(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """pgai's columns of ai.vectorizer_status (ours follow them; tests/test_status.py)."""
    cursor = conn.execute("select * from ai.vectorizer_status order by id")
    names = [c.name for c in cursor.description or []]
    assert names[: len(PGAI_STATUS_COLUMNS)] == PGAI_STATUS_COLUMNS
    return [
        dict(zip(PGAI_STATUS_COLUMNS, row[: len(PGAI_STATUS_COLUMNS)], strict=True))
        for row in cursor.fetchall()
    ]


def test_status_view(conn: psycopg.Connection, blog: None) -> None:
    conn.execute("create schema emb")
    table = create(conn, destination="ai.destination_table(target_schema => 'emb')")
    column = create(conn, enqueue_existing="false", **COLUMN)
    conn.execute("select ai.disable_vectorizer_schedule(%s)", (column,))
    assert status(conn) == [
        {
            "id": table,
            "name": "emb_blog_embedding_store",
            "source_table": "public.blog",
            "target_table": "emb.blog_embedding_store",
            "view": "public.blog_embedding",
            "embedding_column": "embedding",
            "pending_items": 3,
            "disabled": False,
        },
        {
            "id": column,
            "name": "public_blog_embedding",
            "source_table": "public.blog",
            "target_table": None,
            "view": None,
            "embedding_column": "embedding",
            "pending_items": 0,
            "disabled": True,
        },
    ]


def test_status_view_quotes_names(conn: psycopg.Connection) -> None:
    conn.execute(
        'create schema "My Schema"; create table "My Schema"."T" (id int primary key, body text)'
    )
    vid = create(
        conn,
        '"My Schema"."T"',
        name="'odd'",
        destination="ai.destination_column('Emb Col')",
        chunking="ai.chunking_none()",
    )
    row = status(conn)[0]
    assert row["id"] == vid
    assert row["source_table"] == '"My Schema"."T"'
    assert row["embedding_column"] == "Emb Col"
    assert row["pending_items"] == 0


def test_status_survives_a_missing_queue_table(conn: psycopg.Connection, blog: None) -> None:
    # one broken vectorizer must not hide the others from monitoring
    broken = create(conn, name="'broken'")
    healthy = create(conn, name="'healthy'", **COLUMN)
    conn.execute(f"drop table ai._vectorizer_q_{broken}")
    rows = {row["id"]: row for row in status(conn)}
    assert rows[healthy]["pending_items"] == 3
    assert rows[broken]["pending_items"] is None
    assert rows[broken]["name"] == "broken"


def test_status_pending_items_needs_select_on_the_queue(
    conn: psycopg.Connection, blog: None, make_role: Callable[[], str]
) -> None:
    viewer = make_role()
    create(conn)
    conn.execute(sql.SQL("select ai.grant_vectorizer_usage({})").format(sql.Literal(viewer)))
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(viewer)))
    try:
        rows = status(conn)
    finally:
        conn.execute("reset role")
    assert len(rows) == 1
    assert rows[0]["pending_items"] is None
    assert rows[0]["name"] == "public_blog_embedding_store"


def test_errors_view(conn: psycopg.Connection, blog: None) -> None:
    first = create(conn, name="'first'")
    second = create(conn, name="'second'", **COLUMN)
    conn.execute(
        """
        insert into ai._vectorizer_errors (id, message, details) values
          (%s, 'loading failed', '{"pk": {"id": 1}}')
        , (%s, 'embedding failed', null)
        """,
        (first, second),
    )
    cursor = conn.execute("select * from ai.vectorizer_errors order by id")
    assert [c.name for c in cursor.description or []] == [
        "id",
        "message",
        "details",
        "recorded",
        "name",
    ]
    rows = [(r[0], r[1], r[2], r[4]) for r in cursor.fetchall()]
    assert rows == [
        (first, "loading failed", {"pk": {"id": 1}}, "first"),
        (second, "embedding failed", None, "second"),
    ]


# --- grant_vectorizer_usage ------------------------------------------------------------------

TABLES = [
    "ai.vectorizer",
    "ai._vectorizer_errors",
    "ai.vectorizer_errors",
    "ai.vectorizer_status",
    "ai.pgai_lib_migration",
    "ai.pgai_lib_version",
    "ai.pgai_lib_feature_flag",
    "ai.vectorizer_worker_process",
    "ai.vectorizer_worker_progress",
]
PRIVILEGES = ["select", "insert", "update", "delete", "truncate"]


def table_privileges(conn: psycopg.Connection, role: str) -> dict[str, set[str]]:
    return {
        table: {
            p
            for p in PRIVILEGES
            if one(conn, "select has_table_privilege(%s, %s, %s)", (role, table, p))
        }
        for table in TABLES
    }


def test_grant_vectorizer_usage_non_admin(
    conn: psycopg.Connection, make_role: Callable[[], str]
) -> None:
    role = make_role()
    conn.execute("select ai.grant_vectorizer_usage(%s)", (role,))
    assert table_privileges(conn, role) == {
        "ai.vectorizer": {"select", "insert", "update", "delete"},
        "ai._vectorizer_errors": {"select"},
        "ai.vectorizer_errors": {"select"},
        "ai.vectorizer_status": {"select"},
        "ai.pgai_lib_migration": set(),
        "ai.pgai_lib_version": set(),
        "ai.pgai_lib_feature_flag": set(),
        "ai.vectorizer_worker_process": set(),
        "ai.vectorizer_worker_progress": set(),
    }
    assert one(conn, "select has_schema_privilege(%s, 'ai', 'usage')", (role,))
    assert one(conn, "select has_schema_privilege(%s, 'ai', 'create')", (role,))
    for privilege in ("select", "usage"):
        assert one(
            conn, "select has_sequence_privilege(%s, 'ai.vectorizer_id_seq', %s)", (role, privilege)
        )
    assert not one(
        conn, "select has_sequence_privilege(%s, 'ai.vectorizer_id_seq', 'update')", (role,)
    )


# Our status view reads these besides pgai's tables; without select on them a granted viewer
# would see NULL for empty_rows, chunks_reused, index_state and hybrid settings.
OUR_STATUS_TABLES = [
    "ai._vectorizer_empty_input",
    "ai._vectorizer_reuse_stats",
    "ai._vectorizer_index_build",
    "ai._vectorizer_fulltext",
    "ai._vectorizer_column_hash",
    "ai._vectorizer_config_version",
    "ai._vectorizer_reembed",
]


def test_grant_vectorizer_usage_covers_our_status_tables(
    conn: psycopg.Connection, make_role: Callable[[], str]
) -> None:
    viewer, admin = make_role(), make_role()
    conn.execute("select ai.grant_vectorizer_usage(%s)", (viewer,))
    conn.execute("select ai.grant_vectorizer_usage(%s, admin => true)", (admin,))
    for table in OUR_STATUS_TABLES:
        assert one(conn, "select has_table_privilege(%s, %s, 'select')", (viewer, table)), table
        assert one(conn, "select has_table_privilege(%s, %s, 'delete')", (admin, table)), table


def test_grant_vectorizer_usage_admin(
    conn: psycopg.Connection, make_role: Callable[[], str]
) -> None:
    role = make_role()
    conn.execute("select ai.grant_vectorizer_usage(%s, admin => true)", (role,))
    everything = set(PRIVILEGES)
    assert table_privileges(conn, role) == {
        "ai.vectorizer": everything,
        "ai._vectorizer_errors": everything,
        "ai.vectorizer_errors": everything,
        "ai.vectorizer_status": everything,
        "ai.pgai_lib_migration": everything,
        "ai.pgai_lib_version": everything,
        "ai.pgai_lib_feature_flag": everything,
        "ai.vectorizer_worker_process": set(),
        "ai.vectorizer_worker_progress": set(),
    }
    for privilege in ("usage", "create"):
        assert one(conn, "select has_schema_privilege(%s, 'ai', %s)", (role, privilege))
    for privilege in ("select", "usage", "update"):
        assert one(
            conn, "select has_sequence_privilege(%s, 'ai.vectorizer_id_seq', %s)", (role, privilege)
        )


def test_grant_vectorizer_usage_to_an_odd_role_name(conn: psycopg.Connection) -> None:
    role = f"Vz Odd {uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("create role {}").format(sql.Identifier(role)))
    try:
        conn.execute("select ai.grant_vectorizer_usage(%s)", (role,))
        assert one(conn, "select has_table_privilege(%s, 'ai.vectorizer', 'select')", (role,))
    finally:
        conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


# --- set_scheduling --------------------------------------------------------------------------


def test_set_scheduling_none_without_timescaledb(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn)
    before = one(conn, "select config from ai.vectorizer where id = %s", (vid,))
    returned = one(
        conn,
        "select ai.set_scheduling(%s, ai.scheduling_none(), ai.indexing_none())",
        (vid,),
    )
    after = one(conn, "select config from ai.vectorizer where id = %s", (vid,))
    assert returned == after
    assert after["scheduling"] == {"implementation": "none", "config_type": "scheduling"}
    assert after["indexing"] == {"implementation": "none", "config_type": "indexing"}
    assert {k: v for k, v in after.items() if k not in ("scheduling", "indexing")} == {
        k: v for k, v in before.items() if k not in ("scheduling", "indexing")
    }


def test_set_scheduling_defaults_resolve(conn: psycopg.Connection, blog: None) -> None:
    vid = create(conn)
    config = one(conn, "select ai.set_scheduling(%s)", (vid,))
    assert config["scheduling"] == {"implementation": "none", "config_type": "scheduling"}
    # unlike pgai (none): the worker builds an HNSW index by default
    assert config["indexing"] == one(conn, "select ai.indexing_hnsw()")


def test_set_scheduling_accepts_indexing_without_scheduling(
    conn: psycopg.Connection, blog: None
) -> None:
    # pgai refused this; our worker builds the index itself
    vid = create(conn)
    config = one(
        conn, "select ai.set_scheduling(%s, ai.scheduling_none(), ai.indexing_hnsw())", (vid,)
    )
    assert config["indexing"]["implementation"] == "hnsw"


def test_set_scheduling_timescaledb_without_timescaledb(
    conn: psycopg.Connection, blog: None
) -> None:
    vid = create(conn)
    with pytest.raises(errors.RaiseException) as info:
        conn.execute(
            "select ai.set_scheduling(%s, ai.scheduling_timescaledb(), ai.indexing_none())", (vid,)
        )
    assert (info.value.diag.message_primary or "").startswith("timescaledb extension not found")
    config = one(conn, "select config from ai.vectorizer where id = %s", (vid,))
    assert config["scheduling"] == {"implementation": "none", "config_type": "scheduling"}


def test_set_scheduling_unknown_id(conn: psycopg.Connection) -> None:
    with pytest.raises(errors.NoDataFound):
        conn.execute("select ai.set_scheduling(777, ai.scheduling_none(), ai.indexing_none())")
