"""Small psycopg.sql pieces that the per-vectorizer statements share (queue, reuse, writing,
recheck): identifiers are always `sql.Identifier`, values always placeholders."""

from __future__ import annotations

import datetime
import decimal
import functools
import uuid
from collections.abc import Sequence

import orjson
from psycopg import sql
from psycopg.types.json import Jsonb


def ident_list(names: Sequence[str], prefix: str | None = None) -> sql.Composable:
    """`"a", "b"`, or `"p"."a", "p"."b"` with a prefix."""
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(name) for name in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, name) for name in names)


def placeholders(count: int) -> sql.Composable:
    return sql.SQL(", ").join(sql.Placeholder() * count)


def keys_condition(
    pk_names: Sequence[str],
    keys: Sequence[tuple[object, ...]],
    prefix: str | None = None,
    *,
    row_type: sql.Identifier | None = None,
) -> tuple[sql.Composed, list[object]]:
    """`(pk1, pk2) in (...)` for `keys`, and its parameters: one jsonb document typed by
    `row_type` (a table with the key columns) when the keys can travel as JSON, else
    `((%s, %s), ...)`."""
    if row_type is not None and json_keys(keys):
        condition = sql.SQL("({}) in ({})").format(
            ident_list(pk_names, prefix), _json_key_rows(pk_names, row_type, sql.Placeholder())
        )
        return condition, [_keys_document(pk_names, keys)]
    condition = sql.SQL("({}) in ({})").format(
        ident_list(pk_names, prefix), _key_placeholders(len(pk_names), len(keys))
    )
    return condition, [value for key in keys for value in key]


# Key values whose JSON form (orjson's, or `key_text`) is read back exactly by the column's
# input function. Anything else (a float that may be NaN, an interval, a range) keeps one
# placeholder per value.
_JSON_KEY_TYPES = (int, str, uuid.UUID, datetime.date, decimal.Decimal, bytes)


def json_keys(keys: Sequence[tuple[object, ...]]) -> bool:
    """Whether `keys` can be sent as one jsonb document.

    One parameter instead of one per value: psycopg dumps it in one C call, and a statement
    with more than 50 parameters is parsed again on every execute (psycopg caches only
    smaller ones), ~0.2 ms per batch statement at 50 keys."""
    return all(isinstance(value, _JSON_KEY_TYPES) for key in keys for value in key)


def _json_key_rows(
    pk_names: Sequence[str], row_type: sql.Identifier, placeholder: sql.Composable
) -> sql.Composed:
    # the row type gives each value its column's type, as the placeholders' inference did
    return sql.SQL("select {} from pg_catalog.jsonb_populate_recordset(null::{}, {})").format(
        ident_list(pk_names), row_type, placeholder
    )


def _keys_document(pk_names: Sequence[str], keys: Sequence[tuple[object, ...]]) -> Jsonb:
    return Jsonb([dict(zip(pk_names, key, strict=True)) for key in keys], dumps=_dump_keys)


def _dump_keys(document: object) -> bytes:
    return orjson.dumps(document, default=key_text)


def key_text(value: object) -> str:
    """A key value JSON cannot hold, as text its column's input function reads back (in SQL,
    `(pk ->> 'col')::type`)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()  # bytea's hex input format
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    return str(value)  # Decimal, UUID, and the text form of other types


@functools.lru_cache(maxsize=256)
def _key_placeholders(width: int, count: int) -> sql.SQL:
    # One SQL fragment, not a Composed of `count` tuples: psycopg renders a Composed part by
    # part on every execute, which cost ~0.7 ms per batch query at 50 keys.
    one_key = "(" + ", ".join(["%s"] * width) + ")"
    return sql.SQL(", ".join([one_key] * count))


def named_keys_condition(
    pk: Sequence[str],
    keys: Sequence[tuple[object, ...]],
    *,
    row_type: sql.Identifier | None = None,
) -> tuple[sql.Composed, dict[str, object]]:
    """`keys_condition` with named parameters (the query around it names its others): `keys`,
    or `(pk1, pk2) in ((%(k0)s, %(k1)s), ...)`."""
    if row_type is not None and json_keys(keys):
        condition = sql.SQL("({}) in ({})").format(
            ident_list(pk), _json_key_rows(pk, row_type, sql.Placeholder("keys"))
        )
        return condition, {"keys": _keys_document(pk, keys)}
    condition = sql.SQL("({}) in ({})").format(
        ident_list(pk), _named_key_placeholders(len(pk), len(keys))
    )
    params = {f"k{i}": value for i, value in enumerate(v for key in keys for v in key)}
    return condition, params


@functools.lru_cache(maxsize=256)
def _named_key_placeholders(width: int, count: int) -> sql.SQL:
    # one fragment, as in `_key_placeholders`: composing it per key cost ~0.3 ms per batch
    rows = (
        "(" + ", ".join(f"%(k{r * width + c})s" for c in range(width)) + ")" for r in range(count)
    )
    return sql.SQL(", ".join(rows))
