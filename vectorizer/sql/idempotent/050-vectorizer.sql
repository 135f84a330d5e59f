-- ai.create_vectorizer and the functions that manage a vectorizer's life.

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_raise_queue_exists
( queue_schema pg_catalog.name
, queue_table pg_catalog.name
) returns void as
$func$
begin
    raise exception 'an object named %.% already exists. specify an alternate queue_table explicitly'
    , queue_schema, queue_table
    using errcode = 'duplicate_object';
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai.create_vectorizer
( source pg_catalog.regclass
, name pg_catalog.text default null
, destination pg_catalog.jsonb default ai.destination_table()
, loading pg_catalog.jsonb default null
, parsing pg_catalog.jsonb default ai.parsing_auto()
, embedding pg_catalog.jsonb default null
, chunking pg_catalog.jsonb default ai.chunking_recursive_character_text_splitter()
, indexing pg_catalog.jsonb default ai.indexing_default()
, formatting pg_catalog.jsonb default ai.formatting_python_template()
, scheduling pg_catalog.jsonb default ai.scheduling_default()
, processing pg_catalog.jsonb default ai.processing_default()
, queue_schema pg_catalog.name default null
, queue_table pg_catalog.name default null
, grant_to pg_catalog.name[] default ai.grant_to()
, enqueue_existing pg_catalog.bool default true
, if_not_exists pg_catalog.bool default false
) returns pg_catalog.int4
as $func$
#variable_conflict use_variable
declare
    _missing_roles pg_catalog.name[];
    _source_schema pg_catalog.name;
    _source_table pg_catalog.name;
    _is_owner pg_catalog.bool;
    _dimensions pg_catalog.int4;
    _source_pk pg_catalog.jsonb;
    _vectorizer_id pg_catalog.int4;
    _existing_id pg_catalog.int4;
    _trigger_name pg_catalog.name;
    _queue_failed_table pg_catalog.name;
    _job_id pg_catalog.int8;
    _pk_cols pg_catalog.text;
    _queue_exists pg_catalog.bool;
