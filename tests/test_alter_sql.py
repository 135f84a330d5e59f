"""ai.alter_vectorizer in SQL: what changes in place, what makes a config version and starts a
re-embed, what is refused (leaving the vectorizer exactly as it was), and the re-embed feed
that the workers call, on hostile names and a composite key.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from tests.test_status import cli
from tests.worker_helpers import create_source, create_vectorizer, doc_rows

SMALL_CHUNKS = "ai.chunking_character_text_splitter(10, 0)"


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def snapshot(conn: psycopg.Connection, vectorizer_id: int) -> tuple[Any, ...]:
    """Everything an alter may touch: catalog row, history, re-embed state, trigger source."""
    return (
        one(conn, "select to_jsonb(v) from ai.vectorizer v where id = %s", (vectorizer_id,)),
        conn.execute(
            "select version, config from ai._vectorizer_config_version"
            " where vectorizer_id = %s order by version",
            (vectorizer_id,),
        ).fetchall(),
        conn.execute(
            "select to_jsonb(r) from ai._vectorizer_reembed r where vectorizer_id = %s",
            (vectorizer_id,),
        ).fetchall(),
        one(
            conn,
            "select prosrc from pg_proc where proname = %s",
            (f"_vectorizer_src_trg_{vectorizer_id}",),
        ),
    )


@pytest.fixture
def docs(conn: psycopg.Connection) -> int:
    create_source(conn, "docs", doc_rows(5))
    return create_vectorizer(conn, "docs", chunking="ai.chunking_character_text_splitter(100, 0)")


def config(conn: psycopg.Connection, vectorizer_id: int) -> dict[str, Any]:
    return one(conn, "select config from ai.vectorizer where id = %s", (vectorizer_id,))


def test_processing_indexing_scheduling_apply_in_place(conn: psycopg.Connection, docs: int) -> None:
    version = one(
        conn,
        "select ai.alter_vectorizer(%s, processing => ai.processing_default(batch_size => 7),"
        " indexing => ai.indexing_hnsw(), scheduling => ai.scheduling_none())",
        (docs,),
    )
    assert version == 1
    current = config(conn, docs)
    assert current["processing"]["batch_size"] == 7
    assert current["indexing"]["implementation"] == "hnsw"
    assert one(conn, "select count(*) from ai._vectorizer_config_version") == 0
    assert one(conn, "select count(*) from ai._vectorizer_reembed") == 0


def view_columns(conn: psycopg.Connection, view: str) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
            " order by attnum",
            (view,),
        ).fetchall()
    ]


def test_an_alter_regenerates_the_view_with_the_sources_new_columns(
    conn: psycopg.Connection, docs: int
) -> None:
    conn.execute('alter table docs add column "Tag ""Line""" text')
    conn.execute("grant select on docs_embedding to public")
    grants = one(conn, "select ai._vectorizer_grants('docs_embedding'::regclass)")
    assert 'Tag "Line"' not in view_columns(conn, "docs_embedding")

    conn.execute("select ai.alter_vectorizer(%s, processing => ai.processing_default())", (docs,))

    assert 'Tag "Line"' in view_columns(conn, "docs_embedding")
    assert one(conn, "select ai._vectorizer_grants('docs_embedding'::regclass)") == grants


def test_a_view_others_depend_on_is_left_as_it_was(conn: psycopg.Connection, docs: int) -> None:
    conn.execute("alter table docs add column extra text")
    conn.execute("create view on_top as select chunk from docs_embedding")
    before = view_columns(conn, "docs_embedding")

    conn.execute(
        "select ai.alter_vectorizer(%s, processing => ai.processing_default(batch_size => 3))",
        (docs,),
    )

    assert view_columns(conn, "docs_embedding") == before
    assert config(conn, docs)["processing"]["batch_size"] == 3


def test_chunking_change_makes_a_version_and_starts_a_reembed(
    conn: psycopg.Connection, docs: int
) -> None:
    before = config(conn, docs)
    version = one(
        conn,
        "select ai.alter_vectorizer('public_docs_embedding_store',"
        " chunking => ai.chunking_character_text_splitter(10, 0))",
    )
    assert version == 2
    history = conn.execute(
        "select version, config from ai._vectorizer_config_version order by version"
    ).fetchall()
    assert [row[0] for row in history] == [1, 2]
    assert history[0][1] == before
    assert history[1][1] == config(conn, docs)
    assert config(conn, docs)["chunking"]["chunk_size"] == 10
    state = conn.execute(
        "select version, keys_total, keys_fed, fed_all, finished_at from ai._vectorizer_reembed"
    ).fetchone()
    assert state == (2, 5, 0, False, None)
    status = conn.execute(
        "select config_version, reembed_keys_done, reembed_keys_total"
        " from ai.vectorizer_status where id = %s",
        (docs,),
    ).fetchone()
    assert status == (2, 0, 5)
    # the same config again is no new version
    assert (
        one(
            conn,
            f"select ai.alter_vectorizer(%s, chunking => {SMALL_CHUNKS})",
            (docs,),
        )
        == 2
    )


