-- Queue depth, status and error views, and usage grants.

-------------------------------------------------------------------------------
create or replace function ai.vectorizer_queue_pending
( vectorizer_id pg_catalog.int4
, exact_count pg_catalog.bool default false
) returns pg_catalog.int8 as
$func$
declare
    _queue_schema pg_catalog.name;
    _queue_table pg_catalog.name;
    _sql pg_catalog.text;
    _queue_depth pg_catalog.int8;
begin
    select v.queue_schema, v.queue_table into _queue_schema, _queue_table
    from ai.vectorizer v
    where v.id operator(pg_catalog.=) vectorizer_id;

    if _queue_schema is null or _queue_table is null then
        raise exception 'vectorizer has no queue table';
    end if;

    if exact_count then
        _sql = pg_catalog.format('select count(1) from %I.%I', _queue_schema, _queue_table);
        execute _sql into strict _queue_depth;
    else
        _sql = pg_catalog.format
        ('select count(1) from (select 1 from %I.%I limit 10001) x', _queue_schema, _queue_table);
        execute _sql into strict _queue_depth;
        if _queue_depth operator(pg_catalog.=) 10001 then
            _queue_depth = 9223372036854775807;
        end if;
    end if;
    return _queue_depth;
end;
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai.vectorizer_queue_pending
( name pg_catalog.text
, exact_count pg_catalog.bool default false
) returns pg_catalog.int8 as
$func$
    select ai.vectorizer_queue_pending(v.id, exact_count)
    from ai.vectorizer v
    where v.name operator(pg_catalog.=) vectorizer_queue_pending.name
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-- ai.vectorizer_status is defined in 090-operations.sql, with our columns after pgai's.

-------------------------------------------------------------------------------
create or replace view ai.vectorizer_errors as
select e.*, v.name
from ai._vectorizer_errors e
left outer join ai.vectorizer v on (e.id operator(pg_catalog.=) v.id);

-------------------------------------------------------------------------------
create or replace function ai.grant_vectorizer_usage
( to_user pg_catalog.name
, admin pg_catalog.bool default false
) returns void as
$func$
begin
    if not admin then
        execute pg_catalog.format('grant usage, create on schema ai to %I', to_user);
        execute pg_catalog.format('grant select, insert, update, delete on table ai.vectorizer to %I', to_user);
        execute pg_catalog.format('grant select on ai._vectorizer_errors to %I', to_user);
        execute pg_catalog.format('grant select on ai.vectorizer_errors to %I', to_user);
        execute pg_catalog.format('grant select on ai.vectorizer_status to %I', to_user);
        execute pg_catalog.format('grant select, insert, update, delete on ai._vectorizer_column_hash to %I', to_user);
        execute pg_catalog.format('grant select, insert, update on ai._vectorizer_reuse_stats to %I', to_user);
        execute pg_catalog.format('grant select, usage on sequence ai.vectorizer_id_seq to %I', to_user);
        -- search reads the hybrid settings; ai.enable_hybrid_search writes them
        execute pg_catalog.format('grant select, insert, update, delete on ai._vectorizer_fulltext to %I', to_user);
        execute pg_catalog.format('grant select on ai._vectorizer_index_build to %I', to_user);
        -- the status view's coverage counts keys that had nothing to embed
        execute pg_catalog.format('grant select on ai._vectorizer_empty_input to %I', to_user);
        -- ai.alter_vectorizer writes both; workers advance the re-embed
        execute pg_catalog.format('grant select, insert, update, delete on ai._vectorizer_config_version to %I', to_user);
        execute pg_catalog.format('grant select, insert, update, delete on ai._vectorizer_reembed to %I', to_user);
        -- workers record their executors per vectorizer; `vectorizer status` reads them
        execute pg_catalog.format('grant select, insert, update, delete on ai._vectorizer_worker_concurrency to %I', to_user);
    else
        execute pg_catalog.format('grant all privileges on schema ai to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai.pgai_lib_migration to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai.pgai_lib_version to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai.pgai_lib_feature_flag to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai.vectorizer to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai._vectorizer_errors to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai.vectorizer_errors to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai.vectorizer_status to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai._vectorizer_column_hash to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai._vectorizer_reuse_stats to %I', to_user);
        execute pg_catalog.format('grant all privileges on sequence ai.vectorizer_id_seq to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai._vectorizer_fulltext to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai._vectorizer_index_build to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai._vectorizer_empty_input to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai._vectorizer_config_version to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai._vectorizer_reembed to %I', to_user);
        execute pg_catalog.format('grant all privileges on table ai._vectorizer_worker_concurrency to %I', to_user);
    end if;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;
