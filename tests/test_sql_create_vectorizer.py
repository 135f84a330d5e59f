"""ai.create_vectorizer on a real Postgres: the catalog row, every object it creates, its
errors, privileges and grants, and odd or hostile names and keys end to end.
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

RECURSIVE_CHUNKING = {
    "implementation": "recursive_character_text_splitter",
    "config_type": "chunking",
    "chunk_size": 800,
    "chunk_overlap": 400,
    "separators": ["\n\n", "\n", ".", "?", "!", " ", ""],
    "is_separator_regex": False,
}


# --- helpers ---------------------------------------------------------------------------------


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def all_rows(conn: psycopg.Connection, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def lit(conn: psycopg.Connection, value: str) -> str:
    return sql.Literal(value).as_string(conn)


def create_sql(conn: psycopg.Connection, source: str = "public.blog", **args: str) -> str:
    """`select ai.create_vectorizer(...)`; keyword values are SQL expressions."""
    args.setdefault("loading", "ai.loading_column('body')")
    args.setdefault("embedding", EMBEDDING)
    named = "".join(f"\n, {key} => {value}" for key, value in args.items() if value is not None)
    return f"select ai.create_vectorizer({lit(conn, source)}::regclass{named})"


def create(conn: psycopg.Connection, source: str = "public.blog", **args: str) -> int:
    return one(conn, create_sql(conn, source, **args))


def raises(
    conn: psycopg.Connection,
    query: str,
    exc: type[Exception] = errors.RaiseException,
) -> str:
    with pytest.raises(exc) as info:
        conn.execute(query)
    error = info.value
    assert isinstance(error, psycopg.Error)
    message = error.diag.message_primary
    assert message is not None
    return message


def vectorizer(conn: psycopg.Connection, vectorizer_id: int) -> dict[str, Any]:
    return one(conn, "select to_jsonb(v) from ai.vectorizer v where v.id = %s", (vectorizer_id,))


def regclass_exists(conn: psycopg.Connection, name: str) -> bool:
    return one(conn, "select to_regclass(%s) is not null", (name,))


def columns(conn: psycopg.Connection, relation: str) -> list[tuple[str, str, bool]]:
    """(name, format_type, not null) in attnum order."""
    return [
        (r[0], r[1], r[2])
        for r in all_rows(
            conn,
            """
            select a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
            from pg_attribute a
            where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped
            order by a.attnum
            """,
            (relation,),
        )
    ]


def queue_keys(conn: psycopg.Connection, vectorizer_id: int, cols: str = "id") -> list[Any]:
    v = vectorizer(conn, vectorizer_id)
    query = sql.SQL("select {} from {}.{} order by 1").format(
        sql.SQL(cols),
        sql.Identifier(v["queue_schema"]),
        sql.Identifier(v["queue_table"]),
    )
    return [r[0] if len(r) == 1 else tuple(r) for r in conn.execute(query).fetchall()]


class Notices:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, diag: psycopg.errors.Diagnostic) -> None:
        self.items.append((diag.severity or "", diag.message_primary or ""))


@pytest.fixture
def notices(conn: psycopg.Connection) -> Iterator[Notices]:
    collected = Notices()
    conn.add_notice_handler(collected)
    yield collected
    conn.remove_notice_handler(collected)


@pytest.fixture
def make_role(conn: psycopg.Connection) -> Iterator[Callable[..., str]]:
    """Creates cluster-wide roles with unique names; drops them (and their grants) after."""
    created: list[str] = []

    def make(prefix: str = "vz_role") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn.execute(sql.SQL("create role {}").format(sql.Identifier(name)))
        created.append(name)
        return name

    yield make
    conn.execute("reset role")
    for name in reversed(created):
        conn.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(name)))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


@pytest.fixture
def blog(conn: psycopg.Connection) -> str:
    conn.execute(
        """
        create table public.blog
        ( id int not null primary key
        , title text not null
        , published timestamptz
        , body text not null
        , category text
        );
        insert into public.blog (id, title, published, body, category) values
          (1, 'one', '2024-01-01', 'first body', 'a')
        , (2, 'two', '2024-01-02', 'second body', 'b')
        , (3, 'three', null, 'third body', null);
        """
    )
    return "public.blog"


# --- the catalog row -------------------------------------------------------------------------


def test_vectorizer_row_as_json(conn: psycopg.Connection, blog: str) -> None:
    vid = create(conn, formatting="ai.formatting_python_template('$title: $chunk')")
    assert vectorizer(conn, vid) == {
        "id": vid,
        "name": "public_blog_embedding_store",
        "source_schema": "public",
        "source_table": "blog",
        "source_pk": [{"attnum": 1, "pknum": 1, "attname": "id", "typname": "integer"}],
        "trigger_name": f"_vectorizer_src_trg_{vid}",
        "queue_schema": "ai",
        "queue_table": f"_vectorizer_q_{vid}",
        "queue_failed_table": f"_vectorizer_q_failed_{vid}",
        "disabled": False,
        "config": {
            "version": "0.12.1",
            "loading": {
                "implementation": "column",
                "config_type": "loading",
                "column_name": "body",
                "retries": 6,
            },
            "parsing": {"implementation": "auto", "config_type": "parsing"},
            "embedding": {
                "implementation": "openai",
                "config_type": "embedding",
                "model": "text-embedding-3-small",
                "dimensions": 3,
                "api_key_name": "OPENAI_API_KEY",
            },
            "chunking": RECURSIVE_CHUNKING,
            # unlike pgai (none): indexing_default() is an HNSW index the worker builds
            "indexing": {
                "implementation": "hnsw",
                "config_type": "indexing",
                "min_rows": 100000,
                "opclass": "vector_cosine_ops",
                "create_when_queue_empty": True,
            },
            "formatting": {
                "implementation": "python_template",
                "config_type": "formatting",
                "template": "$title: $chunk",
            },
            "scheduling": {"implementation": "none", "config_type": "scheduling"},
            "processing": {"implementation": "default", "config_type": "processing"},
            "destination": {
                "implementation": "table",
                "config_type": "destination",
                "target_schema": "public",
                "target_table": "blog_embedding_store",
                "view_schema": "public",
                "view_name": "blog_embedding",
            },
        },
    }


def test_source_pk_uses_format_type_and_key_order(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        create table public.events
        ( happened timestamptz not null
        , code varchar(3) not null
        , amount numeric(10, 2)
        , body text not null
        , primary key (code, happened)
        )
        """
    )
    vid = create(conn, "public.events", name="'events_vec'")
    assert vectorizer(conn, vid)["source_pk"] == [
        {"attnum": 1, "pknum": 2, "attname": "happened", "typname": "timestamp with time zone"},
        {"attnum": 2, "pknum": 1, "attname": "code", "typname": "character varying(3)"},
    ]


