"""The source-table triggers of a vectorizer, for both destinations: what each write enqueues,
what it deletes from the target, TRUNCATE, NOTIFY, and writes by unprivileged roles.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

VEC = "'[1,2,3]'"
EMBEDDING = "ai.embedding_openai('text-embedding-3-small', 3)"


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


class Vectorizer:
    """A vectorizer on public.blog and accessors for its queue and destination."""

    def __init__(self, conn: psycopg.Connection, vectorizer_id: int) -> None:
        self.conn = conn
        self.id = vectorizer_id
        row = conn.execute(
            "select queue_schema, queue_table, queue_failed_table, config->'destination'"
            " from ai.vectorizer where id = %s",
            (vectorizer_id,),
        ).fetchone()
        assert row is not None
        schema, table, failed, self.destination = row
        self.queue = sql.Identifier(schema, table)
        self.failed = sql.Identifier(schema, failed)

    @property
    def is_table(self) -> bool:
        return self.destination["implementation"] == "table"

    def queued(self) -> list[int]:
        query = sql.SQL("select id from {} order by id, queued_at").format(self.queue)
        return [r[0] for r in self.conn.execute(query).fetchall()]

    def clear_queue(self) -> None:
        self.conn.execute(sql.SQL("delete from {}").format(self.queue))

    def failed_count(self) -> int:
        return one(
            self.conn, sql.SQL("select count(*) from {}").format(self.failed).as_string(self.conn)
        )

    def add_chunks(self, *ids: int) -> None:
        """Writes embeddings for the given source rows, as the worker would."""
        for row_id in ids:
            if self.is_table:
                self.conn.execute(
                    f"insert into public.blog_embedding_store (id, chunk_seq, chunk, embedding)"
                    f" values (%s, 0, 'c0', {VEC}), (%s, 1, 'c1', {VEC})",
                    (row_id, row_id),
                )
            else:
                self.conn.execute(
                    sql.SQL("update public.blog set {} = {} where id = %s").format(
                        sql.Identifier(self.destination["embedding_column"]), sql.SQL(VEC)
                    ),
                    (row_id,),
                )

    def chunk_ids(self) -> list[int]:
        """The source ids that have embeddings."""
        if self.is_table:
            query = "select distinct id from public.blog_embedding_store order by id"
        else:
            query = sql.SQL("select id from public.blog where {} is not null order by id").format(
                sql.Identifier(self.destination["embedding_column"])
            )
        return [r[0] for r in self.conn.execute(query).fetchall()]


DESTINATIONS = {
    "table": {},
    "column": {
        "destination": "ai.destination_column('embedding')",
        "chunking": "ai.chunking_none()",
    },
}


def make_vectorizer(conn: psycopg.Connection, **args: str) -> Vectorizer:
    args.setdefault("loading", "ai.loading_column('body')")
    args.setdefault("embedding", EMBEDDING)
    args.setdefault("enqueue_existing", "false")
    named = "".join(f", {key} => {value}" for key, value in args.items())
    return Vectorizer(
        conn, one(conn, f"select ai.create_vectorizer('public.blog'::regclass{named})")
    )


@pytest.fixture
def blog(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        create table public.blog
        ( id int not null primary key
        , title text
        , body text not null
        , note text
        , meta json
        );
        insert into public.blog (id, title, body, note, meta) values
          (1, 'one', 'body one', 'n1', '{"a": 1}')
        , (2, 'two', 'body two', 'n2', '{"a": 2}');
        """
    )


@pytest.fixture(params=list(DESTINATIONS))
def vec(request: pytest.FixtureRequest, conn: psycopg.Connection, blog: None) -> Vectorizer:
    return make_vectorizer(
        conn,
        formatting="ai.formatting_python_template('$title: $chunk')",
        **DESTINATIONS[request.param],
    )


# --- what enqueues ---------------------------------------------------------------------------


def test_insert_enqueues_the_key(conn: psycopg.Connection, vec: Vectorizer) -> None:
    assert vec.queued() == []
    conn.execute("insert into public.blog (id, title, body) values (3, 't', 'b'), (4, 't', 'b')")
    assert vec.queued() == [3, 4]


def test_update_of_the_loaded_column_enqueues(conn: psycopg.Connection, vec: Vectorizer) -> None:
    conn.execute("update public.blog set body = 'new body' where id = 2")
    assert vec.queued() == [2]


def test_update_of_a_template_column_enqueues(conn: psycopg.Connection, vec: Vectorizer) -> None:
    conn.execute("update public.blog set title = 'new title' where id = 1")
    assert vec.queued() == [1]
    vec.clear_queue()
    # null -> value and value -> null count as changes
    conn.execute("update public.blog set title = null where id = 1")
    conn.execute("update public.blog set title = 'back' where id = 1")
    assert vec.queued() == [1, 1]


