"""Key lists in batch statements: sent as one jsonb document typed by a table's key columns,
or as one placeholder per value when a value has no exact JSON form; both find the same rows."""

from __future__ import annotations

import datetime
import decimal
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from vectorizer.sqlparts import keys_condition, named_keys_condition

COLUMNS = {
    'Key "Id"': "int8",
    "name; drop": "text",
    "ref": "uuid",
    "at": "timestamptz",
    "local at": "timestamp",
    "day": "date",
    "amount": "numeric(10, 2)",
    "bin": "bytea",
    "flag": "bool",
}


def make_table(conn: psycopg.Connection) -> tuple[sql.Identifier, list[tuple[object, ...]]]:
    table = sql.Identifier("odd keys")
    conn.execute(
        sql.SQL("create table {} ({}, extra text not null, primary key ({}))").format(
            table,
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
                for name, kind in COLUMNS.items()
            ),
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        )
    )
    for i in range(6):
        conn.execute(
            sql.SQL("insert into {} values ({}, 'x')").format(
                table, sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS))
            ),
            (
                i,
                f"n'{i}\"\\",
                uuid.UUID(int=i),
                datetime.datetime(2024, 1, 1, 12, i, 30, 123456, tzinfo=datetime.UTC),
                datetime.datetime(2024, 6, 1, 0, 0, i),
                datetime.date(2024, 1, 1 + i),
                decimal.Decimal(f"{i}.50"),
                bytes([0, i, 255]),
                i % 2 == 0,
            ),
        )
    keys = conn.execute(
        sql.SQL("select {} from {} order by 1").format(
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), table
        )
    ).fetchall()
    return table, keys


def found(
    conn: psycopg.Connection, table: sql.Identifier, condition: sql.Composed, params: object
) -> list[int]:
    query = sql.SQL("select {} from {} where {} order by 1").format(
        sql.Identifier('Key "Id"'), table, condition
    )
    return [row[0] for row in conn.execute(query, params).fetchall()]


def test_keys_travel_as_one_jsonb_document_and_find_the_same_rows(conn: psycopg.Connection) -> None:
    table, keys = make_table(conn)
    wanted = [keys[1], keys[4], keys[5]]

    condition, params = keys_condition(list(COLUMNS), wanted, row_type=table)
    assert len(params) == 1 and isinstance(params[0], Jsonb)
    assert found(conn, table, condition, params) == [1, 4, 5]

    placeholders, values = keys_condition(list(COLUMNS), wanted)
    assert len(values) == 3 * len(COLUMNS)
    assert found(conn, table, placeholders, values) == [1, 4, 5]

    named, named_params = named_keys_condition(list(COLUMNS), wanted, row_type=table)
    assert list(named_params) == ["keys"]
    assert found(conn, table, named, named_params) == [1, 4, 5]


@pytest.mark.parametrize(
    "value", [float("nan"), 1.5, datetime.timedelta(days=1), datetime.time(12, 0), ["a"]]
)
def test_a_key_without_an_exact_json_form_keeps_one_placeholder_per_value(value: object) -> None:
    condition, params = keys_condition(
        ["a", "b"], [(1, "x"), (2, value)], row_type=sql.Identifier("t")
    )
    assert params == [1, "x", 2, value]
    assert "jsonb" not in repr(condition)