def test_ids_and_object_names_follow_the_sequence(conn: psycopg.Connection, blog: str) -> None:
    first = create(conn)
    second = create(conn, destination="ai.destination_table(destination => 'other')")
    assert second > first
    v = vectorizer(conn, second)
    assert v["trigger_name"] == f"_vectorizer_src_trg_{second}"
    assert v["queue_table"] == f"_vectorizer_q_{second}"
    assert v["queue_failed_table"] == f"_vectorizer_q_failed_{second}"
    for name in (f"ai._vectorizer_q_{second}", f"ai._vectorizer_q_failed_{second}"):
        assert regclass_exists(conn, name)


# --- names and destinations ------------------------------------------------------------------


def test_default_names(conn: psycopg.Connection, blog: str) -> None:
    vid = create(conn)
    assert vectorizer(conn, vid)["name"] == "public_blog_embedding_store"
    assert (
        one(
            conn,
            "select relkind::text from pg_class"
            " where oid = 'public.blog_embedding_store'::regclass",
        )
        == "r"
    )
    assert (
        one(
            conn, "select relkind::text from pg_class where oid = 'public.blog_embedding'::regclass"
        )
        == "v"
    )


def test_explicit_name(conn: psycopg.Connection, blog: str) -> None:
    vid = create(conn, name="'my_vectorizer_1'")
    assert vectorizer(conn, vid)["name"] == "my_vectorizer_1"
    # the objects keep their default names
    assert regclass_exists(conn, "public.blog_embedding_store")
    assert regclass_exists(conn, "public.blog_embedding")


def test_destination_shortcut_names_store_and_view(conn: psycopg.Connection, blog: str) -> None:
    vid = create(conn, destination="ai.destination_table(destination => 'x')")
    v = vectorizer(conn, vid)
    assert v["name"] == "public_x_store"
    assert v["config"]["destination"] == {
        "implementation": "table",
        "config_type": "destination",
        "target_schema": "public",
        "target_table": "x_store",
        "view_schema": "public",
        "view_name": "x",
    }
    assert (
        one(conn, "select relkind::text from pg_class where oid = 'public.x_store'::regclass")
        == "r"
    )
    assert one(conn, "select relkind::text from pg_class where oid = 'public.x'::regclass") == "v"
    assert not regclass_exists(conn, "public.blog_embedding_store")


def test_target_schema_and_view_schema_are_honoured(conn: psycopg.Connection, blog: str) -> None:
    conn.execute("create schema emb; create schema views")
    vid = create(
        conn,
        destination=(
            "ai.destination_table(target_schema => 'emb', target_table => 'chunks'"
            ", view_schema => 'views', view_name => 'blog_chunks')"
        ),
    )
    v = vectorizer(conn, vid)
    assert v["name"] == "emb_chunks"
    assert v["config"]["destination"] == {
        "implementation": "table",
        "config_type": "destination",
        "target_schema": "emb",
        "target_table": "chunks",
        "view_schema": "views",
        "view_name": "blog_chunks",
    }
    assert regclass_exists(conn, "emb.chunks")
    assert regclass_exists(conn, "views.blog_chunks")
    # pgai's bug: the view landed in the source schema whatever view_schema said
    assert not regclass_exists(conn, "public.blog_chunks")
    assert not regclass_exists(conn, "emb.blog_chunks")
    conn.execute(
        f"insert into emb.chunks (id, chunk_seq, chunk, embedding) values (1, 0, 'c', {VEC})"
    )
    assert all_rows(conn, "select id, chunk, title from views.blog_chunks") == [(1, "c", "one")]


def test_existing_view_or_target_blocks_creation(conn: psycopg.Connection, blog: str) -> None:
    conn.execute("create view public.blog_embedding as select 1 as x")
    message = raises(conn, create_sql(conn), errors.DuplicateObject)
    assert message == (
        "an object named public.blog_embedding already exists. "
        "specify an alternate destination or view_name explicitly"
    )
    conn.execute(
        "drop view public.blog_embedding; create table public.blog_embedding_store (x int)"
    )
    message = raises(conn, create_sql(conn), errors.DuplicateObject)
    assert message == (
        "an object named public.blog_embedding_store already exists. "
        "specify an alternate destination or target_table explicitly"
    )
    assert one(conn, "select count(*) from ai.vectorizer") == 0


# --- the target table, the view, the queues, the trigger --------------------------------------


@pytest.fixture
def two_key_table(conn: psycopg.Connection) -> str:
    # attnum order (a, b, body) differs from key order (b, a)
    conn.execute(
        """
        create table public.doc
        ( a text not null
        , b int not null
        , body text not null
        , extra jsonb
        , primary key (b, a)
        )
        """
    )
    return "public.doc"


