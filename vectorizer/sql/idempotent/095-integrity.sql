-- Integrity of a vectorizer's embeddings: store rows no source row owns (orphans), and source
-- rows that should have embeddings and have none, queued nowhere (missing). Counting and
-- repairing both scan the source and the store, so neither runs unless asked for.
--
-- "Should have embeddings": the loaded column (the text, the document or the URI) holds
-- something to embed. A NULL, an empty value or text of only white space gives no chunks, in
-- pgai and here, so such a row is never missing. A row already queued, or in the failed queue
-- (see ai.retry_failed), is not missing either.

-------------------------------------------------------------------------------
-- "<alias>.<loaded column> has something to embed", as SQL text.
create or replace function ai._vectorizer_has_input(_vec ai.vectorizer, alias pg_catalog.text)
returns pg_catalog.text as
$func$
declare
    _column pg_catalog.name;
begin
    _column = _vec.config operator(pg_catalog.->) 'loading' operator(pg_catalog.->>) 'column_name';
    if ai._vectorizer_source_column_type(_vec.source_schema, _vec.source_table, _column)
        operator(pg_catalog.=) 'bytea' then
        return pg_catalog.format('pg_catalog.octet_length(%s.%I) operator(pg_catalog.>) 0', alias, _column);
    end if;
    return pg_catalog.format
    ('%s.%I::pg_catalog.text operator(pg_catalog.~) %L', alias, _column, '[^[:space:]]');
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The quoted store table of a table destination; null for a column destination.
create or replace function ai._vectorizer_store_table(_vec ai.vectorizer)
returns pg_catalog.text as
$func$
    select case when d operator(pg_catalog.->>) 'implementation' operator(pg_catalog.=) 'table'
        then pg_catalog.format('%I.%I', d operator(pg_catalog.->>) 'target_schema', d operator(pg_catalog.->>) 'target_table')
    end
    from (select _vec.config operator(pg_catalog.->) 'destination') x(d)
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- "from <store> t where <no source row>": the orphan store rows; null for a column destination.
create or replace function ai._vectorizer_orphan_scan(_vec ai.vectorizer)
returns pg_catalog.text as
$func$
    select pg_catalog.format
    ( 'from %s t where not exists (select 1 from %I.%I s where %s)'
    , ai._vectorizer_store_table(_vec)
    , _vec.source_schema, _vec.source_table
    , ai._vectorizer_pk_join(_vec.source_pk, 't', 's')
    )
    where ai._vectorizer_store_table(_vec) is not null
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- "from <source> s where <missing>": source rows with input, no embeddings, queued nowhere.
create or replace function ai._vectorizer_missing_scan(_vec ai.vectorizer)
returns pg_catalog.text as
$func$
declare
    _store pg_catalog.text = ai._vectorizer_store_table(_vec);
    _embedded pg_catalog.text;
    _scan pg_catalog.text;
begin
    if _store is not null then
        _embedded = pg_catalog.format
        ('exists (select 1 from %s t where %s)', _store, ai._vectorizer_pk_join(_vec.source_pk, 't', 's'));
    else
        _embedded = pg_catalog.format
        ( 's.%I is not null'
        , _vec.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'embedding_column'
        );
    end if;
    _scan = pg_catalog.format
    ( 'from %I.%I s where not %s and %s and not exists (select 1 from %I.%I q where %s)'
    , _vec.source_schema, _vec.source_table
    , _embedded
    , ai._vectorizer_has_input(_vec, 's')
    , _vec.queue_schema, _vec.queue_table
    , ai._vectorizer_pk_join(_vec.source_pk, 'q', 's')
    );
    if _vec.queue_failed_table is not null then
        _scan = _scan operator(pg_catalog.||) pg_catalog.format
        ( ' and not exists (select 1 from %I.%I f where %s)'
        , _vec.queue_schema, _vec.queue_failed_table
        , ai._vectorizer_pk_join(_vec.source_pk, 'f', 's')
        );
    end if;
    return _scan;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The catalog row of a vectorizer given by id or by name; a clear error when there is none.
create or replace function ai._vectorizer_lookup
( vectorizer_id pg_catalog.int4 default null
, name pg_catalog.text default null
) returns ai.vectorizer as
$func$
declare
    _vec ai.vectorizer;
