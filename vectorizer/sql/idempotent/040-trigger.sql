-- Source-table triggers. The trigger function is generated per vectorizer with its table and
-- column names baked in, so a write pays for a handful of comparisons and one insert, and it is
-- regenerated on every install.

-------------------------------------------------------------------------------
-- The columns whose change means the row must be embedded again: the loaded column and the
-- columns a python_template names. Key columns are handled apart (a key change re-queues).
create or replace function ai._vectorizer_watched_columns
( source_schema pg_catalog.name
, source_table pg_catalog.name
, loading pg_catalog.jsonb
, formatting pg_catalog.jsonb
) returns pg_catalog.name[] as
$func$
    with referenced(attname) as
    (
        select loading operator(pg_catalog.->>) 'column_name'
        union
        -- string.Template placeholders: $name or ${name}; $$ is an escaped dollar
        select pg_catalog.btrim(m[1], '{}')
        from pg_catalog.regexp_matches
        ( case when formatting operator(pg_catalog.->>) 'implementation' operator(pg_catalog.=) 'python_template'
            then formatting operator(pg_catalog.->>) 'template' else '' end
        , '\$(\$|\{[_a-zA-Z][_a-zA-Z0-9]*\}|[_a-zA-Z][_a-zA-Z0-9]*)'
        , 'g'
        ) m
    )
    select coalesce(pg_catalog.array_agg(a.attname order by a.attnum), '{}')
    from pg_catalog.pg_attribute a
    inner join referenced r on (a.attname operator(pg_catalog.=) r.attname)
    where a.attrelid operator(pg_catalog.=)
        pg_catalog.format('%I.%I', source_schema, source_table)::pg_catalog.regclass::pg_catalog.oid
    and a.attnum operator(pg_catalog.>) 0
    and not a.attisdropped
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The channel the triggers notify (payload: the vectorizer id) and workers LISTEN on.
create or replace function ai._vectorizer_notify_channel()
returns pg_catalog.text as
$func$
    select 'ai_vectorizer_queue'::pg_catalog.text
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_build_trigger_definition
( queue_schema pg_catalog.name
, queue_table pg_catalog.name
, target_schema pg_catalog.name
, target_table pg_catalog.name
, source_schema pg_catalog.name
, source_table pg_catalog.name
, source_pk pg_catalog.jsonb
, vectorizer_id pg_catalog.int4 default null
, watched_columns pg_catalog.name[] default null
, queue_failed_table pg_catalog.name default null
) returns pg_catalog.text as
$func$
declare
    _pk_cols pg_catalog.text;
    _new_vals pg_catalog.text;
    _pk_changed pg_catalog.text;
    _watched_changed pg_catalog.text;
    _old_key_match pg_catalog.text;
    _enqueue pg_catalog.text;
    _truncate pg_catalog.text;
    _on_delete pg_catalog.text;
    _on_key_change pg_catalog.text;