def test_target_table_shape(conn: psycopg.Connection, two_key_table: str) -> None:
    create(conn, "public.doc", embedding="ai.embedding_openai('text-embedding-3-small', 768)")
    assert columns(conn, "public.doc_embedding_store") == [
        ("embedding_uuid", "uuid", True),
        ("a", "text", True),
        ("b", "integer", True),
        ("chunk_seq", "integer", True),
        ("chunk", "text", True),
        ("embedding", "vector(768)", True),
        ("chunk_metadata", "jsonb", False),
        # chunk reuse (ours, appended after pgai's columns)
        ("chunk_hash", "bytea", False),
        ("config_hash", "bytea", False),
    ]
    assert (
        one(
            conn,
            "select pg_get_indexdef(indexrelid) from pg_index"
            " where indrelid = 'public.doc_embedding_store'::regclass and not indisunique",
        )
        == "CREATE INDEX doc_embedding_store_chunk_hash_idx ON public.doc_embedding_store"
        " USING btree (chunk_hash) WHERE (chunk_hash IS NOT NULL)"
    )
    constraints = all_rows(
        conn,
        """
        select c.contype::text
        , array(select a.attname::text from unnest(c.conkey) with ordinality k(n, o)
                join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.o)
        from pg_constraint c
        where c.conrelid = 'public.doc_embedding_store'::regclass and c.contype in ('p', 'u', 'f')
        order by c.contype
        """,
    )
    assert constraints == [("p", ["embedding_uuid"]), ("u", ["b", "a", "chunk_seq"])]
    # pgai's (Postgres-generated) constraint name
    assert (
        one(
            conn,
            "select conname::text from pg_constraint"
            " where conrelid = 'public.doc_embedding_store'::regclass and contype = 'u'",
        )
        == "doc_embedding_store_b_a_chunk_seq_key"
    )
    assert (
        one(
            conn,
            """
            select attstorage::text from pg_attribute
            where attrelid = 'public.doc_embedding_store'::regclass and attname = 'embedding'
            """,
        )
        == "m"
    )
    # embedding_uuid is generated
    conn.execute(
        "insert into public.doc_embedding_store (a, b, chunk_seq, chunk, embedding)"
        " values ('x', 1, 0, 'c', array_fill(0.5, array[768])::vector)"
    )
    assert one(conn, "select embedding_uuid is not null from public.doc_embedding_store")
    # (key, chunk_seq) is unique
    raises(
        conn,
        "insert into public.doc_embedding_store (a, b, chunk_seq, chunk, embedding)"
        " values ('x', 1, 0, 'c', array_fill(0.5, array[768])::vector)",
        errors.UniqueViolation,
    )
    # the dimension is enforced
    raises(
        conn,
        f"insert into public.doc_embedding_store (a, b, chunk_seq, chunk, embedding)"
        f" values ('x', 1, 1, 'c', {VEC})",
        errors.DataException,
    )


def test_view_columns_and_join(conn: psycopg.Connection, two_key_table: str) -> None:
    create(conn, "public.doc")
    assert columns(conn, "public.doc_embedding") == [
        ("embedding_uuid", "uuid", False),
        ("chunk_seq", "integer", False),
        ("chunk", "text", False),
        ("embedding", "vector(3)", False),
        ("a", "text", False),
        ("b", "integer", False),
        ("body", "text", False),
        ("extra", "jsonb", False),
        ("chunk_metadata", "jsonb", False),
    ]
    conn.execute(
        f"""
        insert into public.doc (a, b, body, extra) values ('k', 1, 'hello', '{{"x": 1}}');
        insert into public.doc_embedding_store (a, b, chunk_seq, chunk, embedding) values
          ('k', 1, 0, 'c0', {VEC}), ('k', 1, 1, 'c1', {VEC}), ('gone', 2, 0, 'orphan', {VEC});
        """
    )
    assert all_rows(
        conn,
        "select a, b, chunk_seq, chunk, body, extra from public.doc_embedding"
        " order by b, chunk_seq",
    ) == [
        ("k", 1, 0, "c0", "hello", {"x": 1}),
        ("k", 1, 1, "c1", "hello", {"x": 1}),
        # key columns come from the target, so an orphan chunk still shows its key
        ("gone", 2, 0, "orphan", None, None),
    ]
    assert one(conn, "select embedding::text from public.doc_embedding limit 1") == "[1,2,3]"


def test_queue_table_shape(conn: psycopg.Connection, two_key_table: str) -> None:
    vid = create(conn, "public.doc")
    queue = f"ai._vectorizer_q_{vid}"
    assert columns(conn, queue) == [
        ("a", "text", True),
        ("b", "integer", True),
        ("queued_at", "timestamp with time zone", True),
        ("loading_retries", "integer", True),
        ("loading_retry_after", "timestamp with time zone", False),
        ("lease_token", "uuid", False),
        ("lease_pid", "integer", False),
        ("leased_until", "timestamp with time zone", False),
    ]
    defaults = dict(
        all_rows(
            conn,
            """
            select a.attname::text, pg_get_expr(d.adbin, d.adrelid)
            from pg_attrdef d join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
            where d.adrelid = %s::regclass
            """,
            (queue,),
        )
    )
    assert defaults == {"queued_at": "now()", "loading_retries": "0"}
    indexes = all_rows(
        conn,
        """
        select array(select a.attname::text from unnest(i.indkey) with ordinality k(n, o)
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n order by k.o)
        , i.indisunique
        from pg_index i where i.indrelid = %s::regclass
        """,
        (queue,),
    )
    assert indexes == [(["b", "a"], False)]
    assert (
        one(
            conn,
            "select indexrelid::regclass::text from pg_index where indrelid = %s::regclass",
            (queue,),
        )
        == f"ai._vectorizer_q_{vid}_b_a_idx"
    )
    assert (
        one(
            conn,
            "select count(*) from pg_constraint where conrelid = %s::regclass and contype <> 'n'",
            (queue,),
        )
        == 0
    )
    # the same key may be queued twice
    conn.execute(f"insert into {queue} (a, b) values ('x', 1), ('x', 1)")
    assert one(conn, f"select count(*) from {queue}") == 2


def test_failed_queue_table_shape(conn: psycopg.Connection, two_key_table: str) -> None:
    vid = create(conn, "public.doc")
    failed = f"ai._vectorizer_q_failed_{vid}"
    assert columns(conn, failed) == [
        ("a", "text", True),
        ("b", "integer", True),
        ("created_at", "timestamp with time zone", True),
        ("failure_step", "text", True),
    ]
    conn.execute(f"insert into {failed} (a, b) values ('x', 1)")
    assert all_rows(conn, f"select a, b, failure_step, created_at is not null from {failed}") == [
        ("x", 1, "", True)
    ]
    assert one(
        conn,
        """
        select array(select a.attname::text from unnest(i.indkey) with ordinality k(n, o)
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n order by k.o)
        from pg_index i where i.indrelid = %s::regclass
        """,
        (failed,),
    ) == ["b", "a"]


