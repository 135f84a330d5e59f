-- The worker's vector-index builds (one row per vectorizer, read by ai.vectorizer_status) and
-- the vectorizers whose chunks are searchable by full text (ai.enable_hybrid_search).
-- Conditional DDL, so a rerun or a database pgai created both take it.

create table if not exists ai._vectorizer_index_build
( vectorizer_id pg_catalog.int4 not null primary key
    references ai.vectorizer (id) on delete cascade
, state pg_catalog.text not null
    check (state in ('building', 'ready', 'failed', 'unsupported'))
, index_name pg_catalog.name
, phase pg_catalog.text
, percent pg_catalog.float4
, error pg_catalog.text
, attempts pg_catalog.int4 not null default 0
, started_at pg_catalog.timestamptz
, updated_at pg_catalog.timestamptz not null default pg_catalog.now()
, finished_at pg_catalog.timestamptz
);

create table if not exists ai._vectorizer_fulltext
( vectorizer_id pg_catalog.int4 not null primary key
    references ai.vectorizer (id) on delete cascade
, language pg_catalog.regconfig not null
, index_name pg_catalog.name not null
, created_at pg_catalog.timestamptz not null default pg_catalog.now()
);