@pytest.mark.parametrize("destination", list(DESTINATIONS))
def test_braced_template_placeholder_is_watched(
    conn: psycopg.Connection, blog: None, destination: str
) -> None:
    vec = make_vectorizer(
        conn,
        formatting="ai.formatting_python_template('${title}x $$note $chunk')",
        **DESTINATIONS[destination],
    )
    conn.execute("update public.blog set title = 'changed' where id = 2")
    assert vec.queued() == [2]
    vec.clear_queue()
    # `$$note` is an escaped dollar followed by text, not a placeholder
    conn.execute("update public.blog set note = 'changed'")
    assert vec.queued() == []


def test_update_of_an_unread_column_does_not_enqueue(
    conn: psycopg.Connection, vec: Vectorizer
) -> None:
    conn.execute("update public.blog set note = 'other note', meta = '{\"b\": 1}'")
    assert vec.queued() == []


def test_update_without_change_does_not_enqueue(conn: psycopg.Connection, vec: Vectorizer) -> None:
    conn.execute("update public.blog set body = body, title = title")
    conn.execute("update public.blog set body = 'body one' where id = 1")
    assert vec.queued() == []


def test_key_changing_update(conn: psycopg.Connection, vec: Vectorizer) -> None:
    vec.add_chunks(1, 2)
    conn.execute("update public.blog set id = 10 where id = 1")
    assert vec.queued() == [10]
    if vec.is_table:
        # the old key's chunks go at once; the new key's come from the worker
        assert vec.chunk_ids() == [2]
    else:
        # the embedding moves with the row
        assert vec.chunk_ids() == [2, 10]


def test_key_changing_update_of_several_rows(conn: psycopg.Connection, vec: Vectorizer) -> None:
    vec.add_chunks(1, 2)
    conn.execute("update public.blog set id = id + 100")
    assert vec.queued() == [101, 102]
    assert vec.chunk_ids() == ([] if vec.is_table else [101, 102])


def test_delete_removes_embeddings_and_enqueues_nothing(
    conn: psycopg.Connection, vec: Vectorizer
) -> None:
    vec.add_chunks(1, 2)
    conn.execute("delete from public.blog where id = 1")
    assert vec.queued() == []
    assert vec.chunk_ids() == [2]
    if vec.is_table:
        assert one(conn, "select count(*) from public.blog_embedding_store where id = 2") == 2


def test_truncate_clears_the_queues(conn: psycopg.Connection, vec: Vectorizer) -> None:
    vec.add_chunks(1, 2)
    conn.execute("insert into public.blog (id, body) values (3, 'b')")
    conn.execute(
        sql.SQL("insert into {} (id, failure_step) values (1, 'loading')").format(vec.failed)
    )
    assert vec.queued() == [3]
    assert vec.failed_count() == 1
    conn.execute("truncate public.blog")
    assert vec.queued() == []
    assert vec.failed_count() == 0
    if vec.is_table:
        assert one(conn, "select count(*) from public.blog_embedding_store") == 0


def test_everything_happens_in_the_writers_transaction(
    conn: psycopg.Connection, vec: Vectorizer
) -> None:
    vec.add_chunks(1)
    with pytest.raises(ZeroDivisionError), conn.transaction():
        conn.execute("insert into public.blog (id, body) values (5, 'b')")
        conn.execute("delete from public.blog where id = 1")
        assert vec.queued() == [5]
        raise ZeroDivisionError
    assert vec.queued() == []
    assert vec.chunk_ids() == [1]


def test_worker_write_of_the_embedding_column_does_not_enqueue(
    conn: psycopg.Connection, blog: None
) -> None:
    vec = make_vectorizer(conn, **DESTINATIONS["column"])
    conn.execute(f"update public.blog set embedding = {VEC} where id = 1")
    conn.execute("update public.blog set embedding = null where id = 1")
    assert vec.queued() == []
    conn.execute("update public.blog set body = 'x', embedding = null where id = 2")
    assert vec.queued() == [2]


def test_json_template_column(conn: psycopg.Connection, vec: Vectorizer) -> None:
    # json has no equality operator: the comparison must still work
    vec2 = make_vectorizer(
        conn,
        name="'with_json'",
        formatting="ai.formatting_python_template('$meta $chunk')",
        **(
            {"destination": "ai.destination_table(destination => 'meta_emb')"}
            if vec.is_table
            else {
                "destination": "ai.destination_column('meta_embedding')",
                "chunking": "ai.chunking_none()",
            }
        ),
    )
    conn.execute("""update public.blog set meta = '{"a": 1}' where id = 1""")
    assert vec2.queued() == []
    conn.execute("""update public.blog set meta = '{"a": 99}' where id = 1""")
    conn.execute("update public.blog set meta = null where id = 2")
    assert vec2.queued() == [1, 2]
    # the first vectorizer does not read meta
    assert vec.queued() == []