def test_formatting_change_regenerates_the_watched_columns(
    conn: psycopg.Connection, docs: int
) -> None:
    conn.execute(
        "select ai.alter_vectorizer(%s,"
        " formatting => ai.formatting_python_template('$title: $chunk'))",
        (docs,),
    )
    queue = sql.Identifier("ai", f"_vectorizer_q_{docs}")
    conn.execute(sql.SQL("delete from {}").format(queue))
    # title was not watched before the alter; now a title change queues the row
    conn.execute("update docs set title = 'new' where id = 1")
    assert one(conn, sql.SQL("select count(*) from {}").format(queue).as_string(conn)) == 1


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (
            'chunking => \'{"config_type": "chunking", "implementation": "nope"}\'',
            "invalid chunking config implementation",
        ),
        ("formatting => ai.formatting_python_template('no placeholder')", "$chunk placeholder"),
        ('chunking => \'{"implementation": "nope"}\'::jsonb', "chunking"),
        (
            'embedding => \'{"config_type": "embedding", "implementation": "openai",'
            ' "model": "text-embedding-3-small"}\'',
            "dimensions",
        ),
        ("processing => ai.processing_default(batch_size => 5000)", "batch_size"),
        ("loading => ai.loading_column('missing')", "missing"),
        ("destination => ai.destination_column('embedding')", "cannot become a column"),
        ("destination => ai.destination_table(vector_type => 'bitvec')", "invalid vector_type"),
        ("destination => ai.destination_table(target_table => 'other')", "target_table"),
    ],
)
def test_an_invalid_alter_changes_nothing(
    conn: psycopg.Connection, docs: int, argument: str, message: str
) -> None:
    before = snapshot(conn, docs)
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(f"select ai.alter_vectorizer({docs}, {argument})")
    assert message in str(raised.value)
    assert snapshot(conn, docs) == before


def test_a_changed_primary_key_is_refused(conn: psycopg.Connection, docs: int) -> None:
    conn.execute("alter table docs drop constraint docs_pkey, add primary key (id, title)")
    before = snapshot(conn, docs)
    with pytest.raises(psycopg.Error, match="primary key"):
        conn.execute(
            f"select ai.alter_vectorizer(%s, chunking => {SMALL_CHUNKS})",
            (docs,),
        )
    assert snapshot(conn, docs) == before


def test_unknown_vectorizer(conn: psycopg.Connection) -> None:
    with pytest.raises(errors.NoDataFound, match="vectorizer nope not found"):
        conn.execute("select ai.alter_vectorizer('nope', processing => ai.processing_default())")
    with pytest.raises(errors.NoDataFound, match="vectorizer 42 not found"):
        conn.execute("select ai.alter_vectorizer(42, processing => ai.processing_default())")


HOSTILE_SCHEMA = 'we"ird sch;ema'
HOSTILE_TABLE = "Tab le'); drop table x; --"


