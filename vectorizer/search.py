"""Semantic search over a vectorizer's embeddings: vector (ANN) and hybrid (full text + RRF).

The query text is embedded with the vectorizer's own embedding config (same provider, model and
dimensions; providers that tell documents from queries are told it is a query), then the
vectorizer's view is ranked by the distance operator that matches its index's opclass, so the
worker-built HNSW index answers it.

Hybrid search also ranks the chunks by Postgres full text (`websearch_to_tsquery` against
`to_tsvector(language, chunk)`, which `ai.enable_hybrid_search` indexes) and fuses both rankings
by reciprocal rank fusion: score = w_vector / (rrf_k + rank_vector) + w_text / (rrf_k + rank_text).

The filter's trust model: `filter` is a SQL boolean expression over the view's columns, written
by the application or operator (never by an end user), with `%s` / `%(name)s` placeholders
whose values travel separately as query parameters. It runs in a subquery on the view, in a
read-only transaction, with the privileges of the connection's role: it can read what that role
can read, and write nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from vectorizer.config import (
    ColumnDestination,
    ColumnLoading,
    Embedding,
    LiteLLMEmbedding,
    TableDestination,
    Vectorizer,
    VoyageAIEmbedding,
)
from vectorizer.embedders import make_embedder

__all__ = ["SearchError", "SearchHit", "asearch", "search"]

log = logging.getLogger(__name__)

RRF_K = 60
DEFAULT_LANGUAGE = "english"
# opclass kind (vector_<kind>_ops) -> pgvector operator that an index of that opclass serves
_OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>", "l1": "<+>"}
# litellm extra_options values that mean "a document"; a query gets the matching one
_QUERY_INPUT_TYPES = {
    "search_document": "search_query",  # cohere
    "document": "query",  # voyage
    "RETRIEVAL_DOCUMENT": "RETRIEVAL_QUERY",  # gemini / vertex
    "passage": "query",  # nvidia, jina-style
    "retrieval.passage": "retrieval.query",  # jina
}
Params = Sequence[Any] | Mapping[str, Any] | None


class SearchError(Exception):
    """The search cannot run: the message says what was wrong."""


@dataclass(frozen=True)
class SearchHit:
    """One result: its rank (1 = best), scores, the chunk and the source row's key."""

    rank: int
    chunk: str | None
    primary_key: dict[str, Any]
    distance: float | None  # vector distance; None for a hybrid hit found by full text only
    score: float  # hybrid: the RRF score; vector: -distance (higher is better either way)
    chunk_seq: int | None = None
    text_rank: int | None = None  # hybrid: rank in the full-text ranking
    vector_rank: int | None = None  # hybrid: rank in the vector ranking
    row: dict[str, Any] = field(default_factory=dict)  # the view's other columns


@dataclass(frozen=True)
class SearchOptions:
    k: int = 10
    hybrid: bool = False
    filter: str | None = None
    params: Params = None
    rrf_k: int = RRF_K
    vector_weight: float = 1.0
    text_weight: float = 1.0
    candidates: int | None = None  # per ranking before fusion; default max(4k, 40)
    ef_search: int | None = None  # hnsw.ef_search; default max(40, 2k)

    def check(self) -> None:
        if self.k < 1:
            raise SearchError(f"k must be at least 1, got {self.k}")
        if self.rrf_k < 0:
            raise SearchError(f"rrf_k must be 0 or more, got {self.rrf_k}")
        if self.vector_weight < 0 or self.text_weight < 0:
            raise SearchError("weights must be 0 or more")
        if self.filter is not None and not self.filter.strip():
            raise SearchError("filter is empty: give a SQL predicate or leave it out")
        if self.params and self.filter is None:
            raise SearchError("params were given without a filter that uses them")

    @property
    def pool(self) -> int:
        return self.candidates or max(4 * self.k, 40)


@dataclass(frozen=True)
class _Target:
    """What the query reads: the relation, its vector and text columns, and the key."""

    relation: sql.Composable
    vector_column: str
    chunk_column: str | None
    has_chunk_seq: bool
    pk: list[str]
    operator: str
    vector_type: sql.Composable
    language: str | None
    fulltext_indexed: bool


