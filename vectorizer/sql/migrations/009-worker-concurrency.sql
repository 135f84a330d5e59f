-- The executors each worker runs per vectorizer (adaptive unless a concurrency was set),
-- written with the heartbeat; `vectorizer status` sums them over the live workers.
create table if not exists ai._vectorizer_worker_concurrency
( worker_id pg_catalog.uuid not null
, vectorizer_id pg_catalog.int4 not null references ai.vectorizer (id) on delete cascade
, executors pg_catalog.int4 not null
, adaptive pg_catalog.bool not null
, updated_at pg_catalog.timestamptz not null default pg_catalog.now()
, primary key (worker_id, vectorizer_id)
);
