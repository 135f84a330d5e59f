-- Issue 17: every existing store gets the `chunk_metadata jsonb` column (appended, nullable, so
-- pgai's worker and rows written before it keep working). Conditional throughout: it also runs
-- on catalogs pgai created, and on stores that already have the column. The views are brought
-- up to date by sql/idempotent/035-chunk-metadata-views.sql.
do $block$
declare
    _store record;
begin
    for _store in
        select
          v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'target_schema' as target_schema
        , v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'target_table' as target_table
        from ai.vectorizer v
        where v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'implementation'
            operator(pg_catalog.=) 'table'
    loop
        if pg_catalog.to_regclass(pg_catalog.format('%I.%I', _store.target_schema, _store.target_table)) is not null then
            execute pg_catalog.format
            ( 'alter table %I.%I add column if not exists chunk_metadata pg_catalog.jsonb'
            , _store.target_schema, _store.target_table
            );
        end if;
    end loop;
end
$block$;