def search(
    conn_or_url: psycopg.Connection | str,
    vectorizer: str | int,
    query: str,
    k: int = 10,
    hybrid: bool = False,
    filter: str | None = None,
    params: Params = None,
    **options: Any,
) -> list[SearchHit]:
    """The `k` chunks of `vectorizer` (name or id) nearest to `query`, best first.

    Blocking: call `asearch` from async code. Extra options: rrf_k, vector_weight,
    text_weight, candidates, ef_search.
    """
    settings = SearchOptions(k=k, hybrid=hybrid, filter=filter, params=params, **options)
    settings.check()
    if isinstance(conn_or_url, str):
        with psycopg.connect(conn_or_url, autocommit=True) as conn:
            return _search_sync(conn, vectorizer, query, settings)
    return _search_sync(conn_or_url, vectorizer, query, settings)


async def asearch(
    conn_or_url: psycopg.AsyncConnection | str, vectorizer: str | int, query: str, **options: Any
) -> list[SearchHit]:
    """`search` for async code; the same keyword options (k, hybrid, filter, params, ...)."""
    settings = SearchOptions(**options)
    settings.check()
    if isinstance(conn_or_url, str):
        async with await psycopg.AsyncConnection.connect(conn_or_url, autocommit=True) as conn:
            return await _search_async(conn, vectorizer, query, settings)
    return await _search_async(conn_or_url, vectorizer, query, settings)


# --- the two drivers: same statements, sync or async ----------------------------------------


def _search_sync(
    conn: psycopg.Connection, vectorizer: str | int, query: str, options: SearchOptions
) -> list[SearchHit]:
    with conn.cursor(row_factory=dict_row) as cursor:
        loaded = _vectorizer_from(
            cursor.execute(*_vectorizer_query(vectorizer)).fetchone(), vectorizer
        )
        target = _target(loaded, cursor.execute(*_target_facts_query(loaded)).fetchone(), options)
    vector = asyncio.run(embed_query(loaded.config.embedding, query))
    statement, values = _statement(target, options, vector, query)
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        for setting in _session_settings(options, read_only=idle):
            cursor.execute(*setting)
        rows = cursor.execute(statement, values).fetchall()
    return _hits(target, options, rows)


async def _search_async(
    conn: psycopg.AsyncConnection, vectorizer: str | int, query: str, options: SearchOptions
) -> list[SearchHit]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(*_vectorizer_query(vectorizer))
        loaded = _vectorizer_from(await cursor.fetchone(), vectorizer)
        await cursor.execute(*_target_facts_query(loaded))
        target = _target(loaded, await cursor.fetchone(), options)
    vector = await embed_query(loaded.config.embedding, query)
    statement, values = _statement(target, options, vector, query)
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        for setting in _session_settings(options, read_only=idle):
            await cursor.execute(*setting)
        await cursor.execute(statement, values)
        rows = await cursor.fetchall()
    return _hits(target, options, rows)


# --- the query embedding --------------------------------------------------------------------


def query_embedding_config(config: Embedding) -> Embedding:
    """`config` as it should embed a search query (input_type query where it matters)."""
    if isinstance(config, VoyageAIEmbedding) and config.input_type is not None:
        return config.model_copy(update={"input_type": "query"})
    if isinstance(config, LiteLLMEmbedding):
        extra = dict(config.extra_options)
        for key in ("input_type", "task_type"):
            value = extra.get(key)
            if isinstance(value, str) and value in _QUERY_INPUT_TYPES:
                extra[key] = _QUERY_INPUT_TYPES[value]
        return config.model_copy(update={"extra_options": extra})
    return config


async def embed_query(config: Embedding, text: str) -> list[float]:
    """The vector of `text` from the vectorizer's embedding provider."""
    if not text.strip():
        raise SearchError("the query text is empty")
    embedder = make_embedder(query_embedding_config(config))
    try:
        result = await embedder.embed([text])
    finally:
        await embedder.aclose()
    if result.errors:
        raise SearchError(f"the query could not be embedded: {result.errors[0]}")
    vector = result.vectors[0]
    assert vector is not None
    return [float(x) for x in vector]


