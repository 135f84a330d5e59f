-- Operating vectorizers: backlog, failures and coverage at a glance, and requeueing failed keys.

-------------------------------------------------------------------------------
-- Rows of a table: exact up to `bound`, the planner's estimate above it (never a sentinel).
create or replace function ai._vectorizer_count_rows
( table_schema pg_catalog.name
, table_name pg_catalog.name
, bound pg_catalog.int8 default 100000
, filter pg_catalog.text default null
) returns pg_catalog.int8 as
$func$
declare
    _relation pg_catalog.regclass;
    _count pg_catalog.int8;
    _estimate pg_catalog.float4;
begin
    _relation = pg_catalog.to_regclass(pg_catalog.format('%I.%I', table_schema, table_name));
    -- a table the caller may not read has no count for them (ai.vectorizer_status stays usable)
    if _relation is null
    or not pg_catalog.has_table_privilege(pg_catalog.current_user(), _relation, 'select') then
        return null;
    end if;
    execute pg_catalog.format
    ( 'select pg_catalog.count(*) from (select 1 from %s%s limit %s) x'
    , _relation
    , case when filter is not null then ' where ' operator(pg_catalog.||) filter else '' end
    , bound operator(pg_catalog.+) 1
    ) into strict _count;
    if _count operator(pg_catalog.<=) bound then
        return _count;
    end if;
    select c.reltuples into _estimate from pg_catalog.pg_class c where c.oid operator(pg_catalog.=) _relation;
    return greatest(_count, _estimate::pg_catalog.int8);
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Facts about one vectorizer for monitoring, each cheap to compute.
create or replace function ai._vectorizer_stats
( vectorizer_id pg_catalog.int4
, out pending_items_estimate pg_catalog.int8
, out failed_items pg_catalog.int8
, out oldest_pending_at pg_catalog.timestamptz
, out source_rows pg_catalog.int8
, out embedded_rows pg_catalog.int8
) as
$func$
declare
    _vec ai.vectorizer;
    _destination pg_catalog.jsonb;
begin
    select * into _vec from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;
    if not found then
        return;
    end if;
    _destination = _vec.config operator(pg_catalog.->) 'destination';
    pending_items_estimate = ai._vectorizer_count_rows(_vec.queue_schema, _vec.queue_table);
    failed_items = ai._vectorizer_count_rows(_vec.queue_schema, _vec.queue_failed_table);
    if pending_items_estimate is not null then  -- the queue exists and the caller may read it
        execute pg_catalog.format
        ('select pg_catalog.min(queued_at) from %I.%I', _vec.queue_schema, _vec.queue_table)
        into oldest_pending_at;
    end if;
    source_rows = ai._vectorizer_count_rows(_vec.source_schema, _vec.source_table);
    if (_destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'table' then
        -- every embedded source row has exactly one chunk 0
        embedded_rows = ai._vectorizer_count_rows
        ( _destination operator(pg_catalog.->>) 'target_schema'
        , _destination operator(pg_catalog.->>) 'target_table'
        , 100000
        , 'chunk_seq operator(pg_catalog.=) 0'
        );
    else
        embedded_rows = ai._vectorizer_count_rows
        ( _vec.source_schema
        , _vec.source_table
        , 100000
        , pg_catalog.format('%I is not null', _destination operator(pg_catalog.->>) 'embedding_column')
        );
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Source rows the worker found with nothing to embed (NULL, '', whitespace only, an empty
-- document), exact up to `bound`. A key recorded before its row was deleted is not counted:
-- the DELETE trigger does not queue table-destination keys, so the worker never sees them again.
create or replace function ai._vectorizer_empty_rows
( vectorizer_id pg_catalog.int4
, bound pg_catalog.int8 default 100000
) returns pg_catalog.int8 as
$func$
declare
    _vec ai.vectorizer;
    _source pg_catalog.regclass;
    _match pg_catalog.text;
    _count pg_catalog.int8;
begin
    select * into _vec from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;
    if not found then
        return null;
    end if;
    _source = pg_catalog.to_regclass(pg_catalog.format('%I.%I', _vec.source_schema, _vec.source_table));
    if _source is null or pg_catalog.to_regclass('ai._vectorizer_empty_input') is null then
        return null;
    end if;
    if not pg_catalog.has_table_privilege(pg_catalog.current_user(), _source, 'select')
    or not pg_catalog.has_table_privilege
        (pg_catalog.current_user(), 'ai._vectorizer_empty_input'::pg_catalog.regclass, 'select')
    then
        return null;  -- a viewer who may not read them gets no count (the view stays usable)
    end if;
    select pg_catalog.string_agg
    ( pg_catalog.format
      ( 's.%I %s (e.pk operator(pg_catalog.->>) %L)::%s'
      , x.attname, ai._vectorizer_eq_operator(x.typname), x.attname, x.typname
      )
    , ' and ' order by x.pknum
    )
    into strict _match
    from pg_catalog.jsonb_to_recordset(_vec.source_pk) x(pknum int4, attname pg_catalog.name, typname text);
    execute pg_catalog.format
    ( $sql$
    select pg_catalog.count(*) from
    ( select 1 from ai._vectorizer_empty_input e
      where e.vectorizer_id operator(pg_catalog.=) $1
      and exists (select 1 from %s s where %s)
      limit %s
    ) x
    $sql$
    , _source, _match, bound operator(pg_catalog.+) 1
    ) using vectorizer_id into strict _count;
    if _count operator(pg_catalog.>) bound then
        -- past the bound, every recorded key (deleted rows included) as the estimate
        select pg_catalog.count(*) into _count from ai._vectorizer_empty_input e
        where e.vectorizer_id operator(pg_catalog.=) _vec.id;
    end if;
    return _count;
exception when data_exception then
    -- a recorded key that no longer casts to the key's type (the column's type changed)
    return null;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- pgai's columns first, unchanged; ours after them.