begin
    select * into _vec from ai.vectorizer v
    where v.id operator(pg_catalog.=) vectorizer_id or v.name operator(pg_catalog.=) _vectorizer_lookup.name;
    if not found then
        raise exception '%', case when vectorizer_id is not null
            then pg_catalog.format('no vectorizer with id %s', vectorizer_id)
            else pg_catalog.format('no vectorizer named %L', name) end
        using errcode = 'no_data_found';
    end if;
    return _vec;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Counts only; changes nothing. Scans the source and the store: slow on big tables.
create or replace function ai.vectorizer_integrity
( vectorizer_id pg_catalog.int4
, out orphan_keys pg_catalog.int8
, out orphan_chunks pg_catalog.int8
, out missing_rows pg_catalog.int8
) as
$func$
declare
    _vec ai.vectorizer = ai._vectorizer_lookup(vectorizer_id);
    _orphans pg_catalog.text = ai._vectorizer_orphan_scan(_vec);
begin
    orphan_keys = 0;
    orphan_chunks = 0;
    if _orphans is not null then
        execute pg_catalog.format
        ( 'select pg_catalog.count(*), pg_catalog.count(distinct (%s)) %s'
        , ai._vectorizer_pk_list(_vec.source_pk, 't'), _orphans
        ) into strict orphan_chunks, orphan_keys;
    end if;
    execute pg_catalog.format('select pg_catalog.count(*) %s', ai._vectorizer_missing_scan(_vec))
    into strict missing_rows;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

create or replace function ai.vectorizer_integrity
( name pg_catalog.text
, out orphan_keys pg_catalog.int8
, out orphan_chunks pg_catalog.int8
, out missing_rows pg_catalog.int8
) as
$func$
    select * from ai.vectorizer_integrity((ai._vectorizer_lookup(name => name)).id)
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Deletes the orphan store rows and queues the missing source rows; returns what it did.
-- For a column destination it also drops the chunk-reuse hashes of rows that are gone.
-- Safe while workers run: a row a worker holds at that moment may be queued once more.
create or replace function ai.repair_vectorizer
( vectorizer_id pg_catalog.int4
, out orphan_keys pg_catalog.int8
, out orphan_chunks pg_catalog.int8
, out queued_rows pg_catalog.int8
) as
$func$
declare
    _vec ai.vectorizer = ai._vectorizer_lookup(vectorizer_id);
    _orphans pg_catalog.text = ai._vectorizer_orphan_scan(_vec);
    _pk_cols pg_catalog.text = ai._vectorizer_pk_list(_vec.source_pk);
begin
    orphan_keys = 0;
    orphan_chunks = 0;
    if _orphans is not null then
        execute pg_catalog.format
        ( $sql$
        with gone as (delete %s returning %s)
        select pg_catalog.count(*), pg_catalog.count(distinct (%s)) from gone
        $sql$
        , _orphans
        , ai._vectorizer_pk_list(_vec.source_pk, 't')
        , _pk_cols
        ) into strict orphan_chunks, orphan_keys;
    end if;
    if (_vec.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'implementation')
        operator(pg_catalog.=) 'column' then
        -- the reuse hashes of deleted rows (left by a pgai worker, or from before the trigger
        -- removed them): not counted, they are no embeddings
        execute pg_catalog.format
        ( $sql$
        delete from ai._vectorizer_column_hash h
        where h.vectorizer_id operator(pg_catalog.=) %s
        and not exists
            ( select from %I.%I s
              where pg_catalog.jsonb_build_array(%s) operator(pg_catalog.=) h.pk
            )
        $sql$
        , _vec.id, _vec.source_schema, _vec.source_table
        , ai._vectorizer_pk_list(_vec.source_pk, 's')
        );
    end if;
    execute pg_catalog.format
    ( $sql$
    with queued as (insert into %I.%I (%s) select %s %s returning 1)
    select pg_catalog.count(*) from queued
    $sql$
    , _vec.queue_schema, _vec.queue_table, _pk_cols
    , ai._vectorizer_pk_list(_vec.source_pk, 's')
    , ai._vectorizer_missing_scan(_vec)
    ) into strict queued_rows;
    if queued_rows operator(pg_catalog.>) 0 then
        perform pg_catalog.pg_notify(ai._vectorizer_notify_channel(), vectorizer_id::pg_catalog.text);
    end if;
end
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

create or replace function ai.repair_vectorizer
( name pg_catalog.text
, out orphan_keys pg_catalog.int8
, out orphan_chunks pg_catalog.int8
, out queued_rows pg_catalog.int8
) as
$func$
    select * from ai.repair_vectorizer((ai._vectorizer_lookup(name => name)).id)
$func$ language sql volatile security invoker
set search_path to pg_catalog, pg_temp;