# --- catalog lookups --------------------------------------------------------------------------


def _vectorizer_query(vectorizer: str | int) -> tuple[str, tuple[Any, ...]]:
    by_id = isinstance(vectorizer, int) or str(vectorizer).isdigit()
    where = "v.id = %s::int4" if by_id else "v.name = %s"
    return (
        f"""
        select v.id, v.name, v.source_schema, v.source_table, v.source_pk, v.queue_schema,
               v.queue_table, coalesce(v.queue_failed_table, '_vectorizer_q_failed_' || v.id)
               as queue_failed_table, v.disabled, v.config
        from ai.vectorizer v where {where}
        """,
        (str(vectorizer),),
    )


def _vectorizer_from(row: dict[str, Any] | None, wanted: str | int) -> Vectorizer:
    if row is None:
        raise SearchError(f"no vectorizer with the name or id {wanted!r}")
    return Vectorizer.model_validate(row)


def _relation(loaded: Vectorizer) -> tuple[str, str, str]:
    """(schema, relation, vector column) the search reads."""
    destination = loaded.config.destination
    if isinstance(destination, TableDestination):
        return (
            destination.view_schema or loaded.source_schema,
            destination.view_name or f"{loaded.source_table}_embedding",
            "embedding",
        )
    return loaded.source_schema, loaded.source_table, destination.embedding_column


def _target_facts_query(loaded: Vectorizer) -> tuple[str, tuple[Any, ...]]:
    schema, relation, column = _relation(loaded)
    return (
        """
        select t.typname as vector_type, tn.nspname as vector_schema,
               f.language::text as language,
               f.index_name is not null and exists (
                   select 1 from pg_catalog.pg_index i join pg_catalog.pg_class c
                   on c.oid = i.indexrelid join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                   where c.relname = f.index_name and i.indisvalid
               ) as fulltext_indexed
        from pg_catalog.pg_attribute a
        join pg_catalog.pg_type t on t.oid = a.atttypid
        join pg_catalog.pg_namespace tn on tn.oid = t.typnamespace
        left join ai._vectorizer_fulltext f on f.vectorizer_id = %s
        where a.attrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))
          and a.attname = %s and not a.attisdropped
        """,
        (loaded.id, schema, relation, column),
    )


def _target(loaded: Vectorizer, facts: dict[str, Any] | None, options: SearchOptions) -> _Target:
    schema, relation, column = _relation(loaded)
    if facts is None:
        raise SearchError(
            f"vectorizer {loaded.name}: {schema}.{relation} has no vector column {column!r}"
            " (was its view or table dropped?)"
        )
    destination = loaded.config.destination
    if isinstance(destination, ColumnDestination):
        loading = loaded.config.loading
        chunk_column = loading.column_name if isinstance(loading, ColumnLoading) else None
        if options.hybrid:
            raise SearchError(
                f"vectorizer {loaded.name} stores one embedding per row in a column: hybrid "
                "search needs a table destination (chunks in a store table)"
            )
    else:
        chunk_column = "chunk"
    return _Target(
        relation=sql.Identifier(schema, relation),
        vector_column=column,
        chunk_column=chunk_column,
        has_chunk_seq=isinstance(destination, TableDestination),
        pk=loaded.pk_names,
        operator=_operator(loaded),
        vector_type=sql.Identifier(facts["vector_schema"], facts["vector_type"]),
        language=facts["language"],
        fulltext_indexed=bool(facts["fulltext_indexed"]),
    )


def _operator(loaded: Vectorizer) -> str:
    """The distance operator the vectorizer's index serves (cosine unless configured)."""
    indexing = loaded.config.indexing
    opclass = ""
    if indexing is not None:
        opclass = str(indexing.model_dump().get("opclass") or "")
    kind = opclass.removeprefix("vector_").removeprefix("halfvec_").removesuffix("_ops")
    return _OPERATORS.get(kind, "<=>")


# --- the statement --------------------------------------------------------------------------


