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
-- The HNSW opclass for the column's type: a halfvec column takes halfvec_<kind>_ops for the
-- vector_<kind>_ops the indexing config names (configs always name the vector ones, as pgai's).
create or replace function ai._vectorizer_index_opclass
( target_schema pg_catalog.name
, target_table pg_catalog.name
, column_name pg_catalog.name
, indexing pg_catalog.jsonb
) returns pg_catalog.text as
$func$
    select case
        when t.typname operator(pg_catalog.=) 'halfvec'
        then pg_catalog.regexp_replace(o.opclass, '^vector_', 'halfvec_')
        else o.opclass
    end
    from (select coalesce(indexing operator(pg_catalog.->>) 'opclass', 'vector_cosine_ops') as opclass) o
    left outer join pg_catalog.pg_attribute a
      on (a.attrelid operator(pg_catalog.=)
            pg_catalog.to_regclass(pg_catalog.format('%I.%I', target_schema, target_table))
          and a.attname operator(pg_catalog.=) column_name)
    left outer join pg_catalog.pg_type t on (t.oid operator(pg_catalog.=) a.atttypid)
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The name of a valid ANN index (hnsw, ivfflat, diskann) on the column, whoever built it.
create or replace function ai._vectorizer_ann_index
( target_schema pg_catalog.name
, target_table pg_catalog.name
, column_name pg_catalog.name default 'embedding'
) returns pg_catalog.name as
$func$
    select c.relname
    from pg_catalog.pg_index i
    inner join pg_catalog.pg_class c on (c.oid operator(pg_catalog.=) i.indexrelid)
    inner join pg_catalog.pg_am am on (am.oid operator(pg_catalog.=) c.relam)
    inner join pg_catalog.pg_attribute a
      on (a.attrelid operator(pg_catalog.=) i.indrelid and a.attnum operator(pg_catalog.=) i.indkey[0])
    where i.indrelid operator(pg_catalog.=)
        pg_catalog.to_regclass(pg_catalog.format('%I.%I', target_schema, target_table))
    and a.attname operator(pg_catalog.=) column_name
    and am.amname in ('hnsw', 'ivfflat', 'diskann')
    and i.indisvalid and i.indisready
    order by c.relname
    limit 1
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The vector index as ai.vectorizer_status shows it: none / building n% / ready / failed: why.
create or replace function ai._vectorizer_index_state
( vectorizer ai.vectorizer
, build ai._vectorizer_index_build
) returns pg_catalog.text as
$func$
declare
    _destination pg_catalog.jsonb = vectorizer.config operator(pg_catalog.->) 'destination';
    _indexing pg_catalog.text =
        vectorizer.config operator(pg_catalog.->) 'indexing' operator(pg_catalog.->>) 'implementation';
    _index pg_catalog.name;
begin
    if (_destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'column' then
        _index = ai._vectorizer_ann_index
        ( vectorizer.source_schema, vectorizer.source_table
        , _destination operator(pg_catalog.->>) 'embedding_column'
        );
    else
        _index = ai._vectorizer_ann_index
        ( _destination operator(pg_catalog.->>) 'target_schema'
        , _destination operator(pg_catalog.->>) 'target_table'
        );
    end if;
    if _index is not null then
        return 'ready';
    end if;
    if build.state operator(pg_catalog.=) 'building' then
        return pg_catalog.format
        ( 'building %s%%%s'
        , coalesce(pg_catalog.round(build.percent::pg_catalog.numeric)::pg_catalog.text, '0')
        , coalesce(' (' operator(pg_catalog.||) build.phase operator(pg_catalog.||) ')', '')
        );
    elsif build.state in ('failed', 'unsupported') then
        return pg_catalog.format('failed: %s', build.error);
    end if;
    return 'none';
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Hybrid search: a GIN index on to_tsvector(language, chunk) of a table destination's store,
-- built in the caller's transaction (it blocks writes to the store while it builds).
create or replace function ai.enable_hybrid_search
( vectorizer_id pg_catalog.int4
, language pg_catalog.regconfig default 'english'
) returns pg_catalog.name as
$func$
declare
    _vec ai.vectorizer;
    _destination pg_catalog.jsonb;
    _index_name pg_catalog.name;
    _old ai._vectorizer_fulltext;
begin
    select * into _vec from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;
    if not found then
        raise exception 'vectorizer % not found', vectorizer_id;
    end if;
    _destination = _vec.config operator(pg_catalog.->) 'destination';
    if (_destination operator(pg_catalog.->>) 'implementation') is distinct from 'table' then
        raise exception 'hybrid search needs a table destination: vectorizer % stores one embedding per row in a column', _vec.name;
    end if;
    _index_name = pg_catalog.format('_vectorizer_fts_%s', _vec.id);
    select * into _old from ai._vectorizer_fulltext f where f.vectorizer_id operator(pg_catalog.=) _vec.id;
    if found and _old.language operator(pg_catalog.<>) language then
        execute pg_catalog.format
        ('drop index if exists %I.%I', _destination operator(pg_catalog.->>) 'target_schema', _old.index_name);
    end if;
    insert into ai._vectorizer_fulltext (vectorizer_id, language, index_name)
    values (_vec.id, language, _index_name)
    on conflict on constraint _vectorizer_fulltext_pkey do update
    set language = excluded.language, index_name = excluded.index_name, created_at = pg_catalog.now();
    execute pg_catalog.format
    ( 'create index if not exists %I on %I.%I using gin (pg_catalog.to_tsvector(%L::pg_catalog.regconfig, chunk))'
    , _index_name
    , _destination operator(pg_catalog.->>) 'target_schema'
    , _destination operator(pg_catalog.->>) 'target_table'
    , language::pg_catalog.text
    );
    return _index_name;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace function ai.enable_hybrid_search
( name pg_catalog.text
, language pg_catalog.regconfig default 'english'
) returns pg_catalog.name as
$func$
declare
    _id pg_catalog.int4;
begin
    select v.id into _id from ai.vectorizer v where v.name operator(pg_catalog.=) enable_hybrid_search.name;
    if _id is null then
        raise exception 'vectorizer % not found', enable_hybrid_search.name;
    end if;
    return ai.enable_hybrid_search(_id, language);
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
            , _vector_schema
            , ai._vectorizer_index_opclass(target_schema, target_table, column_name, indexing)
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