def test_trigger_function_and_triggers(conn: psycopg.Connection, blog: str) -> None:
    vid = create(conn)
    trigger = f"_vectorizer_src_trg_{vid}"
    function = f"ai.{trigger}()"
    row = conn.execute(
        """
        select p.prosecdef, p.proconfig, l.lanname::text, p.provolatile::text
        , format_type(p.prorettype, null)
        , has_function_privilege('public', p.oid, 'execute')
        from pg_proc p join pg_language l on l.oid = p.prolang
        where p.oid = %s::regprocedure
        """,
        (function,),
    ).fetchone()
    assert row == (True, ["search_path=pg_catalog, pg_temp"], "plpgsql", "v", "trigger", False)
    definitions = all_rows(
        conn,
        "select pg_get_triggerdef(oid) from pg_trigger"
        " where tgrelid = 'public.blog'::regclass and not tgisinternal order by tgname",
    )
    assert definitions == [
        (
            f"CREATE TRIGGER {trigger} AFTER INSERT OR DELETE OR UPDATE ON public.blog"
            f" FOR EACH ROW EXECUTE FUNCTION ai.{trigger}()",
        ),
        (
            f"CREATE TRIGGER {trigger}_truncate AFTER TRUNCATE ON public.blog"
            f" FOR EACH STATEMENT EXECUTE FUNCTION ai.{trigger}()",
        ),
    ]


def test_long_source_name_gets_distinct_target_and_view(conn: psycopg.Connection) -> None:
    # "<56 chars>_embedding_store" and "<56 chars>_embedding" are both cut to the same 63 bytes
    long = "a" * 56
    conn.execute(f"create table public.{long} (id int primary key, body text)")
    try:
        vid = create(conn, f"public.{long}", name="'long_vec'")
    except psycopg.Error as exc:
        # acceptable: a deliberate error that says what to specify, not a raw DuplicateTable
        assert not isinstance(exc, errors.DuplicateTable), exc
        assert "specify" in (exc.diag.message_primary or "")
        assert one(conn, "select count(*) from ai.vectorizer") == 0
        return
    destination = vectorizer(conn, vid)["config"]["destination"]
    target = f"public.{destination['target_table']}"
    view = f"public.{destination['view_name']}"
    assert target != view
    assert (
        one(conn, "select relkind::text from pg_class where oid = %s::regclass", (target,)) == "r"
    )
    assert one(conn, "select relkind::text from pg_class where oid = %s::regclass", (view,)) == "v"


@pytest.mark.parametrize("clashing", ["embedding", "chunk_seq", "embedding_uuid"])
def test_source_column_named_like_a_target_column(
    conn: psycopg.Connection, blog: str, clashing: str
) -> None:
    # e.g. a column destination `embedding` created first, then a table destination
    conn.execute(f"alter table public.blog add column {clashing} int")
    vid = create(conn)
    view_columns = [c[0] for c in columns(conn, "public.blog_embedding")]
    assert view_columns[:4] == ["embedding_uuid", "chunk_seq", "chunk", "embedding"]
    assert view_columns.count(clashing) == 1
    assert vectorizer(conn, vid)["name"] == "public_blog_embedding_store"


def test_column_destination_then_table_destination(conn: psycopg.Connection, blog: str) -> None:
    column = create(
        conn, destination="ai.destination_column('embedding')", chunking="ai.chunking_none()"
    )
    table = create(conn)
    assert table > column
    conn.execute(
        f"insert into public.blog_embedding_store (id, chunk_seq, chunk, embedding)"
        f" values (1, 0, 'c', {VEC})"
    )
    # the view's embedding is the chunk's, from the target table
    assert one(conn, "select embedding::text from public.blog_embedding where id = 1") == "[1,2,3]"


def test_extension_typed_primary_key(conn: psycopg.Connection) -> None:
    # ltree's `=` lives in the extension's schema, not pg_catalog
    conn.execute("create extension if not exists ltree")
    conn.execute("create table public.tree (path ltree primary key, body text not null)")
    conn.execute("insert into public.tree values ('a.b', 'x'), ('a.c', 'y')")
    vid = create(conn, "public.tree", name="'tree_vec'")
    queue = f"ai._vectorizer_q_{vid}"
    assert [r[0] for r in all_rows(conn, f"select path::text from {queue} order by 1")] == [
        "a.b",
        "a.c",
    ]
    conn.execute(
        f"insert into public.tree_embedding_store (path, chunk_seq, chunk, embedding)"
        f" select path, 0, body, {VEC} from public.tree"
    )
    assert one(conn, "select count(*) from public.tree_embedding where body is not null") == 2
    conn.execute("update public.tree set body = 'changed' where path = 'a.b'")
    conn.execute("update public.tree set path = 'z.z' where path = 'a.c'")
    conn.execute("delete from public.tree where path = 'a.b'")
    assert one(conn, "select count(*) from public.tree_embedding_store") == 0
    assert [r[0] for r in all_rows(conn, f"select path::text from {queue} order by 1")] == [
        "a.b",
        "a.b",
        "a.c",
        "z.z",
    ]


# --- enqueue_existing, if_not_exists, name checks --------------------------------------------


def test_enqueue_existing_true_queues_every_row(conn: psycopg.Connection, blog: str) -> None:
    vid = create(conn)
    assert queue_keys(conn, vid) == [1, 2, 3]


def test_enqueue_existing_false_queues_nothing(conn: psycopg.Connection, blog: str) -> None:
    vid = create(conn, enqueue_existing="false")
    assert queue_keys(conn, vid) == []
    conn.execute("insert into public.blog (id, title, body) values (4, 'four', 'b')")
    assert queue_keys(conn, vid) == [4]


def test_if_not_exists_returns_the_existing_id(
    conn: psycopg.Connection, blog: str, notices: Notices
) -> None:
    vid = create(conn, name="'dup'")
    again = create(
        conn,
        name="'dup'",
        destination="ai.destination_table(destination => 'elsewhere')",
        if_not_exists="true",
    )
    assert again == vid
    assert ("NOTICE", "a vectorizer named dup already exists, skipping") in notices.items
    assert one(conn, "select count(*) from ai.vectorizer") == 1
    assert not regclass_exists(conn, "public.elsewhere_store")


def test_if_not_exists_with_an_explicit_queue_table(
    conn: psycopg.Connection, blog: str, notices: Notices
) -> None:
    # re-running the very same call must be a no-op: the existing vectorizer's own queue table
    # must not be reported as a collision before the name is looked up (a pgai quirk)
    call = create_sql(conn, name="'dup'", queue_table="'blog_q'", if_not_exists="true")
    vid = one(conn, call)
    assert one(conn, call) == vid
    assert ("NOTICE", "a vectorizer named dup already exists, skipping") in notices.items
    assert one(conn, "select count(*) from ai.vectorizer") == 1