class _Statement:
    """Builds a composed statement and its positional parameters in order of appearance, so
    the caller's filter (positional or named placeholders) can be repeated safely."""

    def __init__(self, params: Params) -> None:
        self.named = isinstance(params, Mapping)
        self.values: list[Any] | dict[str, Any] = dict(params) if self.named else []  # type: ignore[arg-type]
        self._user = params
        self._counter = 0

    def value(self, value: Any) -> sql.Composable:
        if isinstance(self.values, dict):
            self._counter += 1
            name = f"_vz_{self._counter}"
            self.values[name] = value
            return sql.Placeholder(name)
        self.values.append(value)
        return sql.Placeholder()

    def filter(self, predicate: str | None) -> sql.Composable:
        if predicate is None:
            return sql.SQL("true")
        if isinstance(self.values, list) and self._user:
            self.values.extend(self._user)  # type: ignore[arg-type]
        return sql.SQL("({})").format(sql.SQL(predicate))  # type: ignore[arg-type]


def _statement(
    target: _Target, options: SearchOptions, vector: list[float], text: str
) -> tuple[sql.Composed, list[Any] | dict[str, Any]]:
    builder = _Statement(options.params)
    literal = "[" + ",".join(repr(x) for x in vector) + "]"
    if options.hybrid:
        statement = _hybrid(builder, target, options, literal, text)
    else:
        statement = _vector_only(builder, target, options, literal)
    return statement, builder.values


def _distance(builder: _Statement, target: _Target, literal: str) -> sql.Composable:
    return sql.SQL("v.{} {} cast({} as {})").format(
        sql.Identifier(target.vector_column),
        sql.SQL(target.operator),
        builder.value(literal),
        target.vector_type,
    )


def _vector_only(
    builder: _Statement, target: _Target, options: SearchOptions, literal: str
) -> sql.Composed:
    # the inner query is what the ANN index answers; the outer one restores the exact order
    # that an iterative (relaxed-order) index scan may not keep
    distance = _distance(builder, target, literal)
    return sql.SQL(
        "select * from (select v.*, {distance} as _vz_distance from {relation} v"
        " where {vector} is not null and {filter} order by _vz_distance limit {k}) hits"
        " order by _vz_distance"
    ).format(
        distance=distance,
        relation=target.relation,
        vector=sql.SQL("v.{}").format(sql.Identifier(target.vector_column)),
        filter=builder.filter(options.filter),
        k=builder.value(options.k),
    )


def _hybrid(
    builder: _Statement, target: _Target, options: SearchOptions, literal: str, text: str
) -> sql.Composed:
    language = sql.SQL("{}::pg_catalog.regconfig").format(
        sql.Literal(target.language or DEFAULT_LANGUAGE)
    )
    tsvector = sql.SQL("pg_catalog.to_tsvector({}, v.chunk)").format(language)
    vector_hits = sql.SQL(
        "select embedding_uuid, _vz_distance,"
        " row_number() over (order by _vz_distance) as _vz_rank"
        " from (select v.embedding_uuid, {distance} as _vz_distance from {relation} v"
        " where {filter} order by _vz_distance limit {pool}) x"
    ).format(
        distance=_distance(builder, target, literal),
        relation=target.relation,
        filter=builder.filter(options.filter),
        pool=builder.value(options.pool),
    )
    text_hits = sql.SQL(
        "select embedding_uuid, row_number() over (order by _vz_score desc) as _vz_rank"
        " from (select v.embedding_uuid, pg_catalog.ts_rank_cd({tsvector}, q) as _vz_score"
        " from {relation} v, pg_catalog.websearch_to_tsquery({language}, {text}) q"
        " where {tsvector} operator(pg_catalog.@@) q and {filter}"
        " order by _vz_score desc limit {pool}) y"
    ).format(
        tsvector=tsvector,
        relation=target.relation,
        language=language,
        text=builder.value(text),
        filter=builder.filter(options.filter),
        pool=builder.value(options.pool),
    )
    return sql.SQL(
        "with vector_hits as ({vector_hits}), text_hits as ({text_hits}),"
        " fused as (select coalesce(a.embedding_uuid, b.embedding_uuid) as embedding_uuid,"
        " coalesce({wv} / ({rrf_a} + a._vz_rank), 0) + coalesce({wt} / ({rrf_b} + b._vz_rank), 0)"
        " as _vz_score, a._vz_distance, a._vz_rank as _vz_vector_rank,"
        " b._vz_rank as _vz_text_rank"
        " from vector_hits a full outer join text_hits b on a.embedding_uuid = b.embedding_uuid"
        " order by _vz_score desc limit {k})"
        " select v.*, f._vz_score, f._vz_distance, f._vz_vector_rank, f._vz_text_rank"
        " from fused f join {relation} v on v.embedding_uuid = f.embedding_uuid"
        " order by f._vz_score desc, f._vz_distance"
    ).format(
        vector_hits=vector_hits,
        text_hits=text_hits,
        # keyword order is placeholder order: positional values are collected as they are made
        wv=builder.value(float(options.vector_weight)),
        rrf_a=builder.value(float(options.rrf_k)),
        wt=builder.value(float(options.text_weight)),
        rrf_b=builder.value(float(options.rrf_k)),
        k=builder.value(options.k),
        relation=target.relation,
    )


