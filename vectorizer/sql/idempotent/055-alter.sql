-- ai.alter_vectorizer: change a vectorizer in place. processing, indexing and scheduling are
-- applied as they are; a change to loading, parsing, chunking, formatting or embedding makes a
-- new config version (history in ai._vectorizer_config_version, migration 007) and re-embeds
-- every source key in the background (ai._vectorizer_reembed, fed to the queue by the workers
-- through ai._vectorizer_reembed_feed only when the live queue is drained).

-------------------------------------------------------------------------------
-- What a worker's vectors depend on: the config minus the parts applied in place. A worker
-- compares it, under a share lock of the catalog row, right before it writes, so a batch
-- prepared with a config that was altered meanwhile is never written.
create or replace function ai._vectorizer_content_hash(config pg_catalog.jsonb)
returns pg_catalog.text as
$func$
    select pg_catalog.md5
    ( ( config
        operator(pg_catalog.-) array['processing', 'indexing', 'scheduling', 'version']::pg_catalog.text[]
      )::pg_catalog.text
    )
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_config_version(vectorizer_id pg_catalog.int4)
returns pg_catalog.int4 as
$func$
    select coalesce(pg_catalog.max(h.version), 1)
    from ai._vectorizer_config_version h
    where h.vectorizer_id operator(pg_catalog.=) $1
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- "a int4, b text" of a key, for comparing the key a vectorizer was made with to the table's
create or replace function ai._vectorizer_pk_signature(source_pk pg_catalog.jsonb)
returns pg_catalog.text as
$func$
    select pg_catalog.string_agg(pg_catalog.format('%I %s', x.attname, x.typname), ', ' order by x.pknum)
    from pg_catalog.jsonb_to_recordset(source_pk) x(pknum int4, attname pg_catalog.name, typname text)
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- What cannot change in place: the source table, its key, the destination. Raises naming it.
create or replace function ai._vectorizer_alter_check_fixed
( _vec ai.vectorizer
, destination pg_catalog.jsonb
) returns void as
$func$
declare
    _source pg_catalog.regclass;
    _current pg_catalog.jsonb = _vec.config operator(pg_catalog.->) 'destination';
    _wanted pg_catalog.jsonb;
    _key pg_catalog.text;
begin
    _source = pg_catalog.to_regclass(pg_catalog.format('%I.%I', _vec.source_schema, _vec.source_table));
    if _source is null then
        raise exception 'the source table %.% of vectorizer % no longer exists; a vectorizer cannot move to another table: create a new vectorizer'
        , _vec.source_schema, _vec.source_table, _vec.name;
    end if;
    if ai._vectorizer_pk_signature(ai._vectorizer_source_pk(_source))
        is distinct from ai._vectorizer_pk_signature(_vec.source_pk) then
        raise exception 'the primary key of %.% is now (%) but vectorizer % was made for (%); the key cannot change in place: create a new vectorizer'
        , _vec.source_schema, _vec.source_table
        , coalesce(ai._vectorizer_pk_signature(ai._vectorizer_source_pk(_source)), 'none')
        , _vec.name, ai._vectorizer_pk_signature(_vec.source_pk);
    end if;
    if destination is null then
        return;
    end if;
    _wanted = ai._evaluate_destination(destination, _vec.source_schema, _vec.source_table);
    if (_wanted operator(pg_catalog.->>) 'implementation')
        is distinct from (_current operator(pg_catalog.->>) 'implementation') then
        raise exception 'the destination of vectorizer % is a % destination and cannot become a % destination; create a new vectorizer for that'
        , _vec.name, _current operator(pg_catalog.->>) 'implementation'
        , coalesce(_wanted operator(pg_catalog.->>) 'implementation', 'unknown');
    end if;
    for _key in
        select k from pg_catalog.unnest(array
        [ 'target_schema', 'target_table', 'view_schema', 'view_name', 'embedding_column', 'aggregate'
        ]) k
    loop
        if (_wanted operator(pg_catalog.->>) _key) is distinct from (_current operator(pg_catalog.->>) _key) then
            raise exception 'the destination''s % cannot change in place (it is %, asked for %); only its vector_type can, and loading, parsing, chunking, formatting, embedding, processing, indexing and scheduling'
            , _key
            , coalesce(_current operator(pg_catalog.->>) _key, 'unset')
            , coalesce(_wanted operator(pg_catalog.->>) _key, 'unset');
        end if;
    end loop;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Starts (or restarts, for a newer version) the background re-embed of every source key.
-- keys_total is what progress and the time left are measured against.
create or replace function ai._vectorizer_reembed_start
( _vec ai.vectorizer
, version pg_catalog.int4
) returns void as
$func$
declare
    _total pg_catalog.int8;