begin
    -- 1. roles that do not exist are dropped with a warning; none left means no grants
    if grant_to is not null then
        select pg_catalog.array_agg(r) into _missing_roles
        from pg_catalog.unnest(grant_to) r
        where r operator(pg_catalog.<>) 'public'
        and not exists (select 1 from pg_catalog.pg_roles x where x.rolname operator(pg_catalog.=) r);
        if _missing_roles is not null then
            raise warning 'one or more grant_to roles do not exist: %', _missing_roles;
        end if;
        select pg_catalog.array_agg(r) into grant_to
        from pg_catalog.unnest(grant_to) r
        where r operator(pg_catalog.=) 'public'
        or exists (select 1 from pg_catalog.pg_roles x where x.rolname operator(pg_catalog.=) r);
    end if;

    -- 2.
    if embedding is null then
        raise exception 'embedding configuration is required';
    end if;
    if loading is null then
        raise exception 'loading configuration is required';
    end if;

    -- 3. only the owner (or a superuser) may attach triggers and queues to a table
    select n.nspname, k.relname
    , pg_catalog.pg_has_role(pg_catalog.current_user(), k.relowner, 'MEMBER')
    into strict _source_schema, _source_table, _is_owner
    from pg_catalog.pg_class k
    inner join pg_catalog.pg_namespace n on (k.relnamespace operator(pg_catalog.=) n.oid)
    where k.oid operator(pg_catalog.=) source;

    if not _is_owner and not coalesce
    ( (select r.rolsuper from pg_catalog.pg_roles r where r.rolname operator(pg_catalog.=) pg_catalog.current_user())
    , false
    ) then
        raise exception 'only a superuser or the owner of the source table may create a vectorizer on it';
    end if;

    -- 4.
    _dimensions = (embedding operator(pg_catalog.->) 'dimensions')::pg_catalog.int4;
    if _dimensions is null then
        raise exception 'dimensions argument is required';
    end if;

    -- 5.
    _source_pk = ai._vectorizer_source_pk(source);
    if _source_pk is null or pg_catalog.jsonb_array_length(_source_pk) operator(pg_catalog.=) 0 then
        raise exception 'source table must have a primary key constraint';
    end if;

    -- 6.
    _vectorizer_id = pg_catalog.nextval('ai.vectorizer_id_seq'::pg_catalog.regclass);
    _trigger_name = pg_catalog.concat('_vectorizer_src_trg_', _vectorizer_id);
    queue_schema = coalesce(queue_schema, 'ai');
    queue_table = coalesce(queue_table, pg_catalog.concat('_vectorizer_q_', _vectorizer_id));
    _queue_failed_table = pg_catalog.concat('_vectorizer_q_failed_', _vectorizer_id);

    -- with if_not_exists, an existing vectorizer of the same name (step 11) wins over the
    -- collision with its own queue table (pgai raised the collision)
    _queue_exists = pg_catalog.to_regclass(pg_catalog.format('%I.%I', queue_schema, queue_table)) is not null;
    if _queue_exists and not if_not_exists then
        perform ai._vectorizer_raise_queue_exists(queue_schema, queue_table);
    end if;

    -- 7.
    perform ai._validate_loading(loading, _source_schema, _source_table);
    perform ai._validate_parsing(parsing, loading, _source_schema, _source_table);
    perform ai._validate_destination(destination, chunking);
    perform ai._validate_embedding(embedding);
    perform ai._validate_chunking(chunking);
    if (indexing operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'default' then
        indexing = ai._resolve_indexing_default();
    end if;
    perform ai._validate_indexing(indexing);
    perform ai._validate_formatting(formatting, _source_schema, _source_table);
    if (scheduling operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'default' then
        scheduling = ai._resolve_scheduling_default();
    end if;
    perform ai._validate_scheduling(scheduling);
    perform ai._validate_processing(processing);

    -- 8. pgai refused indexing without scheduling here; our worker builds the index itself.

    -- 9.
    destination = ai._evaluate_destination(destination, _source_schema, _source_table);

    -- 10.
    if name is null then
        if (destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'table' then
            name = pg_catalog.format
            ( '%s_%s'
            , destination operator(pg_catalog.->>) 'target_schema'
            , destination operator(pg_catalog.->>) 'target_table'
            );
        else
            name = pg_catalog.format
            ( '%s_%s_%s'
            , _source_schema
            , _source_table
            , destination operator(pg_catalog.->>) 'embedding_column'
            );
        end if;
    end if;

    -- 11.
    select v.id into _existing_id from ai.vectorizer v where v.name operator(pg_catalog.=) name;
    if _existing_id is not null then
        if if_not_exists then
            raise notice 'a vectorizer named % already exists, skipping', name;
            return _existing_id;
        end if;
        raise exception 'a vectorizer named % already exists.', name
        using errcode = 'duplicate_object';
    end if;
    if _queue_exists then
        perform ai._vectorizer_raise_queue_exists(queue_schema, queue_table);
    end if;

    -- 12.
    perform ai._validate_destination_can_create_objects(destination);

    -- 13.
    perform ai._vectorizer_grant_to_source(_source_schema, _source_table, grant_to);

    -- 14.
    if (destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'table' then
        perform ai._vectorizer_create_destination_table
        (_source_schema, _source_table, _source_pk, _dimensions, destination, grant_to);
    else
        perform ai._vectorizer_create_destination_column
        (_source_schema, _source_table, _dimensions, destination);
    end if;

    -- 15.
    perform ai._vectorizer_create_queue_table(queue_schema, queue_table, _source_pk, grant_to);
    perform ai._vectorizer_create_queue_failed_table
    (queue_schema, _queue_failed_table, _source_pk, grant_to);

    -- 16.
    perform ai._vectorizer_create_source_trigger
    ( _trigger_name
    , queue_schema
    , queue_table
    , _source_schema
    , _source_table
    , destination operator(pg_catalog.->>) 'target_schema'
    , destination operator(pg_catalog.->>) 'target_table'
    , _source_pk
    , _vectorizer_id
    , ai._vectorizer_watched_columns(_source_schema, _source_table, loading, formatting)
    , _queue_failed_table
    );

    -- 17.
    if (scheduling operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'timescaledb' then
        _job_id = ai._vectorizer_schedule_job(_vectorizer_id, scheduling);
        if _job_id is not null then
            scheduling = pg_catalog.jsonb_insert(scheduling, array['job_id'], pg_catalog.to_jsonb(_job_id));
        end if;
    end if;

    -- 18.
    insert into ai.vectorizer
    ( id
    , source_schema
    , source_table
    , source_pk
    , trigger_name
    , queue_schema
    , queue_table
    , queue_failed_table
    , config
    , name
    )
    values
    ( _vectorizer_id
    , _source_schema
    , _source_table
    , _source_pk
    , _trigger_name
    , queue_schema
    , queue_table
    , _queue_failed_table
    , pg_catalog.jsonb_build_object
      ( 'version', '@vectorizer_config_version@'
      , 'loading', loading
      , 'parsing', parsing
      , 'embedding', embedding
      , 'chunking', chunking
      , 'indexing', indexing
      , 'formatting', formatting
      , 'scheduling', scheduling
      , 'processing', processing
      , 'destination', destination
      )
    , name
    );

    -- 19.
    perform ai._vectorizer_grant_to_vectorizer(grant_to);

    -- 20.
    if enqueue_existing then
        _pk_cols = ai._vectorizer_pk_list(_source_pk);
        execute pg_catalog.format
        ( 'insert into %I.%I (%s) select %s from %I.%I x'
        , queue_schema, queue_table
        , _pk_cols
        , ai._vectorizer_pk_list(_source_pk, 'x')
        , _source_schema, _source_table
        );
        perform pg_catalog.pg_notify(ai._vectorizer_notify_channel(), _vectorizer_id::pg_catalog.text);
    end if;
    return _vectorizer_id;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The schema timescaledb lives in, or null when it is not installed.
create or replace function ai._vectorizer_timescaledb_schema()
returns pg_catalog.name as
$func$
    select n.nspname
    from pg_catalog.pg_extension x
    inner join pg_catalog.pg_namespace n on (x.extnamespace operator(pg_catalog.=) n.oid)
    where x.extname operator(pg_catalog.=) 'timescaledb'
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_schedule_job
( vectorizer_id pg_catalog.int4
, scheduling pg_catalog.jsonb
) returns pg_catalog.int8 as
$func$
declare
    _implementation pg_catalog.text;
    _tsdb_schema pg_catalog.name;
    _sql pg_catalog.text;
    _job_id pg_catalog.int8;
begin
    _implementation = scheduling operator(pg_catalog.->>) 'implementation';
    case _implementation
        when 'timescaledb' then
            _tsdb_schema = ai._vectorizer_timescaledb_schema();
            if _tsdb_schema is null then
                raise exception 'timescaledb extension not found: scheduling_timescaledb needs it (create extension timescaledb) or use scheduling=>ai.scheduling_none()';
            end if;
        when 'none' then
            return null;
        else
            raise exception 'scheduling implementation not recognized';
    end case;

    -- only the keys that are present are passed to add_job
    select pg_catalog.string_agg(pg_catalog.format(', %s=>%L::%s', x.arg, x.val, x.typ), '')
    into _sql
    from
    ( values
      ('schedule_interval', scheduling operator(pg_catalog.->>) 'schedule_interval', 'pg_catalog.interval', 1)
    , ('initial_start', scheduling operator(pg_catalog.->>) 'initial_start', 'pg_catalog.timestamptz', 2)
    , ('fixed_schedule', scheduling operator(pg_catalog.->>) 'fixed_schedule', 'pg_catalog.bool', 3)
    , ('timezone', scheduling operator(pg_catalog.->>) 'timezone', 'pg_catalog.text', 4)
    ) x(arg, val, typ, ord)
    where x.val is not null;

    execute pg_catalog.format
    ( 'select %I.add_job(%L::pg_catalog.regproc%s, config=>%L::pg_catalog.jsonb)'
    , _tsdb_schema
    , 'ai._vectorizer_job'
    , coalesce(_sql, '')
    , pg_catalog.jsonb_build_object('vectorizer_id', vectorizer_id)::pg_catalog.text
    ) into strict _job_id;
    return _job_id;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_unschedule_job(scheduling pg_catalog.jsonb)
returns void as
$func$
declare
    _tsdb_schema pg_catalog.name;
    _job_id pg_catalog.int8;
begin
    _job_id = (scheduling operator(pg_catalog.->) 'job_id')::pg_catalog.int8;
    _tsdb_schema = ai._vectorizer_timescaledb_schema();
    if _job_id is null or _tsdb_schema is null then
        return;
    end if;
    execute pg_catalog.format
    ( 'select %I.delete_job(j.job_id) from timescaledb_information.jobs j where j.job_id operator(pg_catalog.=) %L'
    , _tsdb_schema, _job_id
    );
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_alter_job
( scheduling pg_catalog.jsonb
, scheduled pg_catalog.bool
) returns void as
$func$
declare
    _tsdb_schema pg_catalog.name;
    _job_id pg_catalog.int8;
begin
    _job_id = (scheduling operator(pg_catalog.->) 'job_id')::pg_catalog.int8;
    _tsdb_schema = ai._vectorizer_timescaledb_schema();
    if _job_id is null or _tsdb_schema is null then
        return;
    end if;
    execute pg_catalog.format
    ( 'select %I.alter_job(%L::pg_catalog.int4, scheduled=>%L::pg_catalog.bool)'
    , _tsdb_schema, _job_id, scheduled
    );
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai.drop_vectorizer
( vectorizer_id pg_catalog.int4
, drop_all pg_catalog.bool default false
) returns void as
$func$
declare
    _vec ai.vectorizer;
    _destination pg_catalog.jsonb;
    _trigger_exists pg_catalog.bool;
begin
    select v.* into strict _vec from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;

    -- a half-filled shadow store of an unfinished ai.alter_vectorizer (055-alter.sql)
    perform ai._vectorizer_shadow_drop(_vec);

    if (_vec.config operator(pg_catalog.->) 'scheduling' operator(pg_catalog.->>) 'implementation')
        operator(pg_catalog.=) 'timescaledb' then
        perform ai._vectorizer_unschedule_job(_vec.config operator(pg_catalog.->) 'scheduling');
    end if;

    select exists
    ( select 1
      from pg_catalog.pg_trigger g
      where g.tgname operator(pg_catalog.=) _vec.trigger_name
      and g.tgrelid operator(pg_catalog.=) pg_catalog.to_regclass
        (pg_catalog.format('%I.%I', _vec.source_schema, _vec.source_table))
    ) into _trigger_exists;

    if _trigger_exists then
        execute pg_catalog.format
        ('drop trigger %I on %I.%I', _vec.trigger_name, _vec.source_schema, _vec.source_table);
        execute pg_catalog.format
        ( 'drop trigger if exists %I on %I.%I'
        , _vec.trigger_name operator(pg_catalog.||) '_truncate', _vec.source_schema, _vec.source_table
        );
        execute pg_catalog.format('drop function if exists %I.%I()', _vec.queue_schema, _vec.trigger_name);
    else
        execute pg_catalog.format
        ('drop function if exists %I.%I() cascade', _vec.queue_schema, _vec.trigger_name);
    end if;

    execute pg_catalog.format('drop table if exists %I.%I', _vec.queue_schema, _vec.queue_table);
    if _vec.queue_failed_table is not null then
        execute pg_catalog.format
        ('drop table if exists %I.%I', _vec.queue_schema, _vec.queue_failed_table);
    end if;

    _destination = _vec.config operator(pg_catalog.->) 'destination';
    if drop_all and (_destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'table' then
        execute pg_catalog.format
        ( 'drop view if exists %I.%I'
        , _destination operator(pg_catalog.->>) 'view_schema'
        , _destination operator(pg_catalog.->>) 'view_name'
        );
        execute pg_catalog.format
        ( 'drop table if exists %I.%I'
        , _destination operator(pg_catalog.->>) 'target_schema'
        , _destination operator(pg_catalog.->>) 'target_table'
        );
    end if;

    delete from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai.drop_vectorizer
( name pg_catalog.text
, drop_all pg_catalog.bool default false
) returns void as
$func$
    select ai.drop_vectorizer(v.id, drop_all)
    from ai.vectorizer v
    where v.name operator(pg_catalog.=) drop_vectorizer.name
$func$ language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai.disable_vectorizer_schedule(vectorizer_id pg_catalog.int4)
returns void as
$func$
declare
    _scheduling pg_catalog.jsonb;
begin
    update ai.vectorizer v set disabled = true
    where v.id operator(pg_catalog.=) vectorizer_id
    returning v.config operator(pg_catalog.->) 'scheduling' into strict _scheduling;
    perform ai._vectorizer_alter_job(_scheduling, false);
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace function ai.disable_vectorizer_schedule(name pg_catalog.text)
returns void as
$func$
    select ai.disable_vectorizer_schedule(v.id)
    from ai.vectorizer v
    where v.name operator(pg_catalog.=) disable_vectorizer_schedule.name
$func$ language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai.enable_vectorizer_schedule(vectorizer_id pg_catalog.int4)
returns void as
$func$
declare
    _scheduling pg_catalog.jsonb;
begin
    update ai.vectorizer v set disabled = false
    where v.id operator(pg_catalog.=) vectorizer_id
    returning v.config operator(pg_catalog.->) 'scheduling' into strict _scheduling;
    perform ai._vectorizer_alter_job(_scheduling, true);
    -- wake workers: the queue may have filled while the vectorizer was disabled
    perform pg_catalog.pg_notify(ai._vectorizer_notify_channel(), vectorizer_id::pg_catalog.text);
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace function ai.enable_vectorizer_schedule(name pg_catalog.text)
returns void as
$func$
    select ai.enable_vectorizer_schedule(v.id)
    from ai.vectorizer v
    where v.name operator(pg_catalog.=) enable_vectorizer_schedule.name
$func$ language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai.set_scheduling
( vectorizer_id pg_catalog.int4
, scheduling pg_catalog.jsonb default ai.scheduling_default()
, indexing pg_catalog.jsonb default ai.indexing_default()
) returns pg_catalog.jsonb as
$func$
#variable_conflict use_variable
declare
    _config pg_catalog.jsonb;
    _job_id pg_catalog.int8;
begin
    select v.config into strict _config from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;

    if (scheduling operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'default' then
        scheduling = ai._resolve_scheduling_default();
    end if;
    perform ai._validate_scheduling(scheduling);
    if (indexing operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'default' then
        indexing = ai._resolve_indexing_default();
    end if;
    perform ai._validate_indexing(indexing);

    -- pgai refused indexing without scheduling here; our worker builds the index itself.

    -- unlike pgai, this looks timescaledb up wherever it is installed, and only when a job exists
    perform ai._vectorizer_unschedule_job(_config operator(pg_catalog.->) 'scheduling');

    if (scheduling operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'timescaledb' then
        _job_id = ai._vectorizer_schedule_job(vectorizer_id, scheduling);
        if _job_id is not null then
            scheduling = scheduling operator(pg_catalog.||) pg_catalog.jsonb_build_object('job_id', _job_id);
        end if;
    end if;

    update ai.vectorizer v
    set config = v.config operator(pg_catalog.||)
        pg_catalog.jsonb_build_object('scheduling', scheduling, 'indexing', indexing)
    where v.id operator(pg_catalog.=) vectorizer_id
    returning v.config into strict _config;
    return _config;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- ai.execute_vectorizer(int4) comes from pgai's `ai` extension (Timescale Cloud's executor).
create or replace function ai.execute_vectorizer(vectorizer_name pg_catalog.text)
returns void as
$func$
declare
    _id pg_catalog.int4;
begin
    select v.id into strict _id from ai.vectorizer v where v.name operator(pg_catalog.=) vectorizer_name;
    if pg_catalog.to_regprocedure('ai.execute_vectorizer(pg_catalog.int4)') is null then
        raise exception 'ai.execute_vectorizer(int4) is provided by the ai extension (a cloud executor); a self-hosted vectorizer-worker processes vectorizer % on its own', vectorizer_name;
    end if;
    execute 'select ai.execute_vectorizer($1)' using _id;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- pgai's five-argument destination_table, renamed in 010 while create_vectorizer's default
-- still depended on it; left alone if something else of the user's still does.
do $block$
begin
    drop function if exists ai._destination_table_5
    (pg_catalog.name, pg_catalog.name, pg_catalog.name, pg_catalog.name, pg_catalog.name);
exception when dependent_objects_still_exist then
    raise notice 'ai._destination_table_5 kept: other objects depend on it';
end
$block$;