@pytest.mark.parametrize("destination", list(DESTINATIONS))
def test_extension_typed_template_columns(
    conn: psycopg.Connection, blog: None, destination: str
) -> None:
    # ltree and hstore have their `=` in the extension's schema: the trigger must still
    # compare them (a failure here breaks every UPDATE of the source table)
    conn.execute("create extension if not exists ltree; create extension if not exists hstore")
    conn.execute("alter table public.blog add column path ltree, add column attrs hstore")
    conn.execute("update public.blog set path = 'a.b', attrs = 'k=>1'")
    vec = make_vectorizer(
        conn,
        formatting="ai.formatting_python_template('$path $attrs $chunk')",
        **DESTINATIONS[destination],
    )
    conn.execute("update public.blog set note = 'unread'")
    conn.execute("update public.blog set path = path, attrs = attrs")
    assert vec.queued() == []
    conn.execute("update public.blog set path = 'a.c' where id = 1")
    conn.execute("update public.blog set attrs = 'k=>2' where id = 2")
    conn.execute("update public.blog set body = 'new' where id = 2")
    assert vec.queued() == [1, 2, 2]


def test_notify_on_commit(conn: psycopg.Connection, db_url: str, vec: Vectorizer) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ai_vectorizer_queue")
        conn.execute("insert into public.blog (id, body) values (7, 'b')")
        received = list(listener.notifies(timeout=5, stop_after=1))
    assert len(received) == 1
    assert received[0].channel == "ai_vectorizer_queue"
    assert received[0].payload == str(vec.id)


def test_no_notify_before_commit(conn: psycopg.Connection, db_url: str, vec: Vectorizer) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ai_vectorizer_queue")
        with conn.transaction():
            conn.execute("insert into public.blog (id, body) values (8, 'b')")
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
        assert [n.payload for n in listener.notifies(timeout=5, stop_after=1)] == [str(vec.id)]


def test_unread_update_does_not_notify(
    conn: psycopg.Connection, db_url: str, vec: Vectorizer
) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ai_vectorizer_queue")
        conn.execute("update public.blog set note = 'quiet'")
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []


def test_unread_columns_may_be_added_and_dropped(conn: psycopg.Connection, vec: Vectorizer) -> None:
    # (the view of a table destination depends on every column it was created with)
    conn.execute("alter table public.blog add column extra int, add column gone int")
    conn.execute("update public.blog set extra = 1")
    conn.execute("alter table public.blog drop column gone")
    assert vec.queued() == []
    conn.execute("update public.blog set body = 'b' where id = 1")
    conn.execute("insert into public.blog (id, body, extra) values (3, 'b', 2)")
    assert vec.queued() == [1, 3]


# --- two vectorizers on one table ------------------------------------------------------------


def test_two_vectorizers_one_with_a_column_destination(
    conn: psycopg.Connection, blog: None
) -> None:
    table = make_vectorizer(conn, formatting="ai.formatting_python_template('$title: $chunk')")
    column = make_vectorizer(conn, **DESTINATIONS["column"])
    conn.execute("insert into public.blog (id, title, body) values (3, 't', 'b')")
    assert table.queued() == [3]
    assert column.queued() == [3]
    table.clear_queue()
    column.clear_queue()

    # the column vectorizer's worker writes its embedding: nobody re-queues
    column.add_chunks(1, 2, 3)
    assert table.queued() == []
    assert column.queued() == []

    # only the table vectorizer reads title
    conn.execute("update public.blog set title = 'x' where id = 1")
    assert table.queued() == [1]
    assert column.queued() == []

    conn.execute("update public.blog set body = 'y' where id = 2")
    assert table.queued() == [1, 2]
    assert column.queued() == [2]

    table.add_chunks(1, 2)
    conn.execute("delete from public.blog where id = 1")
    assert table.chunk_ids() == [2]
    assert column.chunk_ids() == [2, 3]

    conn.execute("truncate public.blog")
    assert table.queued() == []
    assert column.queued() == []
    assert table.chunk_ids() == []


# --- privileges ------------------------------------------------------------------------------


@pytest.fixture
def writer(conn: psycopg.Connection) -> Iterator[str]:
    name = f"vz_writer_{uuid.uuid4().hex[:10]}"
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("create role {}").format(ident))
    yield name
    conn.execute("reset role")
    conn.execute(sql.SQL("drop owned by {} cascade").format(ident))
    conn.execute(sql.SQL("drop role {}").format(ident))


def test_a_writer_without_queue_privileges_still_enqueues(
    conn: psycopg.Connection, vec: Vectorizer, writer: str
) -> None:
    ident = sql.Identifier(writer)
    conn.execute(
        sql.SQL("grant select, insert, update, delete, truncate on public.blog to {}").format(ident)
    )
    vec.add_chunks(1)
    conn.execute(sql.SQL("set role {}").format(ident))
    try:
        # the writer can read neither the queue nor the target
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("select * from {}").format(vec.queue))
        conn.execute("insert into public.blog (id, body) values (3, 'b')")
        conn.execute("update public.blog set body = 'changed' where id = 2")
        conn.execute("update public.blog set id = 11 where id = 1")
        conn.execute("delete from public.blog where id = 3")
    finally:
        conn.execute("reset role")
    assert vec.queued() == [2, 3, 11]
    assert vec.chunk_ids() == ([] if vec.is_table else [11])
    conn.execute(sql.SQL("set role {}").format(ident))
    try:
        conn.execute("truncate public.blog")
    finally:
        conn.execute("reset role")
    assert vec.queued() == []