def test_feed_walks_a_composite_key_of_hostile_names(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(HOSTILE_SCHEMA)))
    table = sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)
    conn.execute(
        sql.SQL(
            'create table {} ("k""ey" text, "Part 2" int, body text,'
            ' primary key ("Part 2", "k""ey"))'
        ).format(table)
    )
    keys = [(f"k'{i % 3}", i // 3) for i in range(7)]
    with conn.cursor() as cursor:
        cursor.executemany(
            sql.SQL("insert into {} values (%s, %s, 'text')").format(table),
            keys,
        )
    source = sql.Literal(table.as_string(conn))
    created = conn.execute(
        sql.SQL(
            "select ai.create_vectorizer({}::regclass, name => 'hostile',"
            " loading => ai.loading_column('body'),"
            " embedding => ai.embedding_openai('text-embedding-3-small', 8),"
            " chunking => ai.chunking_none(), destination => ai.destination_column('emb'),"
            " scheduling => ai.scheduling_none(), indexing => ai.indexing_none())"
        ).format(source)
    ).fetchone()
    assert created is not None
    vid = created[0]
    queue = sql.Identifier("ai", f"_vectorizer_q_{vid}")
    conn.execute(sql.SQL("delete from {}").format(queue))
    assert one(conn, "select ai._vectorizer_reembed_feed(%s, 3)", (vid,)) == -1  # none running
    conn.execute(
        "select ai.alter_vectorizer('hostile',"
        " formatting => ai.formatting_python_template('x $chunk'))"
    )
    queued: list[tuple[Any, ...]] = []
    fed = []
    while (n := one(conn, "select ai._vectorizer_reembed_feed(%s, 3)", (vid,))) > 0:
        fed.append(n)
        rows = conn.execute(
            sql.SQL('select "Part 2", "k""ey" from {} order by 1, 2').format(queue)
        ).fetchall()
        queued.extend(rows)
        conn.execute(sql.SQL("delete from {}").format(queue))  # as if embedded
    assert fed == [3, 3, 1]
    assert queued == sorted((part, key) for key, part in keys)  # every key once, in key order
    assert n == -1  # the last slice was short and the queue is empty: finished
    assert one(conn, "select finished_at is not null from ai._vectorizer_reembed") is True
    assert one(conn, "select ai._vectorizer_reembed_feed(%s, 3)", (vid,)) == -1


def test_feed_waits_for_queued_keys_before_finishing(conn: psycopg.Connection, docs: int) -> None:
    conn.execute(sql.SQL("delete from {}").format(sql.Identifier("ai", f"_vectorizer_q_{docs}")))
    conn.execute(
        f"select ai.alter_vectorizer(%s, chunking => {SMALL_CHUNKS})",
        (docs,),
    )
    assert one(conn, "select ai._vectorizer_reembed_feed(%s, 10)", (docs,)) == 5
    assert one(conn, "select ai._vectorizer_reembed_feed(%s, 10)", (docs,)) == 0  # 5 queued
    done, total = conn.execute(
        "select reembed_keys_done, reembed_keys_total from ai.vectorizer_status where id = %s",
        (docs,),
    ).fetchone() or (None, None)
    assert (done, total) == (0, 5)


def column_type(conn: psycopg.Connection, relation: sql.Composable, column: str) -> str | None:
    return one(
        conn,
        "select format_type(atttypid, atttypmod) from pg_attribute"
        " where attrelid = to_regclass(%s) and attname = %s and not attisdropped",
        (relation.as_string(conn), column),
    )


@pytest.mark.parametrize("keep_old", [False, True])
def test_new_dimensions_fill_a_shadow_store_swapped_in_at_the_end(
    conn: psycopg.Connection, keep_old: bool
) -> None:
    """Without a worker: the test plays its part (embeds by inserting into the shadow)."""
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(HOSTILE_SCHEMA)))
    source = sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)
    conn.execute(sql.SQL("create table {} (id int primary key, body text)").format(source))
    conn.execute(sql.SQL("insert into {} values (1, 'a'), (2, 'b'), (3, 'c')").format(source))
    vid = one(
        conn,
        sql.SQL(
            "select ai.create_vectorizer({}::regclass, name => 'hostile',"
            " loading => ai.loading_column('body'),"
            " embedding => ai.embedding_openai('text-embedding-3-small', 3),"
            " chunking => ai.chunking_none(), scheduling => ai.scheduling_none(),"
            " indexing => ai.indexing_none())"
        )
        .format(sql.Literal(source.as_string(conn)))
        .as_string(conn),
    )
    store = sql.Identifier(HOSTILE_SCHEMA, f"{HOSTILE_TABLE}_embedding_store")
    shadow = sql.Identifier(HOSTILE_SCHEMA, f"{HOSTILE_TABLE}_embedding_store_v2")
    view = sql.Identifier(HOSTILE_SCHEMA, f"{HOSTILE_TABLE}_embedding")
    queue = sql.Identifier("ai", f"_vectorizer_q_{vid}")
    conn.execute(
        sql.SQL(
            "insert into {} (id, chunk_seq, chunk, embedding) select id, 0, body, '[1,2,3]' from {}"
        ).format(store, source)
    )
    conn.execute(sql.SQL("delete from {}").format(queue))
    conn.execute("create role vz_alter_reader")
    try:
        conn.execute(sql.SQL("grant select on {} to vz_alter_reader").format(view))
        conn.execute(
            "select ai.alter_vectorizer('hostile',"
            " embedding => ai.embedding_openai('text-embedding-3-small', 4), keep_old => %s)",
            (keep_old,),
        )
        assert column_type(conn, shadow, "embedding") == "vector(4)"
        assert column_type(conn, view, "embedding") == "vector(3)"  # still the old store
        worker = one(conn, "select ai._vectorizer_worker_config(config) from ai.vectorizer")
        assert worker["destination"]["target_table"] == f"{HOSTILE_TABLE}_embedding_store_v2"

        assert one(conn, "select ai._vectorizer_reembed_feed(%s, 10)", (vid,)) == 3
        conn.execute(sql.SQL("delete from {}").format(queue))
        conn.execute(
            sql.SQL(
                "insert into {} (id, chunk_seq, chunk, embedding)"
                " select id, 0, body, '[1,2,3,4]' from {}"
            ).format(shadow, source)
        )
        # a source row deleted meanwhile leaves neither store with its vectors
        conn.execute(sql.SQL("delete from {} where id = 3").format(source))
        assert one(conn, sql.SQL("select count(*) from {}").format(shadow).as_string(conn)) == 2
        assert one(conn, "select ai._vectorizer_reembed_feed(%s, 10)", (vid,)) == -2
        assert one(conn, "select ai._vectorizer_swap_store(%s)", (vid,)) is True

        assert column_type(conn, view, "embedding") == "vector(4)"
        assert column_type(conn, store, "embedding") == "vector(4)"
        assert one(conn, "select to_regclass(%s)", (shadow.as_string(conn),)) is None
        before = sql.Identifier(HOSTILE_SCHEMA, f"{HOSTILE_TABLE}_embedding_store_before_v2")
        kept = one(conn, "select to_regclass(%s) is not null", (before.as_string(conn),))
        assert kept is keep_old
        assert one(conn, "select config ? 'shadow' from ai.vectorizer") is False
        assert one(conn, "select finished_at is not null from ai._vectorizer_reembed") is True
        assert (
            one(
                conn,
                "select count(*) from pg_trigger where tgname like '_vectorizer_shadow_trg_%%'",
            )
            == 0
        )
        assert one(
            conn,
            "select has_table_privilege('vz_alter_reader', %s, 'select')",
            (view.as_string(conn),),
        )
        rows = conn.execute(sql.SQL("select id, embedding::text from {} order by id").format(view))
        assert rows.fetchall() == [(1, "[1,2,3,4]"), (2, "[1,2,3,4]")]
        # nothing left to do
        assert one(conn, "select ai._vectorizer_reembed_feed(%s, 10)", (vid,)) == -1
    finally:
        conn.execute("drop owned by vz_alter_reader cascade")
        conn.execute("drop role vz_alter_reader")