def _session_settings(options: SearchOptions, read_only: bool) -> list[tuple[str, tuple[Any, ...]]]:
    settings: list[tuple[str, tuple[Any, ...]]] = []
    if read_only:  # our own transaction: nothing in the filter can write
        settings.append(("set transaction read only", ()))
    ef_search = options.ef_search or max(40, 2 * options.k, options.pool if options.hybrid else 0)
    settings.append(("select pg_catalog.set_config('hnsw.ef_search', %s, true)", (str(ef_search),)))
    if options.filter is not None:
        # pgvector >= 0.8: keep scanning the index until enough rows pass the filter
        settings.append(
            ("select pg_catalog.set_config('hnsw.iterative_scan', 'relaxed_order', true)", ())
        )
    return settings


def _hits(target: _Target, options: SearchOptions, rows: list[dict[str, Any]]) -> list[SearchHit]:
    hits = []
    hidden = {target.vector_column, "embedding_uuid"}
    for rank, row in enumerate(rows, start=1):
        distance = row.pop("_vz_distance", None)
        score = row.pop("_vz_score", None)
        vector_rank = row.pop("_vz_vector_rank", None)
        text_rank = row.pop("_vz_text_rank", None)
        hits.append(
            SearchHit(
                rank=rank,
                chunk=row.get(target.chunk_column) if target.chunk_column else None,
                primary_key={name: row.get(name) for name in target.pk},
                distance=None if distance is None else float(distance),
                score=float(score) if score is not None else -float(distance or 0.0),
                chunk_seq=row.get("chunk_seq") if target.has_chunk_seq else None,
                vector_rank=vector_rank,
                text_rank=text_rank,
                row={key: value for key, value in row.items() if key not in hidden},
            )
        )
    if options.hybrid and not target.fulltext_indexed and rows:
        log.info("hybrid search without a full-text index: run ai.enable_hybrid_search(...)")
    return hits


# --- output for the CLI ------------------------------------------------------------------------


def render_hits(hits: Sequence[SearchHit], as_json: bool = False, width: int = 100) -> str:
    """A table (rank, distance or score, chunk trimmed, key), or JSON lines with everything."""
    if as_json:
        return "\n".join(
            json.dumps(dataclasses.asdict(hit), default=str, ensure_ascii=False) for hit in hits
        )
    if not hits:
        return "(no results)"
    lines = []
    for hit in hits:
        measure = (
            f"score {hit.score:.4f}"
            if hit.vector_rank is not None or hit.text_rank is not None
            else f"distance {hit.distance:.4f}"
        )
        key = ", ".join(f"{name}={value}" for name, value in hit.primary_key.items())
        chunk = " ".join((hit.chunk or "").split())
        if len(chunk) > width:
            chunk = chunk[: width - 1] + "…"
        lines.append(f"{hit.rank:>3}  {measure}  [{key}]  {chunk}")
    return "\n".join(lines)


class _CallableModule(types.ModuleType):
    """`vectorizer.search(...)` is the function, even once this module has been imported
    (which makes `vectorizer.search` the module)."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[SearchHit]:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
