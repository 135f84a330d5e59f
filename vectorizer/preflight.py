"""Checks of what would fail every row of a vectorizer, made before any row is claimed.

A config that names a column the source lacks, a store that was dropped, or a destination
column that is gone is the vectorizer's error, not each row's: caught here it costs one error
row and a breaker trip, instead of an attempt charged to every queued key (which would move
the whole table to the failed queue after `retries` drains).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from vectorizer.catalog import relation_columns
from vectorizer.config import ColumnDestination, TableDestination, Vectorizer
from vectorizer.errors import VectorizerError
from vectorizer.stages.formatting import template_columns


async def check(conn: psycopg.AsyncConnection, vectorizer: Vectorizer) -> None:
    """Raise VectorizerError naming the first thing that would fail every row."""
    config = vectorizer.config
    source = _qualified(vectorizer.source_schema, vectorizer.source_table)
    columns = await relation_columns(conn, vectorizer.source_schema, vectorizer.source_table)
    if columns is None:
        raise VectorizerError(f"the source table {source} does not exist", step="loading")
    loaded = config.loading.column_name
    if loaded not in columns:
        raise VectorizerError(
            f"loading_{config.loading.implementation}: the source table {source} has no column "
            f'"{loaded}"',
            step="loading",
        )
    missing = sorted(template_columns(config.formatting) - columns)
    if missing:
        raise VectorizerError(
            f"the formatting template references {_names(missing)} which the source table "
            f"{source} does not have; its columns are {_names(sorted(columns))}",
            step="formatting",
        )
    await _check_destination(conn, vectorizer, columns)


async def _check_destination(
    conn: psycopg.AsyncConnection, vectorizer: Vectorizer, source_columns: frozenset[str]
) -> None:
    destination = vectorizer.config.destination
    if isinstance(destination, TableDestination):
        target = _qualified(destination.target_schema, destination.target_table)
        if (
            await relation_columns(conn, destination.target_schema, destination.target_table)
            is None
        ):
            raise VectorizerError(f"the destination table {target} does not exist", step="writing")
    elif (
        isinstance(destination, ColumnDestination)
        and destination.embedding_column not in source_columns
    ):
        raise VectorizerError(
            f'the destination column "{destination.embedding_column}" does not exist in '
            f"{_qualified(vectorizer.source_schema, vectorizer.source_table)}",
            step="writing",
        )


def _qualified(schema: str, table: str) -> str:
    return f'"{schema}"."{table}"'


def _names(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)