def test_duplicate_name_is_an_error(conn: psycopg.Connection, blog: str) -> None:
    create(conn, name="'dup'")
    with pytest.raises(errors.DuplicateObject) as info:
        conn.execute(
            create_sql(conn, name="'dup'", destination="ai.destination_table(destination => 'y')")
        )
    assert info.value.diag.message_primary == "a vectorizer named dup already exists."
    assert not regclass_exists(conn, "public.y_store")


def test_duplicate_default_name_is_an_error(conn: psycopg.Connection, blog: str) -> None:
    conn.execute("create table public.blog2 (id int primary key, body text)")
    create(conn, destination="ai.destination_table(target_table => 'shared', view_name => 'v1')")
    message = raises(
        conn,
        create_sql(
            conn,
            "public.blog2",
            destination="ai.destination_table(target_table => 'shared', view_name => 'v2')",
        ),
        errors.DuplicateObject,
    )
    assert message == "a vectorizer named public_shared already exists."


def test_queue_name_collision(conn: psycopg.Connection, blog: str) -> None:
    conn.execute("create table ai.my_queue (x int)")
    with pytest.raises(errors.DuplicateObject) as info:
        conn.execute(create_sql(conn, queue_table="'my_queue'"))
    assert info.value.diag.message_primary == (
        "an object named ai.my_queue already exists. specify an alternate queue_table explicitly"
    )


def test_if_not_exists_still_reports_a_foreign_queue_collision(
    conn: psycopg.Connection, blog: str
) -> None:
    conn.execute("create table ai.taken (x int)")
    with pytest.raises(errors.DuplicateObject) as info:
        conn.execute(create_sql(conn, name="'fresh'", queue_table="'taken'", if_not_exists="true"))
    assert info.value.diag.message_primary == (
        "an object named ai.taken already exists. specify an alternate queue_table explicitly"
    )
    assert one(conn, "select count(*) from ai.vectorizer") == 0


def test_explicit_queue_schema_and_table(conn: psycopg.Connection, blog: str) -> None:
    conn.execute("create schema q")
    vid = create(conn, queue_schema="'q'", queue_table="'blog_queue'")
    v = vectorizer(conn, vid)
    assert (v["queue_schema"], v["queue_table"], v["queue_failed_table"]) == (
        "q",
        "blog_queue",
        f"_vectorizer_q_failed_{vid}",
    )
    assert all_rows(conn, "select id from q.blog_queue order by id") == [(1,), (2,), (3,)]
    assert regclass_exists(conn, f"q._vectorizer_q_failed_{vid}")
    assert one(conn, "select to_regprocedure(%s) is not null", (f"q._vectorizer_src_trg_{vid}()",))
    assert one(conn, "select ai.vectorizer_queue_pending(%s)", (vid,)) == 3


def test_bad_name_is_a_check_violation(conn: psycopg.Connection, blog: str) -> None:
    for bad in ("'Blog'", "'1blog'", "'blog-vec'", "'blog vec'"):
        raises(conn, create_sql(conn, name=bad), errors.CheckViolation)
    assert one(conn, "select count(*) from ai.vectorizer") == 0
    assert not regclass_exists(conn, "public.blog_embedding_store")


# --- required arguments and refusals ---------------------------------------------------------


def test_source_without_primary_key(conn: psycopg.Connection) -> None:
    conn.execute("create table public.nokey (id int, body text)")
    message = raises(conn, create_sql(conn, "public.nokey"))
    assert message == "source table must have a primary key constraint"
    conn.execute("alter table public.nokey add constraint u unique (id)")
    assert raises(conn, create_sql(conn, "public.nokey")) == (
        "source table must have a primary key constraint"
    )


def test_embedding_is_required(conn: psycopg.Connection, blog: str) -> None:
    assert raises(conn, create_sql(conn, embedding="null")) == "embedding configuration is required"


def test_loading_is_required(conn: psycopg.Connection, blog: str) -> None:
    assert raises(conn, create_sql(conn, loading="null")) == "loading configuration is required"


def test_dimensions_are_required(conn: psycopg.Connection, blog: str) -> None:
    embedding = """'{"implementation": "openai", "config_type": "embedding", "model": "m"}'"""
    assert raises(conn, create_sql(conn, embedding=embedding)) == "dimensions argument is required"


def test_automatic_indexing_needs_no_scheduling(conn: psycopg.Connection, blog: str) -> None:
    # pgai refused this ("automatic indexing is not supported without scheduling"); our
    # worker is the scheduler and builds the index
    vid = create(conn, indexing="ai.indexing_hnsw()", scheduling="ai.scheduling_none()")
    config = vectorizer(conn, vid)["config"]
    assert config["indexing"]["implementation"] == "hnsw"
    assert config["scheduling"] == {"implementation": "none", "config_type": "scheduling"}


def test_scheduling_timescaledb_without_timescaledb(conn: psycopg.Connection, blog: str) -> None:
    message = raises(
        conn,
        create_sql(conn, scheduling="ai.scheduling_timescaledb()", indexing="ai.indexing_none()"),
    )
    assert message.startswith("timescaledb extension not found")
    assert one(conn, "select count(*) from ai.vectorizer") == 0
    assert not regclass_exists(conn, "public.blog_embedding_store")


def test_missing_loaded_column(conn: psycopg.Connection, blog: str) -> None:
    message = raises(conn, create_sql(conn, loading="ai.loading_column('nosuch')"))
    assert message == "column_name in config does not exist in the table: nosuch"


def test_wrongly_typed_loaded_column(conn: psycopg.Connection) -> None:
    conn.execute("create table public.nums (id int primary key, n int8, body text)")
    message = raises(conn, create_sql(conn, "public.nums", loading="ai.loading_column('n')"))
    assert message == (
        "column_name n in config is of invalid type int8. "
        "Supported types are: text, varchar, char, bpchar, bytea"
    )


# --- ownership and grants --------------------------------------------------------------------


