-- Views made before stores had `chunk_metadata` (ours before issue 17, or pgai's) get it as
-- their last column. `create or replace view` may only append columns, so the view's current
-- column list is rebuilt as it was made (target columns and key columns from `t`, the other
-- source columns from `s`) with `t.chunk_metadata` after it; grants and dependent objects stay.

create or replace function ai._vectorizer_add_chunk_metadata_to_view(vectorizer_id pg_catalog.int4)
returns pg_catalog.bool as
$func$
declare
    _vec record;
    _destination pg_catalog.jsonb;
    _view pg_catalog.oid;
    _store pg_catalog.oid;
    _columns pg_catalog.text;
begin
    select v.source_schema, v.source_table, v.source_pk, v.config into strict _vec
    from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;
    _destination = _vec.config operator(pg_catalog.->) 'destination';
    if (_destination operator(pg_catalog.->>) 'implementation') is distinct from 'table' then
        return false;
    end if;
    _view = pg_catalog.to_regclass(pg_catalog.format('%I.%I'
        , _destination operator(pg_catalog.->>) 'view_schema'
        , _destination operator(pg_catalog.->>) 'view_name'));
    _store = pg_catalog.to_regclass(pg_catalog.format('%I.%I'
        , _destination operator(pg_catalog.->>) 'target_schema'
        , _destination operator(pg_catalog.->>) 'target_table'));
    if _view is null or _store is null
    or exists (select 1 from pg_catalog.pg_attribute a
               where a.attrelid operator(pg_catalog.=) _view
               and a.attname operator(pg_catalog.=) 'chunk_metadata' and not a.attisdropped)
    or not exists (select 1 from pg_catalog.pg_attribute a
               where a.attrelid operator(pg_catalog.=) _store
               and a.attname operator(pg_catalog.=) 'chunk_metadata' and not a.attisdropped) then
        return false;
    end if;

    select pg_catalog.string_agg
    ( pg_catalog.format
      ( '%s.%I'
      , case when pk.attname is not null
             or a.attname operator(pg_catalog.=) any
                (array['embedding_uuid', 'chunk_seq', 'chunk', 'embedding']::pg_catalog.name[])
        then 't' else 's' end
      , a.attname
      )
    , E'\n    , ' order by a.attnum
    )
    into strict _columns
    from pg_catalog.pg_attribute a
    left outer join pg_catalog.jsonb_to_recordset(_vec.source_pk) pk(attname pg_catalog.name)
        on (a.attname operator(pg_catalog.=) pk.attname)
    where a.attrelid operator(pg_catalog.=) _view
    and a.attnum operator(pg_catalog.>) 0
    and not a.attisdropped;

    execute pg_catalog.format
    ( $sql$
    create or replace view %I.%I as
    select
      %s
    , t.chunk_metadata
    from %I.%I t
    left outer join %I.%I s
    on (%s)
    $sql$
    , _destination operator(pg_catalog.->>) 'view_schema'
    , _destination operator(pg_catalog.->>) 'view_name'
    , _columns
    , _destination operator(pg_catalog.->>) 'target_schema'
    , _destination operator(pg_catalog.->>) 'target_table'
    , _vec.source_schema, _vec.source_table
    , ai._vectorizer_pk_join(_vec.source_pk, 't', 's')
    );
    return true;
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

do $block$
declare
    _id pg_catalog.int4;
begin
    for _id in select v.id from ai.vectorizer v order by v.id loop
        begin
            perform ai._vectorizer_add_chunk_metadata_to_view(_id);
        exception when others then
            -- a view that no longer matches its source (a renamed column) keeps its columns;
            -- chunk_metadata stays readable in the store
            raise warning 'vectorizer %: its view was left without chunk_metadata: %', _id, sqlerrm;
        end;
    end loop;
end
$block$;
