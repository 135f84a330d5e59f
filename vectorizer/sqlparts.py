"""Small psycopg.sql pieces that the per-vectorizer statements share (queue, reuse, writing,
recheck): identifiers are always `sql.Identifier`, values always placeholders."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from psycopg import sql


def ident_list(names: Sequence[str], prefix: str | None = None) -> sql.Composable:
    """`"a", "b"`, or `"p"."a", "p"."b"` with a prefix."""
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(name) for name in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, name) for name in names)


def placeholders(count: int) -> sql.Composable:
    return sql.SQL(", ").join(sql.Placeholder() * count)


def keys_condition(
    pk_names: Sequence[str], keys: Sequence[tuple[object, ...]], prefix: str | None = None
) -> tuple[sql.Composed, list[object]]:
    """`(pk1, pk2) in ((%s, %s), ...)` for `keys`, and its parameters."""
    condition = sql.SQL("({}) in ({})").format(
        ident_list(pk_names, prefix), _key_placeholders(len(pk_names), len(keys))
    )
    return condition, [value for key in keys for value in key]


@functools.lru_cache(maxsize=256)
def _key_placeholders(width: int, count: int) -> sql.SQL:
    # One SQL fragment, not a Composed of `count` tuples: psycopg renders a Composed part by
    # part on every execute, which cost ~0.7 ms per batch query at 50 keys.
    one_key = "(" + ", ".join(["%s"] * width) + ")"
    return sql.SQL(", ".join([one_key] * count))


def named_keys_condition(
    pk: Sequence[str], keys: Sequence[tuple[object, ...]]
) -> tuple[sql.Composed, dict[str, object]]:
    """`(pk1, pk2) in ((%(k0)s, %(k1)s), ...)` for `keys`, with named parameters (the query
    around it names its other parameters)."""
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