begin
    -- exact for small tables; past 100,000 rows the planner's estimate: the alter holds the
    -- catalog row, and batches waiting on it should not wait for a full count
    select c.reltuples::pg_catalog.int8 into _total
    from pg_catalog.pg_class c
    where c.oid operator(pg_catalog.=) pg_catalog.format('%I.%I', _vec.source_schema, _vec.source_table)::pg_catalog.regclass;
    if _total operator(pg_catalog.<=) 100000 then
        execute pg_catalog.format('select pg_catalog.count(*) from %I.%I', _vec.source_schema, _vec.source_table)
        into strict _total;
    end if;
    insert into ai._vectorizer_reembed as r (vectorizer_id, version, keys_total)
    values (_vec.id, version, _total)
    on conflict (vectorizer_id) do update
    set version = excluded.version
    , cursor = null
    , keys_total = excluded.keys_total
    , keys_fed = 0
    , last_fed = 0
    , fed_all = false
    , started_at = pg_catalog.now()
    , finished_at = null;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The store a new version writes to: the store itself when its type fits the new embedding,
-- else a shadow (kept when a running one already fits, replaced when not). Returns `new`
-- with config -> 'shadow' set or removed accordingly.
create or replace function ai._vectorizer_alter_store
( _vec ai.vectorizer
, new pg_catalog.jsonb
, version pg_catalog.int4
, keep_old pg_catalog.bool
) returns pg_catalog.jsonb as
$func$
declare
    _destination pg_catalog.jsonb = new operator(pg_catalog.->) 'destination';
    _dimensions pg_catalog.int4 = (new operator(pg_catalog.->) 'embedding' operator(pg_catalog.->>) 'dimensions')::pg_catalog.int4;
    _wanted pg_catalog.text;
    _shadow pg_catalog.jsonb = _vec.config operator(pg_catalog.->) 'shadow';
begin
    _wanted = ai._vectorizer_wanted_type(_destination, _dimensions);
    if _shadow is not null then
        if ai._vectorizer_store_type(_vec, ai._vectorizer_worker_config(_vec.config) operator(pg_catalog.->) 'destination')
            is not distinct from _wanted then
            return new operator(pg_catalog.||) pg_catalog.jsonb_build_object
            ('shadow', _shadow operator(pg_catalog.||) pg_catalog.jsonb_build_object('keep_old', keep_old));
        end if;
        perform ai._vectorizer_shadow_drop(_vec);
    end if;
    new = new operator(pg_catalog.-) 'shadow';
    if ai._vectorizer_store_type(_vec, _destination) is not distinct from _wanted then
        return new;
    end if;
    return new operator(pg_catalog.||) pg_catalog.jsonb_build_object
    ('shadow', ai._vectorizer_shadow_create(_vec, _destination, _dimensions, version, keep_old));
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The view lists the source's columns as they were when it was made: an alter regenerates it
-- when the source has columns the view lacks (added since), keeping its grants. A view that
-- user objects depend on cannot be dropped: it is left as it was, with a warning.
create or replace function ai._vectorizer_refresh_view(_vec ai.vectorizer)
returns void as
$func$
declare
    _dest pg_catalog.jsonb = _vec.config operator(pg_catalog.->) 'destination';
    _view pg_catalog.regclass;
    _grants pg_catalog.jsonb;
begin
    if (_dest operator(pg_catalog.->>) 'implementation') operator(pg_catalog.<>) 'table' then
        return;  -- a column destination has no view
    end if;
    _view = pg_catalog.to_regclass(pg_catalog.format('%I.%I'
        , _dest operator(pg_catalog.->>) 'view_schema', _dest operator(pg_catalog.->>) 'view_name'));
    if _view is null or not exists
    ( select 1 from pg_catalog.pg_attribute a
      where a.attrelid operator(pg_catalog.=)
          pg_catalog.format('%I.%I', _vec.source_schema, _vec.source_table)::pg_catalog.regclass::pg_catalog.oid
      and a.attnum operator(pg_catalog.>) 0 and not a.attisdropped
      -- a source column named like a store column (chunk, embedding, ...) is found too:
      -- the view has the store's
      and not exists
      ( select 1 from pg_catalog.pg_attribute v
        where v.attrelid operator(pg_catalog.=) _view::pg_catalog.oid
        and v.attname operator(pg_catalog.=) a.attname and not v.attisdropped
      )
    ) then
        return;
    end if;
    _grants = ai._vectorizer_grants(_view);
    begin
        execute pg_catalog.format('drop view %s', _view);
    exception when dependent_objects_still_exist then
        raise warning 'the view %s was not regenerated with the source''s new columns: other objects depend on it', _view;
        return;
    end;
    perform ai._vectorizer_recreate_view(_vec, _grants);
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-- The view named in the destination, made again over the store named there, with `grants`
-- (ai._vectorizer_grants of the view it replaces).
create or replace function ai._vectorizer_recreate_view(_vec ai.vectorizer, grants pg_catalog.jsonb)
returns void as
$func$
declare
    _dest pg_catalog.jsonb = _vec.config operator(pg_catalog.->) 'destination';