create or replace view ai.vectorizer_status as
select
  v.id
, v.name
, pg_catalog.format('%I.%I', v.source_schema, v.source_table) as source_table
, case when v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'implementation'
      operator(pg_catalog.=) 'table'
    then pg_catalog.format
    ( '%I.%I'
    , v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'target_schema'
    , v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'target_table'
    )
  end as target_table
, case when v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'implementation'
      operator(pg_catalog.=) 'table'
    then pg_catalog.format
    ( '%I.%I'
    , v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'view_schema'
    , v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'view_name'
    )
  end as view
, case when v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'implementation'
      operator(pg_catalog.=) 'column'
    then v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'embedding_column'
    else 'embedding'
  end as embedding_column
, case when q.readable then ai.vectorizer_queue_pending(v.id) end as pending_items
, v.disabled
, case when q.readable then s.pending_items_estimate end as pending_items_estimate
, case when q.readable then s.failed_items end as failed_items
, case when q.readable then (pg_catalog.now() operator(pg_catalog.-) s.oldest_pending_at) end
    as oldest_pending_age
, s.source_rows
, s.embedded_rows
, e.errors_last_hour
, e.last_error_at
, e.last_error_message
, p.last_success_at
, ai._vectorizer_empty_rows(v.id) as empty_rows
, coalesce(r.chunks_embedded, 0) as chunks_embedded
, coalesce(r.chunks_reused_same_row, 0) as chunks_reused_same_row
, coalesce(r.chunks_reused_other_row, 0) as chunks_reused_other_row
, coalesce(r.rows_unchanged, 0) as rows_unchanged
, coalesce(r.tokens_saved, 0) as tokens_saved
, ai._vectorizer_chunks_older_config(v.id) as chunks_older_config
, ai._vectorizer_index_state(v, b) as index_state
, rp.config_version
, rp.reembed_keys_done
, rp.reembed_keys_total
, rp.reembed_eta
from ai.vectorizer v
cross join lateral ai._vectorizer_reembed_progress(v.id) rp
left outer join ai._vectorizer_index_build b on (b.vectorizer_id operator(pg_catalog.=) v.id)
cross join lateral
( select
    pg_catalog.to_regclass(pg_catalog.format('%I.%I', v.queue_schema, v.queue_table)) is not null
    and pg_catalog.has_table_privilege
    ( pg_catalog.current_user()
    , pg_catalog.to_regclass(pg_catalog.format('%I.%I', v.queue_schema, v.queue_table))
    , 'select'
    ) as readable
) q
left outer join lateral ai._vectorizer_stats(v.id) s on (true)
left outer join lateral
( select
    pg_catalog.count(*) filter
      (where x.recorded operator(pg_catalog.>) (pg_catalog.now() operator(pg_catalog.-) interval '1 hour'))
      as errors_last_hour
  , pg_catalog.max(x.recorded) as last_error_at
  , (select y.message operator(pg_catalog.||) coalesce(': ' operator(pg_catalog.||)
        (y.details operator(pg_catalog.->>) 'error_reason'), '')
     from ai._vectorizer_errors y
     where y.id operator(pg_catalog.=) v.id
     order by y.recorded desc limit 1) as last_error_message
  from ai._vectorizer_errors x
  where x.id operator(pg_catalog.=) v.id
) e on (true)
left outer join ai.vectorizer_worker_progress p on (p.vectorizer_id operator(pg_catalog.=) v.id)
left outer join ai._vectorizer_reuse_stats r on (r.vectorizer_id operator(pg_catalog.=) v.id);

-------------------------------------------------------------------------------
-- Moves every failed key back into the queue with a fresh attempt count.
create or replace function ai.retry_failed(vectorizer_id pg_catalog.int4)
returns pg_catalog.int8 as
$func$
declare
    _vec ai.vectorizer;
    _pk_cols pg_catalog.text;
    _moved pg_catalog.int8;
begin
    select * into strict _vec from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;
    _pk_cols = ai._vectorizer_pk_list(_vec.source_pk);
    execute pg_catalog.format
    ( $sql$
    with moved as (delete from %I.%I returning %s)
    , requeued as (insert into %I.%I (%s) select distinct %s from moved returning 1)
    select pg_catalog.count(*) from requeued
    $sql$
    , _vec.queue_schema, _vec.queue_failed_table, _pk_cols
    , _vec.queue_schema, _vec.queue_table, _pk_cols, _pk_cols
    ) into strict _moved;
    if _moved operator(pg_catalog.>) 0 then
        perform pg_catalog.pg_notify(ai._vectorizer_notify_channel(), vectorizer_id::pg_catalog.text);
    end if;
    return _moved;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace function ai.retry_failed(name pg_catalog.text)
returns pg_catalog.int8 as
$func$
    select ai.retry_failed(v.id)
    from ai.vectorizer v
    where v.name operator(pg_catalog.=) retry_failed.name
$func$ language sql volatile security invoker
set search_path to pg_catalog, pg_temp;
