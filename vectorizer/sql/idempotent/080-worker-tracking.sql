-- Worker liveness and per-vectorizer progress, written by vectorizer-worker.

-------------------------------------------------------------------------------
create or replace function ai._worker_start
( version pg_catalog.text
, expected_heartbeat_interval pg_catalog.interval
) returns pg_catalog.uuid as
$func$
declare
    _id pg_catalog.uuid;
begin
    insert into ai.vectorizer_worker_process (version, expected_heartbeat_interval)
    values (version, expected_heartbeat_interval)
    returning id into strict _id;
    return _id;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._worker_heartbeat
( worker_id pg_catalog.uuid
, num_successes_since_last_heartbeat pg_catalog.int4
, num_errors_since_last_heartbeat pg_catalog.int4
, error_message pg_catalog.text
) returns void as
$func$
declare
    _now pg_catalog.timestamptz = pg_catalog.clock_timestamp();
begin
    update ai.vectorizer_worker_process set
      last_heartbeat = _now
    , heartbeat_count = heartbeat_count operator(pg_catalog.+) 1
    , error_count = error_count operator(pg_catalog.+) num_errors_since_last_heartbeat
    , success_count = success_count operator(pg_catalog.+) num_successes_since_last_heartbeat
    , last_error_message = case when error_message is not null then error_message else last_error_message end
    , last_error_at = case when error_message is not null then _now else last_error_at end
    where id operator(pg_catalog.=) worker_id;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._worker_progress
( worker_id pg_catalog.uuid
, worker_vectorizer_id pg_catalog.int4
, num_successes pg_catalog.int4
, error_message pg_catalog.text
) returns void as
$func$
declare
    _now pg_catalog.timestamptz = pg_catalog.clock_timestamp();
begin
    insert into ai.vectorizer_worker_progress (vectorizer_id)
    values (worker_vectorizer_id)
    on conflict do nothing;

    if error_message is null then
        update ai.vectorizer_worker_progress set
          last_success_at = _now
        , last_success_process_id = worker_id
        , success_count = success_count operator(pg_catalog.+) num_successes
        where vectorizer_id operator(pg_catalog.=) worker_vectorizer_id;
    else
        update ai.vectorizer_worker_progress set
          last_error_at = _now
        , last_error_message = error_message
        , last_error_process_id = worker_id
        , error_count = error_count operator(pg_catalog.+) 1
        , success_count = success_count operator(pg_catalog.+) num_successes
        where vectorizer_id operator(pg_catalog.=) worker_vectorizer_id;
    end if;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Ours, not pgai's: a worker that exits cleanly says so, and shows as stopped instead of stale.
create or replace function ai._worker_stop(worker_id pg_catalog.uuid) returns void as
$func$
    update ai.vectorizer_worker_process set stopped_at = pg_catalog.clock_timestamp()
    where id operator(pg_catalog.=) worker_id;
$func$ language sql volatile security invoker
set search_path to pg_catalog, pg_temp;