def test_non_owner_may_not_create(
    conn: psycopg.Connection, blog: str, make_role: Callable[..., str]
) -> None:
    stranger = make_role("vz_stranger")
    conn.execute(sql.SQL("grant usage on schema ai to {}").format(sql.Identifier(stranger)))
    conn.execute(sql.SQL("grant select on public.blog to {}").format(sql.Identifier(stranger)))
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(stranger)))
    message = raises(conn, create_sql(conn))
    conn.execute("reset role")
    assert (
        message == "only a superuser or the owner of the source table may create a vectorizer on it"
    )
    assert one(conn, "select count(*) from ai.vectorizer") == 0


def test_member_of_owner_role_may_create(
    conn: psycopg.Connection, blog: str, make_role: Callable[..., str]
) -> None:
    owner = make_role("vz_owner")
    member = make_role("vz_member")
    o, m = sql.Identifier(owner), sql.Identifier(member)
    conn.execute(sql.SQL("alter table public.blog owner to {}").format(o))
    conn.execute(sql.SQL("grant {} to {}").format(o, m))
    conn.execute(sql.SQL("select ai.grant_vectorizer_usage({})").format(sql.Literal(member)))
    conn.execute(sql.SQL("grant create on schema public to {}").format(m))
    conn.execute(sql.SQL("set role {}").format(m))
    vid = create(conn)
    conn.execute("insert into public.blog (id, title, body) values (10, 't', 'b')")
    conn.execute("reset role")
    assert queue_keys(conn, vid) == [1, 2, 3, 10]
    # the trigger function runs as the creator
    assert (
        one(
            conn,
            "select pg_get_userbyid(proowner)::text from pg_proc where oid = %s::regprocedure",
            (f"ai._vectorizer_src_trg_{vid}()",),
        )
        == member
    )


def test_grant_to_drops_unknown_roles_with_a_warning(
    conn: psycopg.Connection, blog: str, notices: Notices, make_role: Callable[..., str]
) -> None:
    reader = make_role("vz_reader")
    vid = create(conn, grant_to=f"ai.grant_to({lit(conn, reader)}, 'vz_no_such_role_x')")
    assert (
        "WARNING",
        "one or more grant_to roles do not exist: {vz_no_such_role_x}",
    ) in notices.items
    assert one(conn, "select has_table_privilege(%s, 'public.blog', 'select')", (reader,))
    assert vectorizer(conn, vid)["id"] == vid


def test_grant_to_only_unknown_roles_grants_nothing(
    conn: psycopg.Connection, blog: str, notices: Notices
) -> None:
    vid = create(conn, grant_to="array['vz_no_such_role_y']::name[]")
    assert any(
        severity == "WARNING" and "vz_no_such_role_y" in message
        for severity, message in notices.items
    )
    # no grant was made: the ACLs stay at their defaults
    for relation in (
        "public.blog",
        "public.blog_embedding_store",
        "public.blog_embedding",
        f"ai._vectorizer_q_{vid}",
        f"ai._vectorizer_q_failed_{vid}",
    ):
        assert one(
            conn, "select relacl is null from pg_class where oid = %s::regclass", (relation,)
        )


def test_grantees_get_their_privileges(
    conn: psycopg.Connection, blog: str, make_role: Callable[..., str]
) -> None:
    conn.execute("create schema emb; create schema q")
    reader = make_role("vz_grantee")
    other = make_role("vz_other")
    vid = create(
        conn,
        grant_to=f"array[{lit(conn, reader)}]::name[]",
        destination="ai.destination_table(target_schema => 'emb')",
        queue_schema="'q'",
    )

    def table_priv(role: str, relation: str, privilege: str) -> bool:
        return one(conn, "select has_table_privilege(%s, %s, %s)", (role, relation, privilege))

    def schema_priv(role: str, schema: str) -> bool:
        return one(conn, "select has_schema_privilege(%s, %s, 'usage')", (role, schema))

    target = "emb.blog_embedding_store"
    view = "public.blog_embedding"
    queue = f"q._vectorizer_q_{vid}"
    failed = f"q._vectorizer_q_failed_{vid}"
    expected = {
        ("public.blog", "select"): True,
        ("public.blog", "insert"): False,
        ("public.blog", "update"): False,
        (target, "select"): True,
        (target, "insert"): True,
        (target, "update"): True,
        (target, "delete"): True,  # pgai forgot this one
        (target, "truncate"): False,
        (view, "select"): True,
        (view, "insert"): False,
        (queue, "select"): True,
        (queue, "insert"): True,
        (queue, "update"): True,
        (queue, "delete"): True,
        (failed, "select"): True,
        (failed, "insert"): True,
        (failed, "update"): True,
        (failed, "delete"): True,
        ("ai.vectorizer", "select"): True,
        ("ai.vectorizer", "insert"): False,
    }
    actual = {key: table_priv(reader, *key) for key in expected}
    assert actual == expected
    for schema in ("public", "emb", "q", "ai"):
        assert schema_priv(reader, schema)
    # someone not named gets none of it
    assert not table_priv(other, target, "select")
    assert not table_priv(other, queue, "select")
    assert not schema_priv(other, "emb")


def test_grant_to_public(conn: psycopg.Connection, blog: str) -> None:
    vid = create(conn, grant_to="array['public']::name[]")
    for relation in ("public.blog", "public.blog_embedding_store", f"ai._vectorizer_q_{vid}"):
        assert one(conn, "select has_table_privilege('public', %s, 'select')", (relation,))
    assert one(conn, "select has_table_privilege('public', 'ai.vectorizer', 'select')")


def test_grant_to_default_guc(
    conn: psycopg.Connection, blog: str, make_role: Callable[..., str]
) -> None:
    reader = make_role("vz_default")
    conn.execute(sql.SQL("set ai.grant_to_default = {}").format(sql.Literal(reader)))
    vid = create(conn)
    assert one(
        conn, "select has_table_privilege(%s, %s, 'select')", (reader, f"ai._vectorizer_q_{vid}")
    )


# --- column destination ----------------------------------------------------------------------