begin
    perform ai._vectorizer_create_view
    ( _dest operator(pg_catalog.->>) 'view_schema', _dest operator(pg_catalog.->>) 'view_name'
    , _vec.source_schema, _vec.source_table, _vec.source_pk
    , _dest operator(pg_catalog.->>) 'target_schema', _dest operator(pg_catalog.->>) 'target_table'
    , null
    );
    perform ai._vectorizer_apply_grants
    ( pg_catalog.format('%I.%I', _dest operator(pg_catalog.->>) 'view_schema', _dest operator(pg_catalog.->>) 'view_name')::pg_catalog.regclass
    , grants
    );
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai.alter_vectorizer
( vectorizer_id pg_catalog.int4
, loading pg_catalog.jsonb default null
, parsing pg_catalog.jsonb default null
, chunking pg_catalog.jsonb default null
, formatting pg_catalog.jsonb default null
, embedding pg_catalog.jsonb default null
, processing pg_catalog.jsonb default null
, indexing pg_catalog.jsonb default null
, scheduling pg_catalog.jsonb default null
, destination pg_catalog.jsonb default null
, keep_old pg_catalog.bool default false
) returns pg_catalog.int4
as $func$
#variable_conflict use_variable
declare
    _vec ai.vectorizer;
    _old pg_catalog.jsonb;
    _new pg_catalog.jsonb;
    _version pg_catalog.int4;
    _job_id pg_catalog.int8;
    _destination pg_catalog.jsonb;
