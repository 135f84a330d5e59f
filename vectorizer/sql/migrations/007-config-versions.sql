-- Changing a vectorizer in place (ai.alter_vectorizer, 055-alter.sql): every config that
-- changes vectors is a numbered version, and a version that must re-embed the source keeps
-- its progress here so a worker killed mid-way resumes where the last one stopped.

-- The history; ai.vectorizer.config stays the current config, as in pgai. A vectorizer with no
-- row here is at version 1 (its creation config).
create table if not exists ai._vectorizer_config_version
( vectorizer_id pg_catalog.int4 not null references ai.vectorizer (id) on delete cascade
, version pg_catalog.int4 not null
, config pg_catalog.jsonb not null
, created_at pg_catalog.timestamptz not null default pg_catalog.now()
, primary key (vectorizer_id, version)
);

-- One re-embed per vectorizer at a time: a newer version restarts it from the first key.
-- `cursor` is the last source key queued (a jsonb object of its key columns), so workers
-- walk the source's primary key index in slices and never queue the whole table at once.
create table if not exists ai._vectorizer_reembed
( vectorizer_id pg_catalog.int4 not null primary key references ai.vectorizer (id) on delete cascade
, version pg_catalog.int4 not null
, cursor pg_catalog.jsonb
, keys_total pg_catalog.int8 not null
, keys_fed pg_catalog.int8 not null default 0
, last_fed pg_catalog.int8 not null default 0
, fed_all pg_catalog.bool not null default false
, started_at pg_catalog.timestamptz not null default pg_catalog.now()
, finished_at pg_catalog.timestamptz
);