def test_altering_back_the_dimensions_drops_the_shadow(conn: psycopg.Connection, docs: int) -> None:
    small = "ai.embedding_openai('text-embedding-3-small', 8)"
    conn.execute(
        "select ai.alter_vectorizer(%s,"
        " embedding => ai.embedding_openai('text-embedding-3-small', 16))",
        (docs,),
    )
    assert one(conn, "select to_regclass('public.docs_embedding_store_v2') is not null")
    assert one(conn, f"select ai.alter_vectorizer(%s, embedding => {small})", (docs,)) == 3
    assert one(conn, "select to_regclass('public.docs_embedding_store_v2')") is None
    assert one(conn, "select config ? 'shadow' from ai.vectorizer") is False
    assert (
        one(conn, "select count(*) from pg_trigger where tgname like '_vectorizer_shadow%%'") == 0
    )


def test_halfvec_is_a_change_of_vector_type_through_a_shadow(
    conn: psycopg.Connection, docs: int
) -> None:
    conn.execute(
        "select ai.alter_vectorizer(%s,"
        " destination => ai.destination_table(vector_type => 'halfvec'))",
        (docs,),
    )
    shadow = sql.Identifier("public", "docs_embedding_store_v2")
    assert column_type(conn, shadow, "embedding") == "halfvec(8)"


def test_drop_vectorizer_drops_a_half_filled_shadow(conn: psycopg.Connection, docs: int) -> None:
    conn.execute(
        "select ai.alter_vectorizer(%s,"
        " embedding => ai.embedding_openai('text-embedding-3-small', 16))",
        (docs,),
    )
    conn.execute("select ai.drop_vectorizer(%s)", (docs,))
    assert one(conn, "select to_regclass('public.docs_embedding_store_v2')") is None
    assert (
        one(conn, "select count(*) from pg_trigger where tgname like '_vectorizer_shadow%%'") == 0
    )
    conn.execute("delete from docs")  # no trigger left behind to fail


def test_status_command_shows_the_version_and_the_reembed(
    conn: psycopg.Connection, docs: int, db_url: str
) -> None:
    assert "Config versions" not in cli("status", "--db-url", db_url).stdout
    conn.execute(sql.SQL("delete from {}").format(sql.Identifier("ai", f"_vectorizer_q_{docs}")))
    conn.execute(f"select ai.alter_vectorizer(%s, chunking => {SMALL_CHUNKS})", (docs,))
    assert one(conn, "select ai._vectorizer_reembed_feed(%s, 2)", (docs,)) == 2
    conn.execute(sql.SQL("delete from {}").format(sql.Identifier("ai", f"_vectorizer_q_{docs}")))
    assert one(conn, "select ai._vectorizer_reembed_feed(%s, 1)", (docs,)) == 1
    eta = one(conn, "select reembed_eta from ai.vectorizer_status where id = %s", (docs,))
    assert eta is not None  # 2 of 5 done: the pace so far gives the rest
    result = cli("status", "--db-url", db_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("Config versions")
    row = lines[start + 2].split()
    assert row[:5] == [str(docs), "public_docs_embedding_store", "2", "2/5", "40.0%"]
