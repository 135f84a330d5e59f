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
        , 'vector_type'
        ]) k
    loop
        if (_wanted operator(pg_catalog.->>) _key) is distinct from (_current operator(pg_catalog.->>) _key) then
            raise exception 'the destination''s % cannot change in place (it is %, asked for %); only loading, parsing, chunking, formatting, embedding, processing, indexing and scheduling can be altered'
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
create or replace function ai._vectorizer_reembed_start
( _vec ai.vectorizer
, version pg_catalog.int4
) returns void as
$func$
declare
    _total pg_catalog.int8;
begin
    execute pg_catalog.format('select pg_catalog.count(*) from %I.%I', _vec.source_schema, _vec.source_table)
    into strict _total;
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
) returns pg_catalog.int4
as $func$
#variable_conflict use_variable
declare
    _vec ai.vectorizer;
    _old pg_catalog.jsonb;
    _new pg_catalog.jsonb;
    _version pg_catalog.int4;
    _job_id pg_catalog.int8;
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

    -- the same validators as ai.create_vectorizer, on the config as it would be
    perform ai._validate_loading(loading, _vec.source_schema, _vec.source_table);
    perform ai._validate_parsing(parsing, loading, _vec.source_schema, _vec.source_table);
    perform ai._validate_destination(_old operator(pg_catalog.->) 'destination', chunking);
    perform ai._validate_embedding(embedding);
    if (embedding operator(pg_catalog.->) 'dimensions') is null then
        raise exception 'dimensions argument is required';
    end if;
    perform ai._validate_chunking(chunking);
    perform ai._validate_indexing(indexing);
    perform ai._validate_formatting(formatting, _vec.source_schema, _vec.source_table);
    perform ai._validate_scheduling(scheduling);
    perform ai._validate_processing(processing);

    if (embedding operator(pg_catalog.->>) 'dimensions')::pg_catalog.int4
        operator(pg_catalog.<>) (_old operator(pg_catalog.->) 'embedding' operator(pg_catalog.->>) 'dimensions')::pg_catalog.int4 then
        raise exception 'changing the embedding dimensions of vectorizer % (% to %) needs a new store, which ai.alter_vectorizer cannot build yet; keep % dimensions or create a new vectorizer'
        , _vec.name
        , _old operator(pg_catalog.->) 'embedding' operator(pg_catalog.->>) 'dimensions'
        , embedding operator(pg_catalog.->>) 'dimensions'
        , _old operator(pg_catalog.->) 'embedding' operator(pg_catalog.->>) 'dimensions';
    end if;

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
    ( 'loading', loading
    , 'parsing', parsing
    , 'chunking', chunking
    , 'formatting', formatting
    , 'embedding', embedding
    , 'processing', processing
    , 'indexing', indexing
    , 'scheduling', scheduling
    );
    update ai.vectorizer v set config = _new where v.id operator(pg_catalog.=) _vec.id;

    _version = ai._vectorizer_config_version(_vec.id);
    if ai._vectorizer_content_hash(_new) operator(pg_catalog.<>) ai._vectorizer_content_hash(_old) then
        -- the history starts with the creation config, recorded on the first change
        insert into ai._vectorizer_config_version (vectorizer_id, version, config)
        values (_vec.id, 1, _old)
        on conflict do nothing;
        _version = _version operator(pg_catalog.+) 1;
        insert into ai._vectorizer_config_version (vectorizer_id, version, config)
        values (_vec.id, _version, _new);
        perform ai._vectorizer_reembed_start(_vec, _version);
        -- loading and formatting decide which column changes queue a row
        perform ai._vectorizer_regenerate_trigger_function(_vec.id);
    end if;
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
    (_id, loading, parsing, chunking, formatting, embedding, processing, indexing, scheduling, destination);
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Queues the next `max_keys` source keys of a running re-embed, in primary-key order after
-- the last key queued, and moves the cursor past them in the same transaction (a worker
-- killed mid-way leaves them queued and the cursor where they end). Workers call it only when
-- their claim found nothing, so live changes go first and at most a slice per executor waits.
-- Returns the keys queued; 0 when every key is queued but some are not embedded yet; -1 when
-- there is nothing to re-embed (none started, or finished: marked so here).
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
