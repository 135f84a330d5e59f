-- Chunk-level reuse ("never pay twice"): each stored chunk records the hash of the formatted
-- text that was embedded and the provenance of the embedding config that embedded it.
-- Conditional throughout, so it also adopts stores that pgai created: existing chunks get NULL
-- in both columns, and a NULL never matches, so they are re-embedded (and hashed) the first
-- time their row is processed again.

-------------------------------------------------------------------------------
-- Appends chunk_hash and config_hash to a table-destination store, plus the partial index that
-- cross-row reuse looks hashes up by. Also called by ai._vectorizer_create_target_table.
create or replace function ai._vectorizer_add_reuse_columns
( target_schema pg_catalog.name
, target_table pg_catalog.name
) returns void as
$func$
declare
    _relation pg_catalog.regclass;
    _hash_attnum pg_catalog.int2;
begin
    execute pg_catalog.format
    ( 'alter table %I.%I add column if not exists chunk_hash pg_catalog.bytea'
      ', add column if not exists config_hash pg_catalog.bytea'
    , target_schema, target_table
    );
    _relation = pg_catalog.format('%I.%I', target_schema, target_table)::pg_catalog.regclass;
    select a.attnum into strict _hash_attnum
    from pg_catalog.pg_attribute a
    where a.attrelid operator(pg_catalog.=) _relation
    and a.attname operator(pg_catalog.=) 'chunk_hash';
    if not exists
    ( select 1 from pg_catalog.pg_index i
      where i.indrelid operator(pg_catalog.=) _relation
      and i.indkey[0] operator(pg_catalog.=) _hash_attnum
    ) then
        -- partial: chunks without a hash (pgai's, or from before this migration) stay out
        execute pg_catalog.format
        ( 'create index on %I.%I (chunk_hash) where chunk_hash is not null'
        , target_schema, target_table
        );
    end if;
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Column destinations: the hash and provenance of the text behind a source row's embedding,
-- kept here so the user's table gets no extra column. `pk` is jsonb_build_array(<key columns>).
create table if not exists ai._vectorizer_column_hash
( vectorizer_id pg_catalog.int4 not null references ai.vectorizer (id) on delete cascade
, pk pg_catalog.jsonb not null
, chunk_hash pg_catalog.bytea not null
, config_hash pg_catalog.bytea
, primary key (vectorizer_id, pk)
);

-------------------------------------------------------------------------------
-- What reuse saved, per vectorizer, summed over every worker (written after each batch).
create table if not exists ai._vectorizer_reuse_stats
( vectorizer_id pg_catalog.int4 not null primary key
    references ai.vectorizer (id) on delete cascade
, chunks_embedded pg_catalog.int8 not null default 0
, chunks_reused_same_row pg_catalog.int8 not null default 0
, chunks_reused_other_row pg_catalog.int8 not null default 0
, rows_unchanged pg_catalog.int8 not null default 0
, tokens_saved pg_catalog.int8 not null default 0
, updated_at pg_catalog.timestamptz not null default pg_catalog.now()
);

-------------------------------------------------------------------------------
-- existing table-destination stores
do $block$
declare
    _dest pg_catalog.jsonb;
begin
    for _dest in
        select v.config operator(pg_catalog.->) 'destination'
        from ai.vectorizer v
        where v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'implementation'
            operator(pg_catalog.=) 'table'
        order by v.id
    loop
        if pg_catalog.to_regclass(pg_catalog.format
            ( '%I.%I'
            , _dest operator(pg_catalog.->>) 'target_schema'
            , _dest operator(pg_catalog.->>) 'target_table'
            )) is not null then
            perform ai._vectorizer_add_reuse_columns
            (_dest operator(pg_catalog.->>) 'target_schema', _dest operator(pg_catalog.->>) 'target_table');
        end if;
    end loop;
end;
$block$;
