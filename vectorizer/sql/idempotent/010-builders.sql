-- Configuration builders of the `ai` schema (pgai 0.12 compatible), the grant_to helpers,
-- the GUC-driven default resolvers and destination evaluation.
--
-- Every builder returns a jsonb object whose `implementation` and `config_type` keys name the
-- stage; `json_strip_nulls` drops the keys of arguments left NULL where pgai does the same.
-- Applied on every install: everything here is `create or replace`.

-- pgai 0.12 declared embedding_voyageai with four arguments; ours takes seven. Without this
-- drop a database that had pgai installed would keep both and two-argument calls would be
-- ambiguous. (Left alone if an extension owns it: dropping would fail.)
do $block$
declare
    _old pg_catalog.regprocedure = pg_catalog.to_regprocedure
        ('ai.embedding_voyageai(text, integer, text, text)');
begin
    if _old is not null and not exists
    ( select 1
      from pg_catalog.pg_depend d
      where d.classid operator(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
      and d.objid operator(pg_catalog.=) _old::pg_catalog.oid
      and d.deptype operator(pg_catalog.=) 'e'
    ) then
        drop function ai.embedding_voyageai(pg_catalog.text, pg_catalog.int4, pg_catalog.text, pg_catalog.text);
    end if;
end
$block$;

-------------------------------------------------------------------------------
-- loading

create or replace function ai.loading_column
( column_name pg_catalog.name
, retries pg_catalog.int4 default 6
) returns pg_catalog.jsonb
as $func$
    -- not strip-nulls: `retries` is always present, even when given as null
    select pg_catalog.json_build_object
    ( 'implementation', 'column'
    , 'config_type', 'loading'
    , 'column_name', column_name
    , 'retries', retries
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.loading_uri
( column_name pg_catalog.name
, retries pg_catalog.int4 default 6
, aws_role_arn pg_catalog.text default null
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'uri'
    , 'config_type', 'loading'
    , 'column_name', column_name
    , 'retries', retries
    , 'aws_role_arn', aws_role_arn
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- parsing

create or replace function ai.parsing_auto() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'auto'
    , 'config_type', 'parsing'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.parsing_none() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'none'
    , 'config_type', 'parsing'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.parsing_pymupdf() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'pymupdf'
    , 'config_type', 'parsing'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.parsing_docling() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'docling'
    , 'config_type', 'parsing'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- chunking (pgai builds these "absent on null"; json_strip_nulls does the same on PG 15)

create or replace function ai.chunking_none() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'none'
    , 'config_type', 'chunking'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.chunking_character_text_splitter
( chunk_size pg_catalog.int4 default 800
, chunk_overlap pg_catalog.int4 default 400
, separator pg_catalog.text default E'\n\n'
, is_separator_regex pg_catalog.bool default false
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'character_text_splitter'
    , 'config_type', 'chunking'
    , 'chunk_size', chunk_size
    , 'chunk_overlap', chunk_overlap
    , 'separator', separator
    , 'is_separator_regex', is_separator_regex
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.chunking_recursive_character_text_splitter
( chunk_size pg_catalog.int4 default 800
, chunk_overlap pg_catalog.int4 default 400
, separators pg_catalog.text[] default array[E'\n\n', E'\n', '.', '?', '!', ' ', '']
, is_separator_regex pg_catalog.bool default false
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'recursive_character_text_splitter'
    , 'config_type', 'chunking'
    , 'chunk_size', chunk_size
    , 'chunk_overlap', chunk_overlap
    , 'separators', separators
    , 'is_separator_regex', is_separator_regex
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- ours: the recursive splitter measured in the embedding model's tokens (tokenizer null: the
-- model's own; else 'cl100k_base', a tokenizer.json path or a HuggingFace repository id)
create or replace function ai.chunking_recursive_token_splitter
( chunk_tokens pg_catalog.int4 default 512
, overlap_tokens pg_catalog.int4 default 64
, separators pg_catalog.text[] default array[E'\n\n', E'\n', '.', '?', '!', ' ', '']
, tokenizer pg_catalog.text default null
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'recursive_token_splitter'
    , 'config_type', 'chunking'
    , 'chunk_tokens', chunk_tokens
    , 'overlap_tokens', overlap_tokens
    , 'separators', separators
    , 'tokenizer', tokenizer
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- ours: Markdown structure first (headings up to heading_levels, paragraphs, sentences), then
-- the token budget; every chunk knows its heading path
create or replace function ai.chunking_markdown
( chunk_tokens pg_catalog.int4 default 512
, overlap_tokens pg_catalog.int4 default 64
, heading_levels pg_catalog.int4 default 3
, tokenizer pg_catalog.text default null
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'markdown'
    , 'config_type', 'chunking'
    , 'chunk_tokens', chunk_tokens
    , 'overlap_tokens', overlap_tokens
    , 'heading_levels', heading_levels
    , 'tokenizer', tokenizer
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- formatting

create or replace function ai.formatting_python_template
( template pg_catalog.text default '$chunk'
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'python_template'
    , 'config_type', 'formatting'
    , 'template', template
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- ours (pgai's worker knows chunk_value but pgai had no builder): embed each chunk as is
create or replace function ai.formatting_chunk_value() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'chunk_value'
    , 'config_type', 'formatting'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- embedding

create or replace function ai.embedding_openai
( model pg_catalog.text
, dimensions pg_catalog.int4
, chat_user pg_catalog.text default null
, api_key_name pg_catalog.text default 'OPENAI_API_KEY'
, base_url pg_catalog.text default null
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'openai'
    , 'config_type', 'embedding'
    , 'model', model
    , 'dimensions', dimensions
    , 'user', chat_user
    , 'api_key_name', api_key_name
    , 'base_url', base_url
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.embedding_ollama
( model pg_catalog.text
, dimensions pg_catalog.int4
, base_url pg_catalog.text default null
, options pg_catalog.jsonb default null
, keep_alive pg_catalog.text default null
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'ollama'
    , 'config_type', 'embedding'
    , 'model', model
    , 'dimensions', dimensions
    , 'base_url', base_url
    , 'options', options
    , 'keep_alive', keep_alive
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- pgai's four arguments plus output_dimension, output_dtype and base_url (which its worker
-- already understood). The checks live in ai._validate_embedding_voyageai (020-validators)
-- so that a hand-written config gets the same messages from ai._validate_embedding.
create or replace function ai.embedding_voyageai
( model pg_catalog.text
, dimensions pg_catalog.int4
, input_type pg_catalog.text default 'document'
, api_key_name pg_catalog.text default 'VOYAGE_API_KEY'
, output_dimension pg_catalog.int4 default null
, output_dtype pg_catalog.text default null
, base_url pg_catalog.text default null
) returns pg_catalog.jsonb
as $func$
declare
    _config pg_catalog.jsonb;
begin
    _config = pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'voyageai'
    , 'config_type', 'embedding'
    , 'model', model
    , 'dimensions', dimensions
    , 'input_type', input_type
    , 'api_key_name', api_key_name
    , 'output_dimension', output_dimension
    , 'output_dtype', output_dtype
    , 'base_url', base_url
    ))::pg_catalog.jsonb;
    perform ai._validate_embedding_voyageai(_config);
    return _config;
end
$func$ language plpgsql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.embedding_litellm
( model pg_catalog.text
, dimensions pg_catalog.int4
, api_key_name pg_catalog.text default null
, extra_options pg_catalog.jsonb default null
) returns pg_catalog.jsonb
as $func$
begin
    return pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'litellm'
    , 'config_type', 'embedding'
    , 'model', model
    , 'dimensions', dimensions
    , 'api_key_name', api_key_name
    , 'extra_options', extra_options
    ))::pg_catalog.jsonb;
end
$func$ language plpgsql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- ours: a local, in-process model (no network, no API key). `normalize` is an SQL keyword:
-- pass it positionally or as "normalize" => false.
create or replace function ai.embedding_sentence_transformers
( model pg_catalog.text
, dimensions pg_catalog.int4
, device pg_catalog.text default null
, batch_size pg_catalog.int4 default 32
, "normalize" pg_catalog.bool default true
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'sentence_transformers'
    , 'config_type', 'embedding'
    , 'model', model
    , 'dimensions', dimensions
    , 'device', device
    , 'batch_size', batch_size
    , 'normalize', "normalize"
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- indexing

create or replace function ai.indexing_default() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'default'
    , 'config_type', 'indexing'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.indexing_none() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'none'
    , 'config_type', 'indexing'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- storage_layout is checked by ai._validate_indexing_diskann at create time, not here
create or replace function ai.indexing_diskann
( min_rows pg_catalog.int4 default 100000
, storage_layout pg_catalog.text default null
, num_neighbors pg_catalog.int4 default null
, search_list_size pg_catalog.int4 default null
, max_alpha pg_catalog.float8 default null
, num_dimensions pg_catalog.int4 default null
, num_bits_per_dimension pg_catalog.int4 default null
, create_when_queue_empty pg_catalog.bool default true
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'diskann'
    , 'config_type', 'indexing'
    , 'min_rows', min_rows
    , 'storage_layout', storage_layout
    , 'num_neighbors', num_neighbors
    , 'search_list_size', search_list_size
    , 'max_alpha', max_alpha
    , 'num_dimensions', num_dimensions
    , 'num_bits_per_dimension', num_bits_per_dimension
    , 'create_when_queue_empty', create_when_queue_empty
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- opclass is checked by ai._validate_indexing_hnsw at create time, not here
create or replace function ai.indexing_hnsw
( min_rows pg_catalog.int4 default 100000
, opclass pg_catalog.text default 'vector_cosine_ops'
, m pg_catalog.int4 default null
, ef_construction pg_catalog.int4 default null
, create_when_queue_empty pg_catalog.bool default true
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'hnsw'
    , 'config_type', 'indexing'
    , 'min_rows', min_rows
    , 'opclass', opclass
    , 'm', m
    , 'ef_construction', ef_construction
    , 'create_when_queue_empty', create_when_queue_empty
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- scheduling

create or replace function ai.scheduling_default() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'default'
    , 'config_type', 'scheduling'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.scheduling_none() returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_build_object
    ( 'implementation', 'none'
    , 'config_type', 'scheduling'
    )::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- the interval and the timestamp end up as JSON strings, e.g. "schedule_interval":"00:05:00"
create or replace function ai.scheduling_timescaledb
( schedule_interval pg_catalog.interval default interval '5m'
, initial_start pg_catalog.timestamptz default null
, fixed_schedule pg_catalog.bool default null
, timezone pg_catalog.text default null
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'timescaledb'
    , 'config_type', 'scheduling'
    , 'schedule_interval', schedule_interval
    , 'initial_start', initial_start
    , 'fixed_schedule', fixed_schedule
    , 'timezone', timezone
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- processing

create or replace function ai.processing_default
( batch_size pg_catalog.int4 default null
, concurrency pg_catalog.int4 default null
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'default'
    , 'config_type', 'processing'
    , 'batch_size', batch_size
    , 'concurrency', concurrency
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- destination

-- pgai's destination_table had five arguments; ours adds vector_type. create_vectorizer's
-- default (`ai.destination_table()`) depends on the old one, so it is renamed out of the way
-- here and dropped once create_vectorizer has been recreated against the new one (050).
do $block$
begin
    if pg_catalog.to_regprocedure('ai.destination_table(name, name, name, name, name)') is not null
    and pg_catalog.to_regprocedure('ai._destination_table_5(name, name, name, name, name)') is null
    then
        alter function ai.destination_table(pg_catalog.name, pg_catalog.name, pg_catalog.name, pg_catalog.name, pg_catalog.name)
        rename to _destination_table_5;
    end if;
end
$block$;

create or replace function ai.destination_table
( destination pg_catalog.name default null
, target_schema pg_catalog.name default null
, target_table pg_catalog.name default null
, view_schema pg_catalog.name default null
, view_name pg_catalog.name default null
, vector_type pg_catalog.text default null
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'table'
    , 'config_type', 'destination'
    , 'destination', destination
    , 'target_schema', target_schema
    , 'target_table', target_table
    , 'view_schema', view_schema
    , 'view_name', view_name
    , 'vector_type', vector_type
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- pgai's one-argument form is replaced by the one with `aggregate` (a default keeps every pgai
-- call working; both side by side would make `destination_column('x')` ambiguous)
drop function if exists ai.destination_column(pg_catalog.name);

-- aggregate 'mean': one vector per row from all its chunks (token-weighted, L2-normalised)
create or replace function ai.destination_column
( embedding_column pg_catalog.name
, aggregate pg_catalog.text default null
) returns pg_catalog.jsonb
as $func$
    select pg_catalog.json_strip_nulls(pg_catalog.json_build_object
    ( 'implementation', 'column'
    , 'config_type', 'destination'
    , 'embedding_column', embedding_column
    , 'aggregate', aggregate
    ))::pg_catalog.jsonb
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- Fills in the concrete object names of a destination for the given source table.
-- Unlike pgai 0.12, an explicit view_schema is honoured.
create or replace function ai._evaluate_destination
( destination pg_catalog.jsonb
, source_schema pg_catalog.name
, source_table pg_catalog.name
) returns pg_catalog.jsonb
as $func$
declare
    _implementation pg_catalog.text = destination operator(pg_catalog.->>) 'implementation';
    _base pg_catalog.text = destination operator(pg_catalog.->>) 'destination';
begin
    if _implementation operator(pg_catalog.=) 'table' then
        return pg_catalog.json_build_object
        ( 'implementation', 'table'
        , 'config_type', 'destination'
        , 'target_schema', coalesce
            ( destination operator(pg_catalog.->>) 'target_schema'
            , source_schema
            )::pg_catalog.name
        , 'target_table', coalesce
            ( destination operator(pg_catalog.->>) 'target_table'
            , _base operator(pg_catalog.||) '_store'
            , source_table operator(pg_catalog.||) '_embedding_store'
            )::pg_catalog.name
        , 'view_schema', coalesce
            ( destination operator(pg_catalog.->>) 'view_schema'
            , source_schema
            )::pg_catalog.name
        , 'view_name', coalesce
            ( destination operator(pg_catalog.->>) 'view_name'
            , _base
            , source_table operator(pg_catalog.||) '_embedding'
            )::pg_catalog.name
        )::pg_catalog.jsonb operator(pg_catalog.||) pg_catalog.jsonb_strip_nulls
        (pg_catalog.jsonb_build_object('vector_type', destination operator(pg_catalog.->>) 'vector_type'));
    elsif _implementation operator(pg_catalog.=) 'column' then
        return pg_catalog.json_strip_nulls(pg_catalog.json_build_object
        ( 'implementation', 'column'
        , 'config_type', 'destination'
        , 'embedding_column', destination operator(pg_catalog.->>) 'embedding_column'
        , 'aggregate', destination operator(pg_catalog.->>) 'aggregate'
        ))::pg_catalog.jsonb;
    end if;
    raise exception 'invalid implementation for destination config';
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- grant_to

-- The roles given, then those of the comma-separated GUC ai.grant_to_default (trimmed),
-- without duplicates or empty entries, in first-seen order; `{}` when there are none.
create or replace function ai.grant_to
( variadic grantees pg_catalog.name[]
) returns pg_catalog.name[]
as $func$
    select coalesce
    ( pg_catalog.array_agg(r.grantee order by r.pos)
    , array[]::pg_catalog.name[]
    )
    from
    (
        select u.grantee, pg_catalog.min(u.pos) as pos
        from
        (
            select g.grantee::pg_catalog.name as grantee, g.pos
            from pg_catalog.unnest(grantees) with ordinality as g(grantee, pos)
            union all
            select pg_catalog.btrim(d.grantee)::pg_catalog.name, d.pos operator(pg_catalog.+) 1000000000
            from pg_catalog.string_to_table
                ( pg_catalog.current_setting('ai.grant_to_default', true)
                , ','
                ) with ordinality as d(grantee, pos)
        ) u
        where u.grantee is not null
        and u.grantee operator(pg_catalog.!=) ''::pg_catalog.name
        group by u.grantee
    ) r
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai.grant_to() returns pg_catalog.name[]
as $func$
    select ai.grant_to(variadic array[]::pg_catalog.name[])
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- defaults resolved from GUCs at create time

create or replace function ai._resolve_indexing_default() returns pg_catalog.jsonb
as $func$
    select case pg_catalog.current_setting('ai.indexing_default', true)
        when 'indexing_diskann' then ai.indexing_diskann()
        when 'indexing_hnsw' then ai.indexing_hnsw()
        when 'indexing_none' then ai.indexing_none()
        -- unlike pgai (none): our worker builds the index, so unset means an HNSW index
        -- once the store holds min_rows rows
        else ai.indexing_hnsw()
    end
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai._resolve_scheduling_default() returns pg_catalog.jsonb
as $func$
    select case pg_catalog.current_setting('ai.scheduling_default', true)
        when 'scheduling_timescaledb' then ai.scheduling_timescaledb()
        else ai.scheduling_none()
    end
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp
;
