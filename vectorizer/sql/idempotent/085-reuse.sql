-- Chunk-level reuse: the provenance of an embedding config, the reuse counters the workers
-- report, and how many stored chunks an older (or unknown) config embedded. The columns and
-- tables they read come from migration 005-chunk-reuse.

-------------------------------------------------------------------------------
-- The provenance of a vectorizer's embedding config: a hash of every field that changes the
-- vectors (implementation, model, dimensions, options), leaving out those that only say how
-- to reach the provider or how hard to push it. A stored vector is reused only when its
-- config_hash equals this. The worker reads it from here too, so both sides always agree.
create or replace function ai._vectorizer_embedding_provenance(config pg_catalog.jsonb)
returns pg_catalog.bytea as
$func$
    select pg_catalog.substring
    ( pg_catalog.sha256(pg_catalog.convert_to
      ( ( pg_catalog.jsonb_strip_nulls($1 operator(pg_catalog.->) 'embedding')
          operator(pg_catalog.-) array
          [ 'config_type', 'api_key_name', 'base_url', 'user', 'keep_alive', 'batch_size', 'device'
          ]::pg_catalog.text[]
        )::pg_catalog.text
      , 'UTF8'
      ))
    , 1
    , 16
    )
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_record_reuse
( vectorizer_id pg_catalog.int4
, chunks_embedded pg_catalog.int8
, chunks_reused_same_row pg_catalog.int8
, chunks_reused_other_row pg_catalog.int8
, rows_unchanged pg_catalog.int8
, tokens_saved pg_catalog.int8
) returns void as
$func$
    insert into ai._vectorizer_reuse_stats as s
    ( vectorizer_id, chunks_embedded, chunks_reused_same_row, chunks_reused_other_row
    , rows_unchanged, tokens_saved
    )
    values ($1, $2, $3, $4, $5, $6)
    on conflict (vectorizer_id) do update set
      chunks_embedded = s.chunks_embedded operator(pg_catalog.+) excluded.chunks_embedded
    , chunks_reused_same_row =
        s.chunks_reused_same_row operator(pg_catalog.+) excluded.chunks_reused_same_row
    , chunks_reused_other_row =
        s.chunks_reused_other_row operator(pg_catalog.+) excluded.chunks_reused_other_row
    , rows_unchanged = s.rows_unchanged operator(pg_catalog.+) excluded.rows_unchanged
    , tokens_saved = s.tokens_saved operator(pg_catalog.+) excluded.tokens_saved
    , updated_at = pg_catalog.now()
$func$ language sql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Rows of `relation` (aliased t) that satisfy `filter`: exact while the table holds up to
-- `bound` rows, above that scaled up from a block sample of about `bound` rows, so a status
-- query costs the same on a store of a billion chunks.
create or replace function ai._vectorizer_count_matching
( relation pg_catalog.regclass
, filter pg_catalog.text
, bound pg_catalog.int8 default 100000
) returns pg_catalog.int8 as
$func$
declare
    _estimate pg_catalog.float8;
    _sampled pg_catalog.int8;
    _matched pg_catalog.int8;
begin
    select c.reltuples into _estimate from pg_catalog.pg_class c where c.oid operator(pg_catalog.=) relation;
    if _estimate is null or _estimate operator(pg_catalog.<=) bound then
        execute pg_catalog.format('select pg_catalog.count(*) from %s t where %s', relation, filter)
        into strict _matched;
        return _matched;
    end if;
    execute pg_catalog.format
    ( 'select pg_catalog.count(*), pg_catalog.count(*) filter (where %s)'
      ' from %s t tablesample system (%s)'
    , filter
    , relation
    , least(100.0, bound operator(pg_catalog.*) 100.0 operator(pg_catalog./) _estimate)
    ) into strict _sampled, _matched;
    if _sampled operator(pg_catalog.=) 0 then
        return 0;
    end if;
    return pg_catalog.round(_matched operator(pg_catalog.*) _estimate operator(pg_catalog./) _sampled)::pg_catalog.int8;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Stored chunks (table destination) or embedded rows (column destination) whose vectors were
-- not made by the current embedding config: an older one, or an unknown one (embedded by pgai's
-- worker or before provenance was recorded). NULL when the caller may not read the store.
create or replace function ai._vectorizer_chunks_older_config(vectorizer_id pg_catalog.int4)
returns pg_catalog.int8 as
$func$
declare
    _vec ai.vectorizer;
    _destination pg_catalog.jsonb;
    _provenance pg_catalog.bytea;
    _relation pg_catalog.regclass;
begin
    select * into _vec from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;
    if not found then
        return null;
    end if;
    _destination = _vec.config operator(pg_catalog.->) 'destination';
    _provenance = ai._vectorizer_embedding_provenance(_vec.config);
    if (_destination operator(pg_catalog.->>) 'implementation') operator(pg_catalog.=) 'table' then
        _relation = pg_catalog.to_regclass(pg_catalog.format
        ( '%I.%I'
        , _destination operator(pg_catalog.->>) 'target_schema'
        , _destination operator(pg_catalog.->>) 'target_table'
        ));
        if _relation is null
        or not pg_catalog.has_table_privilege(pg_catalog.current_user(), _relation, 'select')
        or not exists
            ( select 1 from pg_catalog.pg_attribute a
              where a.attrelid operator(pg_catalog.=) _relation
              and a.attname operator(pg_catalog.=) 'config_hash' and not a.attisdropped
            ) then
            return null;
        end if;
        return ai._vectorizer_count_matching
        ( _relation
        , pg_catalog.format('t.config_hash is distinct from %L::pg_catalog.bytea', _provenance)
        );
    end if;
    _relation = pg_catalog.to_regclass(pg_catalog.format('%I.%I', _vec.source_schema, _vec.source_table));
    if _relation is null
    or not pg_catalog.has_table_privilege(pg_catalog.current_user(), _relation, 'select')
    or not pg_catalog.has_table_privilege(pg_catalog.current_user(), 'ai._vectorizer_column_hash', 'select') then
        return null;
    end if;
    return ai._vectorizer_count_matching
    ( _relation
    , pg_catalog.format
      ( $sql$t.%I is not null and not exists
        ( select 1 from ai._vectorizer_column_hash h
          where h.vectorizer_id operator(pg_catalog.=) %s
          and h.pk operator(pg_catalog.=) pg_catalog.jsonb_build_array(%s)
          and h.config_hash operator(pg_catalog.=) %L::pg_catalog.bytea
        )$sql$
      , _destination operator(pg_catalog.->>) 'embedding_column'
      , vectorizer_id
      , ai._vectorizer_pk_list(_vec.source_pk, 't')
      , _provenance
      )
    );
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;
