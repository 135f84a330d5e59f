-- Validators of the configuration passed to ai.create_vectorizer (pgai 0.12 compatible
-- messages). Each one checks, in this order: the config is a jsonb object, its config_type,
-- its implementation, then what that implementation needs.
-- Applied on every install: everything here is `create or replace`.

-------------------------------------------------------------------------------
-- helper: the type name of a source column (a domain counts as its base type), or null when
-- the table or the column does not exist

create or replace function ai._vectorizer_source_column_type
( source_schema pg_catalog.name
, source_table pg_catalog.name
, column_name pg_catalog.name
) returns pg_catalog.name
as $func$
    with recursive t(oid, typname, typtype, typbasetype, depth) as
    (
        select y.oid, y.typname, y.typtype, y.typbasetype, 0
        from pg_catalog.pg_class k
        inner join pg_catalog.pg_namespace n
            on (k.relnamespace operator(pg_catalog.=) n.oid)
        inner join pg_catalog.pg_attribute a
            on (k.oid operator(pg_catalog.=) a.attrelid)
        inner join pg_catalog.pg_type y
            on (a.atttypid operator(pg_catalog.=) y.oid)
        where n.nspname operator(pg_catalog.=) source_schema
        and k.relname operator(pg_catalog.=) source_table
        and a.attname operator(pg_catalog.=) column_name
        and a.attnum operator(pg_catalog.>) 0
        and not a.attisdropped
        union all
        select b.oid, b.typname, b.typtype, b.typbasetype, t.depth operator(pg_catalog.+) 1
        from t
        inner join pg_catalog.pg_type b on (b.oid operator(pg_catalog.=) t.typbasetype)
        where t.typtype operator(pg_catalog.=) 'd'
    )
    select t.typname
    from t
    order by t.depth desc
    limit 1
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- loading

create or replace function ai._validate_loading
( config pg_catalog.jsonb
, source_schema pg_catalog.name
, source_table pg_catalog.name
) returns void
as $func$
declare
    _implementation pg_catalog.text;
    _column_name pg_catalog.name;
    _retries pg_catalog.jsonb;
    _aws_role_arn pg_catalog.text;
    _column_type pg_catalog.name;