def test_column_destination_adds_a_vector_column(conn: psycopg.Connection, blog: str) -> None:
    vid = create(
        conn,
        destination="ai.destination_column('embedding')",
        chunking="ai.chunking_none()",
    )
    v = vectorizer(conn, vid)
    assert v["name"] == "public_blog_embedding"
    assert v["config"]["destination"] == {
        "implementation": "column",
        "config_type": "destination",
        "embedding_column": "embedding",
    }
    assert v["config"]["chunking"] == {"implementation": "none", "config_type": "chunking"}
    assert columns(conn, "public.blog")[-1] == ("embedding", "vector(3)", False)
    assert (
        one(
            conn,
            "select attstorage::text from pg_attribute"
            " where attrelid = 'public.blog'::regclass and attname = 'embedding'",
        )
        == "m"
    )
    assert not regclass_exists(conn, "public.blog_embedding_store")
    assert not regclass_exists(conn, "public.blog_embedding")
    assert queue_keys(conn, vid) == [1, 2, 3]
    assert one(conn, "select count(*) from public.blog where embedding is null") == 3


def test_column_destination_reuses_a_matching_column(
    conn: psycopg.Connection, blog: str, notices: Notices
) -> None:
    conn.execute("alter table public.blog add column emb vector(3)")
    conn.execute(f"update public.blog set emb = {VEC} where id = 1")
    vid = create(conn, destination="ai.destination_column('emb')", chunking="ai.chunking_none()")
    assert ("NOTICE", "embedding column emb already exists in public.blog skipping creation") in (
        notices.items
    )
    assert vectorizer(conn, vid)["name"] == "public_blog_emb"
    assert one(conn, "select emb::text from public.blog where id = 1") == "[1,2,3]"
    assert [c for c in columns(conn, "public.blog") if c[0] == "emb"] == [
        ("emb", "vector(3)", False)
    ]


@pytest.mark.parametrize("column_type", ["vector(5)", "text"])
def test_column_destination_rejects_a_wrongly_typed_column(
    conn: psycopg.Connection, blog: str, column_type: str
) -> None:
    conn.execute(f"alter table public.blog add column emb {column_type}")
    message = raises(
        conn,
        create_sql(conn, destination="ai.destination_column('emb')", chunking="ai.chunking_none()"),
    )
    assert message.startswith("embedding column emb already exists in public.blog with type ")
    assert column_type in message
    assert "vector(3)" in message.split("expected", 1)[1]
    assert one(conn, "select count(*) from ai.vectorizer") == 0


def test_column_destination_needs_chunking_none(conn: psycopg.Connection, blog: str) -> None:
    message = raises(conn, create_sql(conn, destination="ai.destination_column('emb')"))
    assert message == "chunking must be none for column destination"


# --- odd and hostile names, end to end -------------------------------------------------------

ODD_SCHEMA = 'Odd "Schema"'
ODD_TABLE = "My Table"


@pytest.fixture
def odd_table(conn: psycopg.Connection) -> str:
    s, t = sql.Identifier(ODD_SCHEMA), sql.Identifier(ODD_TABLE)
    conn.execute(sql.SQL("create schema {}").format(s))
    conn.execute(
        sql.SQL(
            """
            create table {}.{}
            ( "Doc Id" int not null primary key
            , "select" text not null
            , "Title" text
            , "from" text
            , "user" int
            )
            """
        ).format(s, t)
    )
    conn.execute(
        sql.SQL(
            """insert into {}.{} ("Doc Id", "select", "Title", "from")
            values (1, 'body', 'T', 'f')"""
        ).format(s, t)
    )
    return sql.SQL("{}.{}").format(s, t).as_string(conn)


def test_hostile_names_default_name_fails_the_check(
    conn: psycopg.Connection, odd_table: str
) -> None:
    raises(
        conn,
        create_sql(conn, odd_table, loading="""ai.loading_column('select')"""),
        errors.CheckViolation,
    )


def test_hostile_names_table_destination_end_to_end(
    conn: psycopg.Connection, odd_table: str
) -> None:
    vid = create(
        conn,
        odd_table,
        name="'odd_vec'",
        loading="ai.loading_column('select')",
        formatting="ai.formatting_python_template('${Title} / $chunk')",
    )
    v = vectorizer(conn, vid)
    assert (v["source_schema"], v["source_table"]) == (ODD_SCHEMA, ODD_TABLE)
    assert v["source_pk"] == [{"attnum": 1, "pknum": 1, "attname": "Doc Id", "typname": "integer"}]
    assert v["config"]["destination"] == {
        "implementation": "table",
        "config_type": "destination",
        "target_schema": ODD_SCHEMA,
        "target_table": "My Table_embedding_store",
        "view_schema": ODD_SCHEMA,
        "view_name": "My Table_embedding",
    }
    s = sql.Identifier(ODD_SCHEMA)
    target = sql.SQL("{}.{}").format(s, sql.Identifier("My Table_embedding_store")).as_string(conn)
    view = sql.SQL("{}.{}").format(s, sql.Identifier("My Table_embedding")).as_string(conn)
    assert [c[0] for c in columns(conn, view)] == [
        "embedding_uuid",
        "chunk_seq",
        "chunk",
        "embedding",
        "Doc Id",
        "select",
        "Title",
        "from",
        "user",
        "chunk_metadata",
    ]
    assert queue_keys(conn, vid, '"Doc Id"') == [1]
    conn.execute(f'delete from ai."_vectorizer_q_{vid}"')

    # trigger: insert, loaded column, template column, unread column
    conn.execute(f"""insert into {odd_table} ("Doc Id", "select") values (2, 'b2')""")
    assert queue_keys(conn, vid, '"Doc Id"') == [2]
    conn.execute(f'delete from ai."_vectorizer_q_{vid}"')
    conn.execute(f"""update {odd_table} set "select" = 'changed' where "Doc Id" = 1""")
    conn.execute(f"""update {odd_table} set "Title" = 'T2' where "Doc Id" = 2""")
    conn.execute(f"""update {odd_table} set "from" = 'x', "user" = 5""")
    assert queue_keys(conn, vid, '"Doc Id"') == [1, 2]

    # the view joins on the quoted key
    conn.execute(
        f"""insert into {target} ("Doc Id", chunk_seq, chunk, embedding)
        values (1, 0, 'c', {VEC}), (2, 0, 'c', {VEC})"""
    )
    assert all_rows(conn, f"""select "Doc Id", "select", "Title" from {view} order by 1""") == [
        (1, "changed", "T"),
        (2, "b2", "T2"),
    ]
    # key change and delete remove the old key's chunks
    conn.execute(f"""update {odd_table} set "Doc Id" = 3 where "Doc Id" = 2""")
    conn.execute(f"""delete from {odd_table} where "Doc Id" = 1""")
    assert one(conn, f"select count(*) from {target}") == 0
    conn.execute(f"truncate {odd_table}")
    assert queue_keys(conn, vid, '"Doc Id"') == []

    conn.execute("select ai.drop_vectorizer('odd_vec', drop_all => true)")
    assert not regclass_exists(conn, target)
    assert not regclass_exists(conn, view)
    assert not regclass_exists(conn, f'ai."_vectorizer_q_{vid}"')
    assert (
        one(
            conn,
            "select count(*) from pg_trigger where tgrelid = %s::regclass and not tgisinternal",
            (odd_table,),
        )
        == 0
    )