begin
    -- the row lock also waits for batches writing with the old config (they share-lock it)
    select v.* into _vec from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id for update;
    if not found then
        raise exception 'vectorizer % not found', vectorizer_id using errcode = 'no_data_found';
    end if;
    _old = _vec.config;
    perform ai._vectorizer_alter_check_fixed(_vec, destination);

    loading = coalesce(loading, _old operator(pg_catalog.->) 'loading');
    parsing = coalesce(parsing, _old operator(pg_catalog.->) 'parsing');
    chunking = coalesce(chunking, _old operator(pg_catalog.->) 'chunking');
    formatting = coalesce(formatting, _old operator(pg_catalog.->) 'formatting');
    embedding = coalesce(embedding, _old operator(pg_catalog.->) 'embedding');
    processing = coalesce(processing, _old operator(pg_catalog.->) 'processing');
    indexing = coalesce(indexing, _old operator(pg_catalog.->) 'indexing');
    if (indexing operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'default' then
        indexing = ai._resolve_indexing_default();
    end if;
    scheduling = coalesce(scheduling, _old operator(pg_catalog.->) 'scheduling');
    if (scheduling operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'default' then
        scheduling = ai._resolve_scheduling_default();
    end if;

    -- the destination's names are fixed (checked above); its vector type may change
    _destination = _old operator(pg_catalog.->) 'destination';
    if destination is not null and (_destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'table' then
        _destination = _destination operator(pg_catalog.||) pg_catalog.jsonb_build_object
        ('vector_type', coalesce(destination operator(pg_catalog.->>) 'vector_type', 'vector'));
    end if;

    -- the same validators as ai.create_vectorizer, on the config as it would be
    perform ai._validate_loading(loading, _vec.source_schema, _vec.source_table);
    perform ai._validate_parsing(parsing, loading, _vec.source_schema, _vec.source_table);
    perform ai._validate_destination(_destination, chunking);
    perform ai._validate_embedding(embedding);
    if (embedding operator(pg_catalog.->) 'dimensions') is null then
        raise exception 'dimensions argument is required';
    end if;
    perform ai._validate_chunking(chunking);
    perform ai._validate_indexing(indexing);
    perform ai._validate_formatting(formatting, _vec.source_schema, _vec.source_table);
    perform ai._validate_scheduling(scheduling);
    perform ai._validate_processing(processing);

    -- scheduling: the timescaledb job follows the new settings (as ai.set_scheduling does)
    if (scheduling operator(pg_catalog.-) 'job_id') is distinct from
        ((_old operator(pg_catalog.->) 'scheduling') operator(pg_catalog.-) 'job_id') then
        perform ai._vectorizer_unschedule_job(_old operator(pg_catalog.->) 'scheduling');
        scheduling = scheduling operator(pg_catalog.-) 'job_id';
        if (scheduling operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'timescaledb' then
            _job_id = ai._vectorizer_schedule_job(_vec.id, scheduling);
            if _job_id is not null then
                scheduling = scheduling operator(pg_catalog.||) pg_catalog.jsonb_build_object('job_id', _job_id);
            end if;
        end if;
    else
        scheduling = _old operator(pg_catalog.->) 'scheduling';
    end if;

    _new = _old operator(pg_catalog.||) pg_catalog.jsonb_build_object
    ( 'destination', _destination
    , 'loading', loading
    , 'parsing', parsing
    , 'chunking', chunking
    , 'formatting', formatting
    , 'embedding', embedding
    , 'processing', processing
    , 'indexing', indexing
    , 'scheduling', scheduling
    );
    _version = ai._vectorizer_config_version(_vec.id);
    if ai._vectorizer_content_hash(_new) operator(pg_catalog.<>) ai._vectorizer_content_hash(_old) then
        -- the history starts with the creation config, recorded on the first change
        insert into ai._vectorizer_config_version (vectorizer_id, version, config)
        values (_vec.id, 1, _old)
        on conflict do nothing;
        _version = _version operator(pg_catalog.+) 1;
        _new = ai._vectorizer_alter_store(_vec, _new, _version, keep_old);
        insert into ai._vectorizer_config_version (vectorizer_id, version, config)
        values (_vec.id, _version, _new operator(pg_catalog.-) 'shadow');
        perform ai._vectorizer_reembed_start(_vec, _version);
        -- loading and formatting decide which column changes queue a row
        update ai.vectorizer v set config = _new where v.id operator(pg_catalog.=) _vec.id;
        perform ai._vectorizer_regenerate_trigger_function(_vec.id);
    else
        update ai.vectorizer v set config = _new where v.id operator(pg_catalog.=) _vec.id;
    end if;
    perform ai._vectorizer_refresh_view(_vec);
    -- workers reload the config when woken
    perform pg_catalog.pg_notify(ai._vectorizer_notify_channel(), _vec.id::pg_catalog.text);
    return _version;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai.alter_vectorizer
( name pg_catalog.text
, loading pg_catalog.jsonb default null
, parsing pg_catalog.jsonb default null
, chunking pg_catalog.jsonb default null
, formatting pg_catalog.jsonb default null
, embedding pg_catalog.jsonb default null
, processing pg_catalog.jsonb default null
, indexing pg_catalog.jsonb default null
, scheduling pg_catalog.jsonb default null
, destination pg_catalog.jsonb default null
, keep_old pg_catalog.bool default false
) returns pg_catalog.int4
as $func$
declare
    _id pg_catalog.int4;
begin
    select v.id into _id from ai.vectorizer v where v.name operator(pg_catalog.=) alter_vectorizer.name;
    if not found then
        raise exception 'vectorizer % not found', alter_vectorizer.name using errcode = 'no_data_found';
    end if;
    return ai.alter_vectorizer
    ( _id, loading, parsing, chunking, formatting, embedding, processing, indexing, scheduling
    , destination, keep_old
    );
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Queues the next `max_keys` source keys of a running re-embed, in primary-key order after
-- the last key queued, and moves the cursor past them in the same transaction (a worker
-- killed mid-way leaves them queued and the cursor where they end). Workers call it only when
-- their claim found nothing, so live changes go first and at most a slice per executor waits.
-- Returns the keys queued; 0 when every key is queued but some are not embedded yet; -1 when
-- there is nothing to re-embed (none started, or finished: marked so here); -2 when a shadow
-- store covers every key and waits for ai._vectorizer_swap_store.
create or replace function ai._vectorizer_reembed_feed
( vectorizer_id pg_catalog.int4
, max_keys pg_catalog.int4
) returns pg_catalog.int8 as
$func$
declare
    _vec ai.vectorizer;
    _state ai._vectorizer_reembed;
    _after pg_catalog.text = '';
    _fed pg_catalog.int8;
    _last pg_catalog.jsonb;
    _queued pg_catalog.bool;
begin
    -- blocking, not SKIP LOCKED: the lock is held for one slice's insert, and an executor
    -- that waited feeds the next slice instead of leaving the drain to the others
    select r.* into _state from ai._vectorizer_reembed r
    where r.vectorizer_id operator(pg_catalog.=) $1 and r.finished_at is null
    for update;
    if not found then
        return -1;
    end if;
    select v.* into strict _vec from ai.vectorizer v where v.id operator(pg_catalog.=) $1;
    if _state.fed_all then
        execute pg_catalog.format('select exists (select 1 from %I.%I)', _vec.queue_schema, _vec.queue_table)
        into strict _queued;
        if _queued then
            return 0;
        end if;
        if _vec.config operator(pg_catalog.?) 'shadow' then
            return -2;  -- the caller swaps it in: ai._vectorizer_swap_store
        end if;
        update ai._vectorizer_reembed r set finished_at = pg_catalog.now()
        where r.vectorizer_id operator(pg_catalog.=) $1;
        return -1;
    end if;
    if _state.cursor is not null then
        -- the cursor's values as typed literals: a row comparison the key index can range-scan
        select pg_catalog.format
        ( ' where (%s) operator(pg_catalog.>) (%s)'
        , ai._vectorizer_pk_list(_vec.source_pk, 's', 'pknum')
        , pg_catalog.string_agg
          ( pg_catalog.format('%L::%s', _state.cursor operator(pg_catalog.->>) x.attname, x.typname)
          , ', ' order by x.pknum
          )
        )
        into strict _after
        from pg_catalog.jsonb_to_recordset(_vec.source_pk) x(pknum int4, attname pg_catalog.name, typname text);
    end if;
    execute pg_catalog.format
    ( $sql$
    with picked as
    ( select %s from %I.%I s%s order by %s limit %s
    ), queued as
    ( insert into %I.%I (%s) select %s from picked p
    )
    select pg_catalog.count(*)
    , (select pg_catalog.to_jsonb(l) from picked l order by %s limit 1)
    from picked
    $sql$
    , ai._vectorizer_pk_list(_vec.source_pk, 's')
    , _vec.source_schema, _vec.source_table
    , _after
    , ai._vectorizer_pk_list(_vec.source_pk, 's', 'pknum')
    , max_keys
    , _vec.queue_schema, _vec.queue_table
    , ai._vectorizer_pk_list(_vec.source_pk)
    , ai._vectorizer_pk_list(_vec.source_pk, 'p')
    , (select pg_catalog.string_agg(pg_catalog.format('l.%I desc', x.attname), ', ' order by x.pknum)
       from pg_catalog.jsonb_to_recordset(_vec.source_pk) x(pknum int4, attname pg_catalog.name))
    ) into strict _fed, _last;
    update ai._vectorizer_reembed r
    set cursor = coalesce(_last, r.cursor)
    , keys_fed = r.keys_fed operator(pg_catalog.+) _fed
    , last_fed = _fed
    , fed_all = _fed operator(pg_catalog.<) max_keys
    where r.vectorizer_id operator(pg_catalog.=) $1;
    return _fed;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- For ai.vectorizer_status: the config version and, while a re-embed runs, keys done / total
-- and the time left at the pace so far. Keys queued by the re-embed count as done once the
-- queue no longer holds them (at most the last slice is still in it).
create or replace function ai._vectorizer_reembed_progress
( vectorizer_id pg_catalog.int4
, out config_version pg_catalog.int4
, out reembed_keys_done pg_catalog.int8
, out reembed_keys_total pg_catalog.int8
, out reembed_eta pg_catalog.interval
) returns record as
$func$
declare
    _state ai._vectorizer_reembed;
    _vec ai.vectorizer;
    _pending pg_catalog.int8 = 0;
    _elapsed pg_catalog.float8;
begin
    -- a viewer who may not read them gets nulls (ai.vectorizer_status stays usable)
    if not pg_catalog.has_table_privilege(pg_catalog.current_user(), 'ai._vectorizer_config_version', 'select')
    or not pg_catalog.has_table_privilege(pg_catalog.current_user(), 'ai._vectorizer_reembed', 'select') then
        return;
    end if;
    config_version = ai._vectorizer_config_version(vectorizer_id);
    select r.* into _state from ai._vectorizer_reembed r
    where r.vectorizer_id operator(pg_catalog.=) $1 and r.finished_at is null;
    if not found then
        return;
    end if;
    select v.* into strict _vec from ai.vectorizer v where v.id operator(pg_catalog.=) $1;
    if pg_catalog.has_table_privilege
        (pg_catalog.current_user(), pg_catalog.format('%I.%I', _vec.queue_schema, _vec.queue_table), 'select') then
        execute pg_catalog.format
        ( 'select pg_catalog.count(*) from (select 1 from %I.%I limit %s) q'
        , _vec.queue_schema, _vec.queue_table, _state.last_fed
        ) into strict _pending;
    end if;
    reembed_keys_total = greatest(_state.keys_total, _state.keys_fed);
    reembed_keys_done = greatest(0, _state.keys_fed operator(pg_catalog.-) _pending);
    _elapsed = extract(epoch from pg_catalog.now() operator(pg_catalog.-) _state.started_at);
    if reembed_keys_done operator(pg_catalog.>) 0 then
        reembed_eta = pg_catalog.make_interval(secs =>
            _elapsed operator(pg_catalog.*) (reembed_keys_total operator(pg_catalog.-) reembed_keys_done)
            operator(pg_catalog./) reembed_keys_done);
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Shadow stores. A change of dimensions or vector type cannot reuse the store: a shadow
-- (`<target_table>_v<N>` or, for a column destination, `<embedding_column>_v<N>`) is made
-- with the new type, recorded in config -> 'shadow', filled by the workers (who write to it
-- in place of the store, see ai._vectorizer_worker_config) and swapped in by
-- ai._vectorizer_swap_store once it covers every key. Until then the view serves the old store.

-------------------------------------------------------------------------------
-- The config a worker runs: the destination points at the shadow while there is one.
create or replace function ai._vectorizer_worker_config(config pg_catalog.jsonb)
returns pg_catalog.jsonb as
$func$
    select case when config operator(pg_catalog.?) 'shadow' then
        pg_catalog.jsonb_set
        ( config operator(pg_catalog.-) 'shadow'
        , array['destination']
        , (config operator(pg_catalog.->) 'destination') operator(pg_catalog.||)
          ((config operator(pg_catalog.->) 'shadow') operator(pg_catalog.-) array['keep_old', 'version']::pg_catalog.text[])
        )
    else config end
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The type of a store's embedding column ("vector(768)"); null when it does not exist.
-- `destination` is an evaluated destination (possibly merged with a shadow).
create or replace function ai._vectorizer_store_type
( _vec ai.vectorizer
, destination pg_catalog.jsonb
) returns pg_catalog.text as
$func$
    select pg_catalog.format_type(a.atttypid, a.atttypmod)
    from pg_catalog.pg_attribute a
    where a.attrelid operator(pg_catalog.=) pg_catalog.to_regclass(
        case when destination operator(pg_catalog.->>) 'implementation' operator(pg_catalog.=) 'table'
        then pg_catalog.format('%I.%I', destination operator(pg_catalog.->>) 'target_schema', destination operator(pg_catalog.->>) 'target_table')
        else pg_catalog.format('%I.%I', _vec.source_schema, _vec.source_table) end)
    and a.attname operator(pg_catalog.=)
        case when destination operator(pg_catalog.->>) 'implementation' operator(pg_catalog.=) 'table'
        then 'embedding' else destination operator(pg_catalog.->>) 'embedding_column' end
    and a.attnum operator(pg_catalog.>) 0
    and not a.attisdropped
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_wanted_type
( destination pg_catalog.jsonb
, dimensions pg_catalog.int4
) returns pg_catalog.text as
$func$
    select pg_catalog.format_type
    ( case when destination operator(pg_catalog.->>) 'vector_type' operator(pg_catalog.=) 'halfvec'
        then '@extschema:vector@.halfvec'::pg_catalog.regtype
        else '@extschema:vector@.vector'::pg_catalog.regtype end
    , dimensions
    )
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Grants on a relation other than its owner's, to put back on its replacement.
create or replace function ai._vectorizer_grants(relation pg_catalog.regclass)
returns pg_catalog.jsonb as
$func$
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object
        ('privilege', x.privilege_type, 'grantee', r.rolname)), '[]')
    from pg_catalog.pg_class c
    cross join lateral pg_catalog.aclexplode(c.relacl) x
    left outer join pg_catalog.pg_roles r on (r.oid operator(pg_catalog.=) x.grantee)
    where c.oid operator(pg_catalog.=) relation
    and x.grantee operator(pg_catalog.<>) c.relowner
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

create or replace function ai._vectorizer_apply_grants
( relation pg_catalog.regclass
, grants pg_catalog.jsonb
) returns void as
$func$
declare
    _grant pg_catalog.jsonb;
begin
    for _grant in select g from pg_catalog.jsonb_array_elements(grants) g
    loop
        execute pg_catalog.format
        ( 'grant %s on %s to %s'
        , case _grant operator(pg_catalog.->>) 'privilege'
            when 'SELECT' then 'select' when 'INSERT' then 'insert' when 'UPDATE' then 'update'
            when 'DELETE' then 'delete' when 'TRUNCATE' then 'truncate'
            when 'REFERENCES' then 'references' when 'TRIGGER' then 'trigger'
            else 'select' end
        , relation
        , coalesce(pg_catalog.quote_ident(_grant operator(pg_catalog.->>) 'grantee'), 'public')
        );
    end loop;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- A table shadow's rows of a deleted or re-keyed source row go at once, as the store's do
-- (the source trigger only knows the store).
create or replace function ai._vectorizer_create_shadow_trigger
( _vec ai.vectorizer
, shadow_schema pg_catalog.name
, shadow_table pg_catalog.name
) returns void as
$func$
declare
    _name pg_catalog.name = pg_catalog.format('_vectorizer_shadow_trg_%s', _vec.id);
    _old_key pg_catalog.text;
    _changed pg_catalog.text;
begin
    select pg_catalog.string_agg(pg_catalog.format('s.%I %s old.%I', x.attname, ai._vectorizer_eq_operator(x.typname), x.attname), ' and ')
    , pg_catalog.string_agg(pg_catalog.format('old.%I is distinct from new.%I', x.attname, x.attname), ' or ')
    into strict _old_key, _changed
    from pg_catalog.jsonb_to_recordset(_vec.source_pk) x(attname pg_catalog.name, typname text);
    execute pg_catalog.format
    ( $sql$
    create or replace function %I.%I() returns trigger as $body$
    begin
        if tg_op operator(pg_catalog.=) 'TRUNCATE' then
            truncate %I.%I;
        elsif tg_op operator(pg_catalog.=) 'DELETE' or (%s) then
            delete from %I.%I s where %s;
        end if;
        return null;
    end
    $body$ language plpgsql volatile security definer
    set search_path to pg_catalog, pg_temp
    $sql$
    , _vec.queue_schema, _name
    , shadow_schema, shadow_table
    , _changed
    , shadow_schema, shadow_table, _old_key
    );
    execute pg_catalog.format('revoke all on function %I.%I() from public', _vec.queue_schema, _name);
    execute pg_catalog.format
    ( 'create trigger %I after update or delete on %I.%I for each row execute function %I.%I()'
    , _name, _vec.source_schema, _vec.source_table, _vec.queue_schema, _name
    );
    execute pg_catalog.format
    ( 'create trigger %I after truncate on %I.%I for each statement execute function %I.%I()'
    , _name operator(pg_catalog.||) '_truncate', _vec.source_schema, _vec.source_table
    , _vec.queue_schema, _name
    );
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_shadow_create
( _vec ai.vectorizer
, destination pg_catalog.jsonb
, dimensions pg_catalog.int4
, version pg_catalog.int4
, keep_old pg_catalog.bool
) returns pg_catalog.jsonb as
$func$
declare
    _schema pg_catalog.name = destination operator(pg_catalog.->>) 'target_schema';
    _name pg_catalog.text;
begin
    if (destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'table' then
        _name = pg_catalog.format('%s_v%s', destination operator(pg_catalog.->>) 'target_table', version);
        if pg_catalog.octet_length(_name) operator(pg_catalog.>) 63 then
            raise exception 'the shadow store name "%" is longer than 63 bytes; rename the target table to something shorter first', _name;
        end if;
        if pg_catalog.to_regclass(pg_catalog.format('%I.%I', _schema, _name)) is not null then
            raise exception 'an object named %.% already exists; the shadow store needs that name, drop or rename it first'
            , _schema, _name using errcode = 'duplicate_object';
        end if;
        perform ai._vectorizer_create_target_table(_vec.source_pk, _schema, _name, dimensions, null);
        if (destination operator(pg_catalog.->>) 'vector_type') operator(pg_catalog.=) 'halfvec' then
            execute pg_catalog.format
            ( 'alter table %I.%I alter column embedding type @extschema:vector@.halfvec(%L)'
            , _schema, _name, dimensions
            );
        end if;
        perform ai._vectorizer_create_shadow_trigger(_vec, _schema, _name);
        return pg_catalog.jsonb_build_object('target_table', _name, 'keep_old', keep_old, 'version', version);
    end if;
    _name = pg_catalog.format('%s_v%s', destination operator(pg_catalog.->>) 'embedding_column', version);
    if pg_catalog.octet_length(_name) operator(pg_catalog.>) 63 then
        raise exception 'the shadow column name "%" is longer than 63 bytes', _name;
    end if;
    if ai._vectorizer_store_type(_vec, pg_catalog.jsonb_build_object('implementation', 'column', 'embedding_column', _name)) is not null then
        raise exception 'column % already exists in %.%; the shadow column needs that name, drop or rename it first'
        , _name, _vec.source_schema, _vec.source_table using errcode = 'duplicate_column';
    end if;
    perform ai._vectorizer_add_embedding_column(_vec.source_schema, _vec.source_table, dimensions, _name);
    return pg_catalog.jsonb_build_object('embedding_column', _name, 'keep_old', keep_old, 'version', version);
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_shadow_drop(_vec ai.vectorizer)
returns void as
$func$
declare
    _shadow pg_catalog.jsonb = _vec.config operator(pg_catalog.->) 'shadow';
    _destination pg_catalog.jsonb = _vec.config operator(pg_catalog.->) 'destination';
    _name pg_catalog.name = pg_catalog.format('_vectorizer_shadow_trg_%s', _vec.id);
begin
    if _shadow is null then
        return;
    end if;
    if _shadow operator(pg_catalog.?) 'target_table' then
        execute pg_catalog.format('drop trigger if exists %I on %I.%I', _name, _vec.source_schema, _vec.source_table);
        execute pg_catalog.format
        ('drop trigger if exists %I on %I.%I', _name operator(pg_catalog.||) '_truncate', _vec.source_schema, _vec.source_table);
        execute pg_catalog.format('drop function if exists %I.%I()', _vec.queue_schema, _name);
        execute pg_catalog.format
        ( 'drop table if exists %I.%I'
        , _destination operator(pg_catalog.->>) 'target_schema', _shadow operator(pg_catalog.->>) 'target_table'
        );
    else
        execute pg_catalog.format
        ( 'alter table %I.%I drop column if exists %I'
        , _vec.source_schema, _vec.source_table, _shadow operator(pg_catalog.->>) 'embedding_column'
        );
    end if;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Called by a worker when the re-embed feed answers -2: every key is embedded into the shadow.
-- In one transaction the view moves to the shadow (renamed to the store's name, with the
-- store's and the view's grants), and the old store is dropped or, with keep_old, renamed
-- `<name>_before_v<N>`. Returns whether it swapped (false: nothing to swap, or not ready).
create or replace function ai._vectorizer_swap_store(vectorizer_id pg_catalog.int4)
returns pg_catalog.bool as
$func$
declare
    _vec ai.vectorizer;
    _state ai._vectorizer_reembed;
    _shadow pg_catalog.jsonb;
    _dest pg_catalog.jsonb;
    _queued pg_catalog.bool;
    _old pg_catalog.regclass;
    _view pg_catalog.regclass;
    _store_grants pg_catalog.jsonb;
    _view_grants pg_catalog.jsonb;
    _before pg_catalog.text;
    _lock_timeout pg_catalog.text;
begin
    -- Lock order: the shadow first, giving up after a moment (a vector index build on it
    -- or a batch reading it: the next feed retries), so searches never queue behind a long
    -- wait; then the view and the store, as a search through the view takes them (the other
    -- way round deadlocks with it); then the catalog row, which batches share-lock right
    -- before they write, so a batch reading the store is never waited on while it waits on us.
    select v.* into _vec from ai.vectorizer v where v.id operator(pg_catalog.=) $1;
    _shadow = _vec.config operator(pg_catalog.->) 'shadow';
    if _shadow is null then
        return false;
    end if;
    _dest = _vec.config operator(pg_catalog.->) 'destination';
    if _shadow operator(pg_catalog.?) 'target_table' then
        _lock_timeout = pg_catalog.current_setting('lock_timeout');
        perform pg_catalog.set_config('lock_timeout', '2s', true);
        begin
            execute pg_catalog.format
            ( 'lock table %I.%I in access exclusive mode'
            , _dest operator(pg_catalog.->>) 'target_schema', _shadow operator(pg_catalog.->>) 'target_table'
            );
        exception when lock_not_available then
            return false;
        end;
        perform pg_catalog.set_config('lock_timeout', _lock_timeout, true);
        _view = pg_catalog.to_regclass(pg_catalog.format('%I.%I', _dest operator(pg_catalog.->>) 'view_schema', _dest operator(pg_catalog.->>) 'view_name'));
        if _view is not null then
            execute pg_catalog.format('lock table %s in access exclusive mode', _view);
        end if;
        execute pg_catalog.format
        ( 'lock table %I.%I in access exclusive mode'
        , _dest operator(pg_catalog.->>) 'target_schema', _dest operator(pg_catalog.->>) 'target_table'
        );
    end if;
    select v.* into _vec from ai.vectorizer v where v.id operator(pg_catalog.=) $1 for update;
    if (_vec.config operator(pg_catalog.->) 'shadow') is distinct from _shadow then
        return false;  -- altered meanwhile
    end if;
    select r.* into _state from ai._vectorizer_reembed r
    where r.vectorizer_id operator(pg_catalog.=) $1 for update;
    if not found or not _state.fed_all or _state.finished_at is not null then
        return false;
    end if;
    execute pg_catalog.format('select exists (select 1 from %I.%I)', _vec.queue_schema, _vec.queue_table)
    into strict _queued;
    if _queued then
        return false;
    end if;
    _before = pg_catalog.format('%s_before_v%s'
    , coalesce(_dest operator(pg_catalog.->>) 'target_table', _dest operator(pg_catalog.->>) 'embedding_column')
    , _shadow operator(pg_catalog.->>) 'version');

    if _shadow operator(pg_catalog.?) 'target_table' then
        _old = pg_catalog.format('%I.%I', _dest operator(pg_catalog.->>) 'target_schema', _dest operator(pg_catalog.->>) 'target_table');
        _store_grants = ai._vectorizer_grants(_old);
        _view_grants = coalesce(ai._vectorizer_grants(_view), '[]');
        if _view is not null then
            execute pg_catalog.format('drop view %s', _view);
        end if;
        if (_shadow operator(pg_catalog.->>) 'keep_old')::pg_catalog.bool then
            execute pg_catalog.format('alter table %s rename to %I', _old, _before);
        else
            execute pg_catalog.format('drop table %s', _old);
        end if;
        execute pg_catalog.format
        ( 'alter table %I.%I rename to %I'
        , _dest operator(pg_catalog.->>) 'target_schema', _shadow operator(pg_catalog.->>) 'target_table'
        , _dest operator(pg_catalog.->>) 'target_table'
        );
        _old = pg_catalog.format('%I.%I', _dest operator(pg_catalog.->>) 'target_schema', _dest operator(pg_catalog.->>) 'target_table');
        perform ai._vectorizer_apply_grants(_old, _store_grants);
        perform ai._vectorizer_recreate_view(_vec, _view_grants);
        -- the shadow trigger (its table now has the store's name, which the source trigger knows)
        execute pg_catalog.format('drop trigger %I on %I.%I', '_vectorizer_shadow_trg_' operator(pg_catalog.||) _vec.id, _vec.source_schema, _vec.source_table);
        execute pg_catalog.format('drop trigger %I on %I.%I', '_vectorizer_shadow_trg_' operator(pg_catalog.||) _vec.id operator(pg_catalog.||) '_truncate', _vec.source_schema, _vec.source_table);
        execute pg_catalog.format('drop function %I.%I()', _vec.queue_schema, '_vectorizer_shadow_trg_' operator(pg_catalog.||) _vec.id);
    else
        if (_shadow operator(pg_catalog.->>) 'keep_old')::pg_catalog.bool then
            execute pg_catalog.format
            ( 'alter table %I.%I rename column %I to %I'
            , _vec.source_schema, _vec.source_table, _dest operator(pg_catalog.->>) 'embedding_column', _before
            );
        else
            execute pg_catalog.format
            ( 'alter table %I.%I drop column %I'
            , _vec.source_schema, _vec.source_table, _dest operator(pg_catalog.->>) 'embedding_column'
            );
        end if;
        execute pg_catalog.format
        ( 'alter table %I.%I rename column %I to %I'
        , _vec.source_schema, _vec.source_table
        , _shadow operator(pg_catalog.->>) 'embedding_column', _dest operator(pg_catalog.->>) 'embedding_column'
        );
    end if;
    update ai.vectorizer v set config = v.config operator(pg_catalog.-) 'shadow'
    where v.id operator(pg_catalog.=) $1;
    update ai._vectorizer_reembed r set finished_at = pg_catalog.now()
    where r.vectorizer_id operator(pg_catalog.=) $1;
    perform pg_catalog.pg_notify(ai._vectorizer_notify_channel(), _vec.id::pg_catalog.text);
    return true;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;
