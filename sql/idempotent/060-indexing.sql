-- Automatic vector indexes, built by the timescaledb job (scheduling_timescaledb).

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_vector_index_exists
( target_schema pg_catalog.name
, target_table pg_catalog.name
, indexing pg_catalog.jsonb
, column_name pg_catalog.name default 'embedding'
) returns pg_catalog.bool as
$func$
declare
    _implementation pg_catalog.text;
    _found pg_catalog.bool;
begin
    _implementation = indexing operator(pg_catalog.->>) 'implementation';
    if _implementation not in ('diskann', 'hnsw') then
        raise exception 'unrecognized index implementation: %', _implementation;
    end if;
    select exists
    ( select 1
      from pg_catalog.pg_index i
      inner join pg_catalog.pg_attribute a
        on (a.attrelid operator(pg_catalog.=) i.indrelid and a.attnum operator(pg_catalog.=) any(i.indkey))
      where i.indrelid operator(pg_catalog.=)
        pg_catalog.format('%I.%I', target_schema, target_table)::pg_catalog.regclass::pg_catalog.oid
      and a.attname operator(pg_catalog.=) column_name
      and pg_catalog.pg_get_indexdef(i.indexrelid)
        operator(pg_catalog.~~*) pg_catalog.concat('% using ', _implementation, ' %')
    ) into _found;
    return _found;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_should_create_vector_index(vectorizer ai.vectorizer)
returns pg_catalog.bool as
$func$
declare
    _indexing pg_catalog.jsonb;
    _destination pg_catalog.jsonb;
    _schema pg_catalog.name;
    _table pg_catalog.name;
    _column pg_catalog.name;
    _min_rows pg_catalog.int8;
    _queue_has_rows pg_catalog.bool;
    _rows pg_catalog.int8;
begin
    _indexing = vectorizer.config operator(pg_catalog.->) 'indexing';
    if _indexing is null or (_indexing operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'none' then
        return false;
    end if;
    _destination = vectorizer.config operator(pg_catalog.->) 'destination';
    if (_destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'column' then
        _schema = vectorizer.source_schema;
        _table = vectorizer.source_table;
        _column = _destination operator(pg_catalog.->>) 'embedding_column';
    else
        _schema = _destination operator(pg_catalog.->>) 'target_schema';
        _table = _destination operator(pg_catalog.->>) 'target_table';
        _column = 'embedding';
    end if;
    if ai._vectorizer_vector_index_exists(_schema, _table, _indexing, _column) then
        return false;
    end if;
    if coalesce((_indexing operator(pg_catalog.->) 'create_when_queue_empty')::pg_catalog.bool, true) then
        execute pg_catalog.format
        ('select exists (select 1 from %I.%I)', vectorizer.queue_schema, vectorizer.queue_table)
        into strict _queue_has_rows;
        if _queue_has_rows then
            return false;
        end if;
    end if;
    _min_rows = coalesce((_indexing operator(pg_catalog.->>) 'min_rows')::pg_catalog.int8, 0);
    execute pg_catalog.format
    ('select pg_catalog.count(*) from (select 1 from %I.%I limit %L) x', _schema, _table, _min_rows)
    into strict _rows;
    return _rows operator(pg_catalog.>=) _min_rows;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_create_vector_index
( target_schema pg_catalog.name
, target_table pg_catalog.name
, indexing pg_catalog.jsonb
, column_name pg_catalog.name default 'embedding'
) returns void as
$func$
declare
    _with pg_catalog.text;
    _vector_schema pg_catalog.name;
begin
    if not pg_catalog.pg_try_advisory_xact_lock
    ( 1982010642
    , pg_catalog.format('%I.%I', target_schema, target_table)::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4
    ) then
        raise warning 'another process is already building a vector index on %.%', target_schema, target_table;
        return;
    end if;
    if ai._vectorizer_vector_index_exists(target_schema, target_table, indexing, column_name) then
        return;
    end if;

    case indexing operator(pg_catalog.->>) 'implementation'
        when 'diskann' then
            select pg_catalog.string_agg(pg_catalog.format('%s=%L', x.key, x.value), ', ')
            into _with
            from pg_catalog.jsonb_each_text(indexing) x
            where x.key in
            ( 'storage_layout', 'num_neighbors', 'search_list_size', 'max_alpha'
            , 'num_dimensions', 'num_bits_per_dimension'
            );
            execute pg_catalog.format
            ( 'create index on %I.%I using diskann (%I)%s'
            , target_schema, target_table, column_name
            , case when _with is not null then pg_catalog.format(' with (%s)', _with) else '' end
            );
        when 'hnsw' then
            select n.nspname into strict _vector_schema
            from pg_catalog.pg_extension x
            inner join pg_catalog.pg_namespace n on (x.extnamespace operator(pg_catalog.=) n.oid)
            where x.extname operator(pg_catalog.=) 'vector';
            select pg_catalog.string_agg(pg_catalog.format('%s=%L', x.key, x.value), ', ')
            into _with
            from pg_catalog.jsonb_each_text(indexing) x
            where x.key in ('m', 'ef_construction');
            execute pg_catalog.format
            ( 'create index on %I.%I using hnsw (%I %I.%I)%s'
            , target_schema, target_table, column_name
            , _vector_schema, indexing operator(pg_catalog.->>) 'opclass'
            , case when _with is not null then pg_catalog.format(' with (%s)', _with) else '' end
            );
        else
            raise exception 'unrecognized index implementation: %s', indexing operator(pg_catalog.->>) 'implementation';
    end case;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The timescaledb job: builds the vector index when due and wakes the workers. pgai's job
-- called the cloud executor; a self-hosted worker listens for the notification instead.
create or replace procedure ai._vectorizer_job
( job_id pg_catalog.int4 default null
, config pg_catalog.jsonb default null
) as
$func$
declare
    _vectorizer_id pg_catalog.int4;
    _vec ai.vectorizer;
    _destination pg_catalog.jsonb;
begin
    _vectorizer_id = (config operator(pg_catalog.->) 'vectorizer_id')::pg_catalog.int4;
    select * into strict _vec from ai.vectorizer v where v.id operator(pg_catalog.=) _vectorizer_id;
    commit;
    set local search_path = pg_catalog, pg_temp;

    if ai._vectorizer_should_create_vector_index(_vec) then
        _destination = _vec.config operator(pg_catalog.->) 'destination';
        if (_destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'column' then
            perform ai._vectorizer_create_vector_index
            ( _vec.source_schema, _vec.source_table
            , _vec.config operator(pg_catalog.->) 'indexing'
            , _destination operator(pg_catalog.->>) 'embedding_column'
            );
        else
            perform ai._vectorizer_create_vector_index
            ( _destination operator(pg_catalog.->>) 'target_schema'
            , _destination operator(pg_catalog.->>) 'target_table'
            , _vec.config operator(pg_catalog.->) 'indexing'
            );
        end if;
    end if;
    commit;
    set local search_path = pg_catalog, pg_temp;

    if not _vec.disabled then
        perform pg_catalog.pg_notify(ai._vectorizer_notify_channel(), _vectorizer_id::pg_catalog.text);
        if pg_catalog.to_regprocedure('ai.execute_vectorizer(pg_catalog.int4)') is not null then
            execute 'select ai.execute_vectorizer($1)' using _vectorizer_id;
        end if;
    end if;
    commit;
end
$func$ language plpgsql security invoker;