begin
    _pk_cols = ai._vectorizer_pk_list(source_pk);
    _new_vals = ai._vectorizer_pk_list(source_pk, 'new');

    -- key columns are never null, so the type's own equality needs no null handling
    select pg_catalog.string_agg
    ( pg_catalog.format
      ('not (old.%I %s new.%I)', x.attname, ai._vectorizer_eq_operator(x.typname), x.attname)
    , ' or ' order by x.attnum
    )
    , pg_catalog.string_agg
    ( pg_catalog.format
      ('%I %s old.%I', x.attname, ai._vectorizer_eq_operator(x.typname), x.attname)
    , ' and ' order by x.attnum
    )
    into strict _pk_changed, _old_key_match
    from pg_catalog.jsonb_to_recordset(source_pk) x(attnum int4, attname pg_catalog.name, typname text);

    if watched_columns is null then
        -- called without a column list (pgai's signature): every column but the embedding
        -- columns that column-destination vectorizers write into this table
        select pg_catalog.array_agg(a.attname order by a.attnum) into watched_columns
        from pg_catalog.pg_attribute a
        where a.attrelid operator(pg_catalog.=)
            pg_catalog.format('%I.%I', source_schema, source_table)::pg_catalog.regclass::pg_catalog.oid
        and a.attnum operator(pg_catalog.>) 0
        and not a.attisdropped
        and a.attname operator(pg_catalog.<>) all
        ( select v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'embedding_column'
          from ai.vectorizer v
          where v.source_schema operator(pg_catalog.=) _vectorizer_build_trigger_definition.source_schema
          and v.source_table operator(pg_catalog.=) _vectorizer_build_trigger_definition.source_table
          and v.config operator(pg_catalog.->) 'destination' operator(pg_catalog.->>) 'implementation'
              operator(pg_catalog.=) 'column'
        );
    end if;

    -- compared with `is distinct from` when the type's equality is a built-in one; types
    -- without one (json) or with an extension's (ltree: invisible from pg_catalog) as text
    select pg_catalog.string_agg
    ( case when exists
        ( select 1
          from pg_catalog.pg_opclass o
          inner join pg_catalog.pg_am m on (o.opcmethod operator(pg_catalog.=) m.oid)
          where m.amname operator(pg_catalog.=) 'btree' and o.opcdefault
          and o.opcintype operator(pg_catalog.=) a.atttypid
          and o.opcnamespace operator(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
        )
      then pg_catalog.format('old.%I is distinct from new.%I', a.attname, a.attname)
      else pg_catalog.format
        ('old.%I::pg_catalog.text is distinct from new.%I::pg_catalog.text', a.attname, a.attname)
      end
    , E'\n            or ' order by a.attnum
    )
    into _watched_changed
    from pg_catalog.pg_attribute a
    where a.attrelid operator(pg_catalog.=)
        pg_catalog.format('%I.%I', source_schema, source_table)::pg_catalog.regclass::pg_catalog.oid
    and a.attname operator(pg_catalog.=) any(watched_columns)
    and a.attnum operator(pg_catalog.>) 0
    and not a.attisdropped;

    _enqueue = pg_catalog.format
    ( 'insert into %I.%I (%s) values (%s);', queue_schema, queue_table, _pk_cols, _new_vals);
    if vectorizer_id is not null then
        _enqueue = _enqueue operator(pg_catalog.||) pg_catalog.format
        ( E'\n        perform pg_catalog.pg_notify(%L, %L);'
        , ai._vectorizer_notify_channel(), vectorizer_id::pg_catalog.text
        );
    end if;

    _truncate = pg_catalog.format('truncate table %I.%I;', queue_schema, queue_table);
    if queue_failed_table is not null then
        _truncate = _truncate operator(pg_catalog.||) pg_catalog.format
        (' truncate table %I.%I;', queue_schema, queue_failed_table);
    end if;

    if target_table is not null then
        _truncate = pg_catalog.format('truncate table %I.%I; ', target_schema, target_table)
            operator(pg_catalog.||) _truncate;
        _on_delete = pg_catalog.format
        ('delete from %I.%I where %s;', target_schema, target_table, _old_key_match);
        _on_key_change = _on_delete;
    elsif vectorizer_id is not null then
        -- column destination: the embedding lives in the row itself and goes with it; the
        -- hash chunk reuse keeps for it (ai._vectorizer_column_hash) is removed here
        _on_delete = pg_catalog.format
        ( 'delete from ai._vectorizer_column_hash where vectorizer_id operator(pg_catalog.=) %s'
          ' and pk operator(pg_catalog.=) pg_catalog.jsonb_build_array(%s);'
        , vectorizer_id
        , ai._vectorizer_pk_list(source_pk, 'old')
        );
        _on_key_change = _on_delete;
    else
        _on_delete = '';
        _on_key_change = '';
    end if;

    return pg_catalog.format
    ( $body$
begin
    if (TG_LEVEL operator(pg_catalog.=) 'STATEMENT') then
        if (TG_OP operator(pg_catalog.=) 'TRUNCATE') then
            %s
        end if;
        return null;
    end if;

    if (TG_OP operator(pg_catalog.=) 'DELETE') then
        %s
        return old;
    elsif (TG_OP operator(pg_catalog.=) 'INSERT') then
        %s
        return new;
    elsif (TG_OP operator(pg_catalog.=) 'UPDATE') then
        if (%s) then
            %s
            %s
        elsif (%s) then
            %s
        end if;
        return new;
    end if;
    return null;
end;
$body$
    , _truncate
    , _on_delete
    , _enqueue
    , _pk_changed
    , _on_key_change
    , _enqueue
    , coalesce(_watched_changed, 'false')
    , _enqueue
    );
end;
$func$ language plpgsql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_create_trigger_function
( trigger_name pg_catalog.name
, queue_schema pg_catalog.name
, definition pg_catalog.text
) returns void as
$func$
begin
    -- security definer: anyone who may write the source may enqueue, without queue privileges
    execute pg_catalog.format
    ( $sql$
    create or replace function %I.%I() returns trigger
    as %L
    language plpgsql volatile parallel safe security definer
    set search_path to pg_catalog, pg_temp
    $sql$
    , queue_schema, trigger_name
    , definition
    );
    execute pg_catalog.format
    ( 'revoke all on function %I.%I() from public'
    , queue_schema, trigger_name
    );
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_create_source_trigger
( trigger_name pg_catalog.name
, queue_schema pg_catalog.name
, queue_table pg_catalog.name
, source_schema pg_catalog.name
, source_table pg_catalog.name
, target_schema pg_catalog.name
, target_table pg_catalog.name
, source_pk pg_catalog.jsonb
, vectorizer_id pg_catalog.int4 default null
, watched_columns pg_catalog.name[] default null
, queue_failed_table pg_catalog.name default null
) returns void as
$func$
begin
    perform ai._vectorizer_create_trigger_function
    ( trigger_name
    , queue_schema
    , ai._vectorizer_build_trigger_definition
      ( queue_schema, queue_table, target_schema, target_table
      , source_schema, source_table, source_pk
      , vectorizer_id, watched_columns, queue_failed_table
      )
    );
    execute pg_catalog.format
    ( $sql$
    create trigger %I
    after insert or update or delete
    on %I.%I
    for each row execute function %I.%I()
    $sql$
    , trigger_name
    , source_schema, source_table
    , queue_schema, trigger_name
    );
    execute pg_catalog.format
    ( $sql$
    create trigger %I
    after truncate
    on %I.%I
    for each statement execute function %I.%I()
    $sql$
    , trigger_name operator(pg_catalog.||) '_truncate'
    , source_schema, source_table
    , queue_schema, trigger_name
    );
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- Regenerates one vectorizer's trigger function from its catalog row (install, upgrades).
create or replace function ai._vectorizer_regenerate_trigger_function(vectorizer_id pg_catalog.int4)
returns void as
$func$
declare
    _vec ai.vectorizer;
    _destination pg_catalog.jsonb;
begin
    select * into strict _vec from ai.vectorizer v where v.id operator(pg_catalog.=) vectorizer_id;
    if pg_catalog.to_regclass(pg_catalog.format('%I.%I', _vec.source_schema, _vec.source_table)) is null then
        return; -- the source table is gone; nothing fires the trigger any more
    end if;
    _destination = _vec.config operator(pg_catalog.->) 'destination';
    perform ai._vectorizer_create_trigger_function
    ( _vec.trigger_name
    , _vec.queue_schema
    , ai._vectorizer_build_trigger_definition
      ( _vec.queue_schema
      , _vec.queue_table
      , case when _destination operator(pg_catalog.->>) 'implementation' operator(pg_catalog.=) 'table'
          then _destination operator(pg_catalog.->>) 'target_schema' end
      , case when _destination operator(pg_catalog.->>) 'implementation' operator(pg_catalog.=) 'table'
          then _destination operator(pg_catalog.->>) 'target_table' end
      , _vec.source_schema
      , _vec.source_table
      , _vec.source_pk
      , _vec.id
      , ai._vectorizer_watched_columns
        ( _vec.source_schema
        , _vec.source_table
        , _vec.config operator(pg_catalog.->) 'loading'
        , _vec.config operator(pg_catalog.->) 'formatting'
        )
      , _vec.queue_failed_table
      )
    );
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;
