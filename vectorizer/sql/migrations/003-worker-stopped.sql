-- When a worker process exited cleanly (ai._worker_stop), so `vectorizer status` can tell a
-- worker that stopped from one that died. NULL for running workers, crashed ones and pgai's.
alter table ai.vectorizer_worker_process
    add column if not exists stopped_at pg_catalog.timestamptz null default null;