begin
    if config is null or pg_catalog.jsonb_typeof(config) operator(pg_catalog.!=) 'object' then
        raise exception 'loading config is not a jsonb object';
    end if;

    if (config operator(pg_catalog.->>) 'config_type') is distinct from 'loading' then
        raise exception 'invalid config_type for loading config';
    end if;

    _implementation = config operator(pg_catalog.->>) 'implementation';
    if _implementation is null or _implementation not in ('column', 'uri') then
        raise exception 'invalid loading config implementation';
    end if;

    _column_name = config operator(pg_catalog.->>) 'column_name';
    if _column_name is null then
        raise exception 'invalid loading config, missing column_name';
    end if;

    -- a whole number >= 0, given as a JSON number or as a string of digits
    _retries = config operator(pg_catalog.->) 'retries';
    if _retries is null
    or pg_catalog.jsonb_typeof(_retries) not in ('number', 'string')
    or (_retries operator(pg_catalog.#>>) '{}') !~ '^\s*[0-9]+\s*$'
    then
        raise exception 'invalid loading config, retries must be a non-negative integer';
    end if;

    _aws_role_arn = config operator(pg_catalog.->>) 'aws_role_arn';
    if _aws_role_arn is not null and _aws_role_arn not like 'arn:aws:iam::%:role/%' then
        raise exception 'invalid loading config, aws_role_arn must match arn:aws:iam::*:role/*';
    end if;

    _column_type = ai._vectorizer_source_column_type(source_schema, source_table, _column_name);
    if _column_type is null then
        raise exception 'column_name in config does not exist in the table: %', _column_name;
    end if;

    if _column_type not in ('text', 'varchar', 'char', 'bpchar', 'bytea') then
        raise exception 'column_name % in config is of invalid type %. Supported types are: text, varchar, char, bpchar, bytea'
        , _column_name, _column_type;
    end if;

    if _implementation operator(pg_catalog.=) 'uri' and _column_type operator(pg_catalog.=) 'bytea' then
        -- pgai's exact text (it wrongly lists bytea among the accepted types)
        raise exception 'the type of the column `%` in config is not compatible with `uri` loading implementation (type should be either text, varchar, char, bpchar, or bytea)'
        , _column_name;
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- parsing

create or replace function ai._validate_parsing
( parsing pg_catalog.jsonb
, loading pg_catalog.jsonb
, source_schema pg_catalog.name
, source_table pg_catalog.name
) returns void
as $func$
declare
    _implementation pg_catalog.text;
    _loading_implementation pg_catalog.text;
    _column_type pg_catalog.name;
begin
    if parsing is null or pg_catalog.jsonb_typeof(parsing) operator(pg_catalog.!=) 'object' then
        raise exception 'parsing config is not a jsonb object';
    end if;

    if (parsing operator(pg_catalog.->>) 'config_type') is distinct from 'parsing' then
        raise exception 'invalid config_type for parsing config';
    end if;

    _implementation = parsing operator(pg_catalog.->>) 'implementation';
    if _implementation is null or _implementation not in ('auto', 'none', 'pymupdf', 'docling') then
        raise exception 'invalid parsing config implementation';
    end if;

    -- the loading config itself is checked by ai._validate_loading
    _loading_implementation = loading operator(pg_catalog.->>) 'implementation';
    _column_type = ai._vectorizer_source_column_type
    ( source_schema
    , source_table
    , (loading operator(pg_catalog.->>) 'column_name')::pg_catalog.name
    );

    if _implementation operator(pg_catalog.=) 'none' and _column_type operator(pg_catalog.=) 'bytea' then
        raise exception 'cannot use parsing_none with bytea columns';
    end if;

    if _loading_implementation operator(pg_catalog.=) 'column'
    and _implementation in ('pymupdf', 'docling')
    and _column_type operator(pg_catalog.!=) 'bytea' then
        raise exception 'parsing_% must be used with a bytea column', _implementation;
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- chunking

-- a chunking option that must be a whole number in [low, high] (high null: unbounded), given
-- as a JSON number; null if absent
create or replace function ai._chunking_config_int
( config pg_catalog.jsonb
, key pg_catalog.text
, low pg_catalog.int8
, high pg_catalog.int8 default null
) returns pg_catalog.int8
as $func$
declare
    _val pg_catalog.jsonb = config operator(pg_catalog.->) key;
begin
    if _val is null or pg_catalog.jsonb_typeof(_val) operator(pg_catalog.=) 'null' then
        return null;
    end if;
    if pg_catalog.jsonb_typeof(_val) operator(pg_catalog.!=) 'number'
    or _val::pg_catalog.numeric operator(pg_catalog.!=) pg_catalog.trunc(_val::pg_catalog.numeric)
    or _val::pg_catalog.numeric operator(pg_catalog.<) low
    or _val::pg_catalog.numeric operator(pg_catalog.>) coalesce(high::pg_catalog.numeric, _val::pg_catalog.numeric) then
        if high is null then
            raise exception 'invalid chunking config, % must be an integer >= %, got %', key, low, _val;
        end if;
        raise exception 'invalid chunking config, % must be an integer from % to %, got %', key, low, high, _val;
    end if;
    return _val::pg_catalog.int8;
end
$func$ language plpgsql immutable security invoker
set search_path to pg_catalog, pg_temp
;

-- chunking_recursive_token_splitter and chunking_markdown: sizes in tokens
create or replace function ai._validate_chunking_token_budget
( config pg_catalog.jsonb
) returns void
as $func$
declare
    _chunk_tokens pg_catalog.int8 = coalesce(ai._chunking_config_int(config, 'chunk_tokens', 1), 512);
    _overlap_tokens pg_catalog.int8 = coalesce(ai._chunking_config_int(config, 'overlap_tokens', 0), 64);
    _separators pg_catalog.jsonb = config operator(pg_catalog.->) 'separators';
    _tokenizer pg_catalog.jsonb = config operator(pg_catalog.->) 'tokenizer';
begin
    if _overlap_tokens operator(pg_catalog.>=) _chunk_tokens then
        raise exception 'invalid chunking config, overlap_tokens (%) must be smaller than chunk_tokens (%)'
        , _overlap_tokens, _chunk_tokens;
    end if;

    perform ai._chunking_config_int(config, 'heading_levels', 1, 6);

    if _separators is not null and pg_catalog.jsonb_typeof(_separators) operator(pg_catalog.!=) 'null'
    and ( pg_catalog.jsonb_typeof(_separators) operator(pg_catalog.!=) 'array'
       or pg_catalog.jsonb_array_length(_separators) operator(pg_catalog.=) 0
       or exists
          ( select 1 from pg_catalog.jsonb_array_elements(_separators) e
            where pg_catalog.jsonb_typeof(e) operator(pg_catalog.!=) 'string'
          )
        ) then
        raise exception 'invalid chunking config, separators must be a non-empty array of text';
    end if;

    if _tokenizer is not null
    and pg_catalog.jsonb_typeof(_tokenizer) not in ('null', 'string') then
        raise exception 'invalid chunking config, tokenizer must be text: an encoding (cl100k_base), a tokenizer.json path or a HuggingFace repository id';
    end if;
end
$func$ language plpgsql immutable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai._validate_chunking
( config pg_catalog.jsonb
) returns void
as $func$
declare
    _implementation pg_catalog.text;
begin
    if config is null or pg_catalog.jsonb_typeof(config) operator(pg_catalog.!=) 'object' then
        raise exception 'chunking config is not a jsonb object';
    end if;

    if (config operator(pg_catalog.->>) 'config_type') is distinct from 'chunking' then
        raise exception 'invalid config_type for chunking config';
    end if;

    _implementation = config operator(pg_catalog.->>) 'implementation';
    if _implementation is null
    or _implementation not in
        ( 'none', 'character_text_splitter', 'recursive_character_text_splitter'
        , 'recursive_token_splitter', 'markdown'
        ) then
        raise exception 'invalid chunking config implementation';
    end if;

    if _implementation in ('recursive_token_splitter', 'markdown') then
        perform ai._validate_chunking_token_budget(config);
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- formatting

create or replace function ai._validate_formatting_python_template
( config pg_catalog.jsonb
, source_schema pg_catalog.name
, source_table pg_catalog.name
) returns void
as $func$
declare
    _template pg_catalog.text = config operator(pg_catalog.->>) 'template';
begin
    -- A real Python string.Template placeholder: `$chunk` not followed by an identifier
    -- character, or `${chunk}`, and not escaped as `$$chunk`.
    if _template is null
    or _template !~ '(^|[^$])(\$\$)*\$(chunk(?![A-Za-z0-9_])|\{chunk\})' then
        raise exception 'template must contain $chunk placeholder';
    end if;

    if ai._vectorizer_source_column_type(source_schema, source_table, 'chunk') is not null then
        raise exception 'formatting_python_template may not be used when source table has a column named "chunk"';
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai._validate_formatting
( config pg_catalog.jsonb
, source_schema pg_catalog.name
, source_table pg_catalog.name
) returns void
as $func$
begin
    if config is null or pg_catalog.jsonb_typeof(config) operator(pg_catalog.!=) 'object' then
        raise exception 'formatting config is not a jsonb object';
    end if;

    if (config operator(pg_catalog.->>) 'config_type') is distinct from 'formatting' then
        raise exception 'invalid config_type for formatting config';
    end if;

    case config operator(pg_catalog.->>) 'implementation'
        when 'python_template' then
            perform ai._validate_formatting_python_template(config, source_schema, source_table);
        when 'chunk_value' then
            -- the chunk is embedded as is: nothing to check
        else
            raise exception 'unrecognized formatting implementation';
    end case;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- embedding

-- The voyageai options that pgai's SQL lacked. Vectors are stored in a vector(dimensions)
-- column, so only float-like dtypes fit and output_dimension must agree with dimensions.
create or replace function ai._validate_embedding_voyageai
( config pg_catalog.jsonb
) returns void
as $func$
declare
    _input_type pg_catalog.text = config operator(pg_catalog.->>) 'input_type';
    _output_dtype pg_catalog.text = config operator(pg_catalog.->>) 'output_dtype';
    _output_dimension pg_catalog.jsonb = config operator(pg_catalog.->) 'output_dimension';
    _dimensions pg_catalog.jsonb = config operator(pg_catalog.->) 'dimensions';
begin
    if _input_type is not null and _input_type not in ('query', 'document') then
        raise exception 'invalid input_type for voyage ai "%"', _input_type;
    end if;

    if _output_dtype in ('binary', 'ubinary') then
        raise exception 'invalid output_dtype for voyage ai "%": binary and ubinary embeddings cannot be stored in a vector column; use float, int8 or uint8'
        , _output_dtype;
    end if;
    if _output_dtype is not null and _output_dtype not in ('float', 'int8', 'uint8') then
        raise exception 'invalid output_dtype for voyage ai "%": use float, int8 or uint8', _output_dtype;
    end if;

    if _output_dimension is not null
    and pg_catalog.jsonb_typeof(_output_dimension) operator(pg_catalog.!=) 'null'
    and _dimensions is not null
    and pg_catalog.jsonb_typeof(_dimensions) operator(pg_catalog.!=) 'null'
    and _output_dimension operator(pg_catalog.!=) _dimensions then
        raise exception 'invalid output_dimension for voyage ai %: it must equal dimensions (%) because the embeddings are stored in a vector(%) column'
        , _output_dimension, _dimensions, _dimensions;
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-- Unknown extra keys (e.g. openai's send_dimensions) are accepted.
create or replace function ai._validate_embedding
( config pg_catalog.jsonb
) returns void
as $func$
declare
    _implementation pg_catalog.text;
begin
    if config is null or pg_catalog.jsonb_typeof(config) operator(pg_catalog.!=) 'object' then
        raise exception 'embedding config is not a jsonb object';
    end if;

    if (config operator(pg_catalog.->>) 'config_type') is distinct from 'embedding' then
        raise exception 'invalid config_type for embedding config';
    end if;

    _implementation = config operator(pg_catalog.->>) 'implementation';
    case _implementation
        when 'openai' then
            -- ok
        when 'ollama' then
            -- ok
        when 'voyageai' then
            perform ai._validate_embedding_voyageai(config);
        when 'litellm' then
            -- ok
        when 'sentence_transformers' then
            -- ok
        else
            if _implementation is null then
                raise exception 'embedding implementation not specified';
            end if;
            raise exception 'invalid embedding implementation: "%"', _implementation;
    end case;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- indexing

create or replace function ai._validate_indexing_diskann
( config pg_catalog.jsonb
) returns void
as $func$
declare
    _storage_layout pg_catalog.text = config operator(pg_catalog.->>) 'storage_layout';
begin
    if _storage_layout is not null and _storage_layout not in ('memory_optimized', 'plain') then
        raise exception 'invalid storage_layout';
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-- pgvector's opclasses for the vector type; pgai left out vector_l2_ops
create or replace function ai._validate_indexing_hnsw
( config pg_catalog.jsonb
) returns void
as $func$
declare
    _opclass pg_catalog.text = config operator(pg_catalog.->>) 'opclass';
begin
    if _opclass is not null
    and _opclass not in ('vector_ip_ops', 'vector_cosine_ops', 'vector_l1_ops', 'vector_l2_ops') then
        raise exception 'invalid opclass';
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

create or replace function ai._validate_indexing
( config pg_catalog.jsonb
) returns void
as $func$
declare
    _implementation pg_catalog.text;
begin
    if config is null or pg_catalog.jsonb_typeof(config) operator(pg_catalog.!=) 'object' then
        raise exception 'indexing config is not a jsonb object';
    end if;

    if (config operator(pg_catalog.->>) 'config_type') is distinct from 'indexing' then
        raise exception 'invalid config_type for indexing config';
    end if;

    _implementation = config operator(pg_catalog.->>) 'implementation';
    case _implementation
        when 'none' then
            -- ok
        when 'diskann' then
            perform ai._validate_indexing_diskann(config);
        when 'hnsw' then
            perform ai._validate_indexing_hnsw(config);
        else
            if _implementation is null then
                raise exception 'indexing implementation not specified';
            end if;
            raise exception 'invalid indexing implementation: "%"', _implementation;
    end case;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- scheduling

create or replace function ai._validate_scheduling
( config pg_catalog.jsonb
) returns void
as $func$
declare
    _implementation pg_catalog.text;
begin
    if config is null or pg_catalog.jsonb_typeof(config) operator(pg_catalog.!=) 'object' then
        raise exception 'scheduling config is not a jsonb object';
    end if;

    if (config operator(pg_catalog.->>) 'config_type') is distinct from 'scheduling' then
        raise exception 'invalid config_type for scheduling config';
    end if;

    _implementation = config operator(pg_catalog.->>) 'implementation';
    case _implementation
        when 'none' then
            -- ok
        when 'timescaledb' then
            -- ok
        else
            if _implementation is null then
                raise exception 'scheduling implementation not specified';
            end if;
            raise exception 'unrecognized scheduling implementation: "%"', _implementation;
    end case;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- processing

-- batch_size 1..2048, concurrency 1..50 (the worker accepts the same range)
create or replace function ai._validate_processing
( config pg_catalog.jsonb
) returns void
as $func$
declare
    _implementation pg_catalog.text;
    _val pg_catalog.jsonb;
begin
    if config is null or pg_catalog.jsonb_typeof(config) operator(pg_catalog.!=) 'object' then
        raise exception 'processing config is not a jsonb object';
    end if;

    if (config operator(pg_catalog.->>) 'config_type') is distinct from 'processing' then
        raise exception 'invalid config_type for processing config';
    end if;

    _implementation = config operator(pg_catalog.->>) 'implementation';
    case _implementation
        when 'default' then
            _val = config operator(pg_catalog.->) 'batch_size';
            if _val is not null and pg_catalog.jsonb_typeof(_val) operator(pg_catalog.!=) 'null' then
                if pg_catalog.jsonb_typeof(_val) operator(pg_catalog.!=) 'number' then
                    raise exception 'batch_size must be a number';
                end if;
                if _val::pg_catalog.numeric operator(pg_catalog.>) 2048 then
                    raise exception 'batch_size must be less than or equal to 2048';
                end if;
                if _val::pg_catalog.numeric operator(pg_catalog.<) 1 then
                    raise exception 'batch_size must be greater than 0';
                end if;
                if _val::pg_catalog.numeric operator(pg_catalog.!=) pg_catalog.trunc(_val::pg_catalog.numeric) then
                    raise exception 'batch_size must be an integer';
                end if;
            end if;

            _val = config operator(pg_catalog.->) 'concurrency';
            if _val is not null and pg_catalog.jsonb_typeof(_val) operator(pg_catalog.!=) 'null' then
                if pg_catalog.jsonb_typeof(_val) operator(pg_catalog.!=) 'number' then
                    raise exception 'concurrency must be a number';
                end if;
                if _val::pg_catalog.numeric operator(pg_catalog.>) 50 then
                    raise exception 'concurrency must be less than or equal to 50';
                end if;
                if _val::pg_catalog.numeric operator(pg_catalog.<) 1 then
                    raise exception 'concurrency must be greater than 0';
                end if;
                if _val::pg_catalog.numeric operator(pg_catalog.!=) pg_catalog.trunc(_val::pg_catalog.numeric) then
                    raise exception 'concurrency must be an integer';
                end if;
            end if;
        else
            if _implementation is null then
                raise exception 'processing implementation not specified';
            end if;
            raise exception 'unrecognized processing implementation: "%"', _implementation;
    end case;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-------------------------------------------------------------------------------
-- destination

create or replace function ai._validate_destination
( destination pg_catalog.jsonb
, chunking pg_catalog.jsonb
) returns void
as $func$
declare
    _implementation pg_catalog.text;
    _aggregate pg_catalog.text;
begin
    if destination is null or pg_catalog.jsonb_typeof(destination) operator(pg_catalog.!=) 'object' then
        raise exception 'destination config is not a jsonb object';
    end if;

    if (destination operator(pg_catalog.->>) 'config_type') is distinct from 'destination' then
        raise exception 'invalid config_type for destination config';
    end if;

    _implementation = destination operator(pg_catalog.->>) 'implementation';
    case _implementation
        when 'table' then
            -- names are filled in by ai._evaluate_destination
            if (destination operator(pg_catalog.->>) 'vector_type') not in ('vector', 'halfvec') then
                raise exception 'invalid vector_type for destination config: "%". use vector or halfvec'
                , destination operator(pg_catalog.->>) 'vector_type';
            end if;
        when 'column' then
            if (destination operator(pg_catalog.->>) 'embedding_column') is null then
                raise exception 'invalid destination config, missing embedding_column';
            end if;
            _aggregate = destination operator(pg_catalog.->>) 'aggregate';
            if _aggregate is not null and _aggregate operator(pg_catalog.!=) 'mean' then
                raise exception 'invalid destination config, aggregate must be mean or null, got "%"', _aggregate;
            end if;
            -- with an aggregate, a row's chunks are averaged into its one vector
            if _aggregate is null
            and (chunking operator(pg_catalog.->>) 'implementation') operator(pg_catalog.!=) 'none' then
                raise exception 'chunking must be none for column destination'
                using hint = 'to embed a chunked row into one vector, use ai.destination_column(..., aggregate => ''mean'')';
            end if;
        else
            raise exception 'invalid implementation for destination config';
    end case;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;

-- For an evaluated table destination (see ai._evaluate_destination): the view and the target
-- table must not exist yet. A column destination creates no object, so nothing to check here.
create or replace function ai._validate_destination_can_create_objects
( destination pg_catalog.jsonb
) returns void
as $func$
declare
    _view_schema pg_catalog.text = destination operator(pg_catalog.->>) 'view_schema';
    _view_name pg_catalog.text = destination operator(pg_catalog.->>) 'view_name';
    _target_schema pg_catalog.text = destination operator(pg_catalog.->>) 'target_schema';
    _target_table pg_catalog.text = destination operator(pg_catalog.->>) 'target_table';
begin
    if (destination operator(pg_catalog.->>) 'implementation') is distinct from 'table' then
        return;
    end if;

    -- Postgres cuts identifiers at 63 bytes: long default names would silently collide
    if pg_catalog.octet_length(_target_table) operator(pg_catalog.>) 63 then
        raise exception 'target table name "%" is longer than 63 bytes. specify a shorter destination or target_table explicitly'
        , _target_table;
    end if;
    if pg_catalog.octet_length(_view_name) operator(pg_catalog.>) 63 then
        raise exception 'view name "%" is longer than 63 bytes. specify a shorter destination or view_name explicitly'
        , _view_name;
    end if;

    if _target_schema operator(pg_catalog.=) _view_schema and _target_table operator(pg_catalog.=) _view_name then
        raise exception 'the target table and the view would both be named %.%. specify destination, target_table or view_name explicitly'
        , _view_schema, _view_name;
    end if;

    if pg_catalog.to_regclass(pg_catalog.format('%I.%I', _view_schema, _view_name)) is not null then
        raise exception 'an object named %.% already exists. specify an alternate destination or view_name explicitly'
        , _view_schema, _view_name
        using errcode = 'duplicate_object';
    end if;

    if pg_catalog.to_regclass(pg_catalog.format('%I.%I', _target_schema, _target_table)) is not null then
        raise exception 'an object named %.% already exists. specify an alternate destination or target_table explicitly'
        , _target_schema, _target_table
        using errcode = 'duplicate_object';
    end if;
end
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp
;