def test_hostile_names_column_destination_and_odd_queue(
    conn: psycopg.Connection, odd_table: str
) -> None:
    vid = create(
        conn,
        odd_table,
        name="'odd_col'",
        loading="ai.loading_column('select')",
        destination="""ai.destination_column('My "Embedding"')""",
        chunking="ai.chunking_none()",
        queue_schema=lit(conn, ODD_SCHEMA),
        queue_table="'Queue Table'",
    )
    assert columns(conn, odd_table)[-1] == ('My "Embedding"', "vector(3)", False)
    queue = sql.SQL("{}.{}").format(sql.Identifier(ODD_SCHEMA), sql.Identifier("Queue Table"))
    assert conn.execute(sql.SQL('select "Doc Id" from {}').format(queue)).fetchall() == [(1,)]
    conn.execute(sql.SQL("delete from {}").format(queue))
    embedding_col = sql.Identifier('My "Embedding"').as_string(conn)
    conn.execute(f"update {odd_table} set {embedding_col} = {VEC}")
    assert conn.execute(sql.SQL("select count(*) from {}").format(queue)).fetchone() == (0,)
    conn.execute(f"""update {odd_table} set "select" = 'new'""")
    assert conn.execute(sql.SQL("select count(*) from {}").format(queue)).fetchone() == (1,)
    assert one(conn, "select ai.vectorizer_queue_pending('odd_col')") == 1
    conn.execute("select ai.drop_vectorizer(%s, true)", (vid,))
    assert columns(conn, odd_table)[-1][0] == 'My "Embedding"'
    assert not one(conn, "select to_regclass(%s) is not null", (queue.as_string(conn),))


# --- unusual primary keys, end to end --------------------------------------------------------

KEY_CASES = {
    "text_int": (
        "name text not null, n int not null, body text not null, primary key (name, n)",
        "name, n",
        "('a', 1, 'x'), ('a', 2, 'y'), ('b', 1, 'z')",
        "name = 'a' and n = 2",
        "n = 7",
        "name || ':' || n",
        ["a:1", "a:2", "b:1"],
    ),
    "uuid": (
        "id uuid primary key, body text not null",
        "id",
        "('00000000-0000-0000-0000-000000000001', 'x')"
        ", ('00000000-0000-0000-0000-000000000002', 'y')",
        "id = '00000000-0000-0000-0000-000000000002'",
        "id = '00000000-0000-0000-0000-000000000009'",
        "id::text",
        ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"],
    ),
    "timestamptz": (
        "at timestamptz primary key, body text not null",
        "at",
        "('2024-01-01 00:00:00+00', 'x'), ('2024-06-01 12:30:00+00', 'y')",
        "at = '2024-06-01 12:30:00+00'",
        "at = '2030-01-01 00:00:00+00'",
        "to_char(at at time zone 'UTC', 'YYYY-MM-DD HH24:MI')",
        ["2024-01-01 00:00", "2024-06-01 12:30"],
    ),
    "text_array": (
        "tags text[] primary key, body text not null",
        "tags",
        "('{a,b}', 'x'), ('{c}', 'y')",
        "tags = '{c}'",
        "tags = '{z,y}'",
        "array_to_string(tags, ',')",
        ["a,b", "c"],
    ),
}


@pytest.mark.parametrize("case", list(KEY_CASES), ids=list(KEY_CASES))
def test_unusual_primary_keys_end_to_end(conn: psycopg.Connection, case: str) -> None:
    table_def, key_cols, values, one_row, new_key, key_expr, initial = KEY_CASES[case]
    conn.execute(f"create table public.k ({table_def})")
    conn.execute(f"insert into public.k values {values}")
    vid = create(conn, "public.k", name="'k_vec'")
    queue = f"ai._vectorizer_q_{vid}"
    target = "public.k_embedding_store"

    assert [r[0] for r in all_rows(conn, f"select {key_expr} from {queue} order by 1")] == initial
    conn.execute(f"delete from {queue}")
    conn.execute(
        f"insert into {target} ({key_cols}, chunk_seq, chunk, embedding)"
        f" select {key_cols}, 0, body, {VEC} from public.k"
    )
    assert one(conn, "select count(*) from public.k_embedding where body is not null") == len(
        initial
    )

    # an update of the body re-queues the row, an unchanged update does not
    conn.execute(f"update public.k set body = body || '!' where {one_row}")
    conn.execute(f"update public.k set body = body where {one_row}")
    assert one(conn, f"select count(*) from {queue}") == 1
    conn.execute(f"delete from {queue}")

    # a key change drops the old key's chunks and queues the new key
    conn.execute(f"update public.k set {new_key} where {one_row}")
    assert one(conn, f"select count(*) from {target} where {one_row}") == 0
    assert one(conn, f"select count(*) from {queue} where {new_key}") == 1
    assert one(conn, f"select count(*) from {target}") == len(initial) - 1

    # delete removes the chunks, truncate empties everything
    conn.execute(f"delete from public.k where {new_key}")
    conn.execute(f"delete from public.k where not ({new_key}) and body = 'x'")
    assert one(conn, f"select count(*) from {target}") == len(initial) - 2
    conn.execute("truncate public.k")
    assert one(conn, f"select count(*) from {target}") == 0
    assert one(conn, f"select count(*) from {queue}") == 0

    conn.execute("select ai.drop_vectorizer('k_vec', drop_all => true)")
    assert not regclass_exists(conn, target)
    assert not regclass_exists(conn, queue)
