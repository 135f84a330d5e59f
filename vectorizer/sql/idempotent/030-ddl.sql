-- DDL builders used by ai.create_vectorizer: source key discovery, grants, destination,
-- queue and failed-queue tables. Every identifier goes through %I; column types come from
-- format_type(), which quotes and qualifies them itself.

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_source_pk(source_table pg_catalog.regclass)
returns pg_catalog.jsonb as
$func$
    select pg_catalog.jsonb_agg(x order by x.attnum)
    from
    (
        select e.attnum, e.pknum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) as typname
        from pg_catalog.pg_constraint k
        cross join lateral pg_catalog.unnest(k.conkey) with ordinality e(attnum, pknum)
        inner join pg_catalog.pg_attribute a
            on (k.conrelid operator(pg_catalog.=) a.attrelid and e.attnum operator(pg_catalog.=) a.attnum)
        where k.conrelid operator(pg_catalog.=) source_table
        and k.contype operator(pg_catalog.=) 'p'
    ) x
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- "col1 type1 not null, col2 type2 not null" in table (attnum) order
create or replace function ai._vectorizer_pk_column_defs(source_pk pg_catalog.jsonb)
returns pg_catalog.text as
$func$
    select pg_catalog.string_agg
    ( pg_catalog.format('%I %s not null', x.attname, x.typname)
    , E'\n, ' order by x.attnum
    )
    from pg_catalog.jsonb_to_recordset(source_pk) x(attnum int4, attname pg_catalog.name, typname text)
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- "prefix.col1, prefix.col2" in the requested order ('attnum' or 'pknum')
create or replace function ai._vectorizer_pk_list
( source_pk pg_catalog.jsonb
, prefix pg_catalog.text default null
, order_by pg_catalog.text default 'attnum'
) returns pg_catalog.text as
$func$
    select pg_catalog.string_agg
    ( case when prefix is null then pg_catalog.format('%I', x.attname)
      else pg_catalog.format('%s.%I', prefix, x.attname) end
    , ', ' order by case when order_by operator(pg_catalog.=) 'pknum' then x.pknum else x.attnum end
    )
    from pg_catalog.jsonb_to_recordset(source_pk) x(attnum int4, pknum int4, attname pg_catalog.name)
$func$ language sql immutable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- The schema-qualified equality operator of a type, e.g. `operator(public.=)` for ltree:
-- generated code runs with search_path = pg_catalog, where extension operators are invisible.
create or replace function ai._vectorizer_eq_operator(type_name pg_catalog.text)
returns pg_catalog.text as
$func$
    select coalesce
    ( ( select pg_catalog.format('operator(%I.=)', n.nspname)
        from pg_catalog.pg_opclass c
        inner join pg_catalog.pg_am m on (c.opcmethod operator(pg_catalog.=) m.oid)
        inner join pg_catalog.pg_amop o
            on (o.amopfamily operator(pg_catalog.=) c.opcfamily
            and o.amoplefttype operator(pg_catalog.=) c.opcintype
            and o.amoprighttype operator(pg_catalog.=) c.opcintype
            and o.amopstrategy operator(pg_catalog.=) 3)
        inner join pg_catalog.pg_operator p on (p.oid operator(pg_catalog.=) o.amopopr)
        inner join pg_catalog.pg_namespace n on (n.oid operator(pg_catalog.=) p.oprnamespace)
        where m.amname operator(pg_catalog.=) 'btree'
        and c.opcdefault
        and c.opcintype operator(pg_catalog.=) type_name::pg_catalog.regtype::pg_catalog.oid
        limit 1
      )
    , 'operator(pg_catalog.=)'
    )
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- "l.col1 = r.col1 and l.col2 = r.col2"
create or replace function ai._vectorizer_pk_join
( source_pk pg_catalog.jsonb
, l pg_catalog.text
, r pg_catalog.text
) returns pg_catalog.text as
$func$
    select pg_catalog.string_agg
    ( pg_catalog.format
      ('%s.%I %s %s.%I', l, x.attname, ai._vectorizer_eq_operator(x.typname), r, x.attname)
    , ' and ' order by x.attnum
    )
    from pg_catalog.jsonb_to_recordset(source_pk) x(attnum int4, attname pg_catalog.name, typname text)
$func$ language sql stable security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_grant_to_source
( source_schema pg_catalog.name
, source_table pg_catalog.name
, grant_to pg_catalog.name[]
) returns void as
$func$
begin
    if grant_to is null then
        return;
    end if;
    execute pg_catalog.format
    ( 'grant usage on schema %I to %s'
    , source_schema
    , (select pg_catalog.string_agg(pg_catalog.quote_ident(x), ', ') from pg_catalog.unnest(grant_to) x)
    );
    execute pg_catalog.format
    ( 'grant select on %I.%I to %s'
    , source_schema
    , source_table
    , (select pg_catalog.string_agg(pg_catalog.quote_ident(x), ', ') from pg_catalog.unnest(grant_to) x)
    );
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_grant_to_vectorizer(grant_to pg_catalog.name[])
returns void as
$func$
declare
    _grantees pg_catalog.text;
begin
    if grant_to is null then
        return;
    end if;
    select pg_catalog.string_agg(pg_catalog.quote_ident(x), ', ') into _grantees
    from pg_catalog.unnest(grant_to) x;
    execute pg_catalog.format('grant usage on schema ai to %s', _grantees);
    execute pg_catalog.format('grant select on ai.vectorizer to %s', _grantees);
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
-- grants privileges on a table (and usage on its schema) to every role of grant_to
create or replace function ai._vectorizer_grant_on_table
( table_schema pg_catalog.name
, table_name pg_catalog.name
, privileges pg_catalog.text
, grant_to pg_catalog.name[]
) returns void as
$func$
declare
    _grantees pg_catalog.text;
begin
    if grant_to is null then
        return;
    end if;
    select pg_catalog.string_agg(pg_catalog.quote_ident(x), ', ') into _grantees
    from pg_catalog.unnest(grant_to) x;
    execute pg_catalog.format('grant usage on schema %I to %s', table_schema, _grantees);
    execute pg_catalog.format('grant %s on %I.%I to %s', privileges, table_schema, table_name, _grantees);
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_create_target_table
( source_pk pg_catalog.jsonb
, target_schema pg_catalog.name
, target_table pg_catalog.name
, dimensions pg_catalog.int4
, grant_to pg_catalog.name[]
) returns void as
$func$
begin
    execute pg_catalog.format
    ( $sql$
    create table %I.%I
    ( embedding_uuid uuid not null primary key default pg_catalog.gen_random_uuid()
    , %s
    , chunk_seq int not null
    , chunk text not null
    , embedding @extschema:vector@.vector(%L) not null
    , unique (%s, chunk_seq)
    )
    $sql$
    , target_schema, target_table
    , ai._vectorizer_pk_column_defs(source_pk)
    , dimensions
    , ai._vectorizer_pk_list(source_pk, null, 'pknum')
    );
    -- vectors are incompressible: keep them inline and skip the compression attempt
    execute pg_catalog.format
    ( 'alter table %I.%I alter column embedding set storage main'
    , target_schema, target_table
    );
    -- appended after pgai's columns: what the chunker knows about each chunk
    execute pg_catalog.format
    ( 'alter table %I.%I add column chunk_metadata pg_catalog.jsonb'
    , target_schema, target_table
    );
    -- chunk_hash, config_hash and their index: what chunk-level reuse reads (005-chunk-reuse)
    perform ai._vectorizer_add_reuse_columns(target_schema, target_table);
    -- unlike pgai, grantees get delete too: replacing a row's embeddings deletes the old ones
    perform ai._vectorizer_grant_on_table
    (target_schema, target_table, 'select, insert, update, delete', grant_to);
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_create_view
( view_schema pg_catalog.name
, view_name pg_catalog.name
, source_schema pg_catalog.name
, source_table pg_catalog.name
, source_pk pg_catalog.jsonb
, target_schema pg_catalog.name
, target_table pg_catalog.name
, grant_to pg_catalog.name[]
) returns void as
$func$
declare
    _columns pg_catalog.text;
begin
    -- key columns come from the target so the planner can drop the join when only
    -- target columns are read
    select pg_catalog.string_agg
    ( pg_catalog.format
      ( '%s.%I'
      , case when pk.attname is not null then 't' else 's' end
      , a.attname
      )
    , E'\n    , ' order by a.attnum
    )
    into strict _columns
    from pg_catalog.pg_attribute a
    left outer join pg_catalog.jsonb_to_recordset(source_pk) pk(attname pg_catalog.name)
        on (a.attname operator(pg_catalog.=) pk.attname)
    where a.attrelid operator(pg_catalog.=)
        pg_catalog.format('%I.%I', source_schema, source_table)::pg_catalog.regclass::pg_catalog.oid
    and a.attnum operator(pg_catalog.>) 0
    and not a.attisdropped
    -- the target's own columns come first and shadow source columns of the same name
    and (pk.attname is not null or a.attname operator(pg_catalog.<>) all
        (array['embedding_uuid', 'chunk_seq', 'chunk', 'embedding', 'chunk_metadata']::pg_catalog.name[]));

    execute pg_catalog.format
    ( $sql$
    create view %I.%I as
    select
      t.embedding_uuid
    , t.chunk_seq
    , t.chunk
    , t.embedding
    , %s
    , t.chunk_metadata
    from %I.%I t
    left outer join %I.%I s
    on (%s)
    $sql$
    , view_schema, view_name
    , _columns
    , target_schema, target_table
    , source_schema, source_table
    , ai._vectorizer_pk_join(source_pk, 't', 's')
    );
    perform ai._vectorizer_grant_on_table(view_schema, view_name, 'select', grant_to);
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_create_destination_table
( source_schema pg_catalog.name
, source_table pg_catalog.name
, source_pk pg_catalog.jsonb
, dimensions pg_catalog.int4
, destination pg_catalog.jsonb
, grant_to pg_catalog.name[]
) returns void as
$func$
begin
    perform ai._vectorizer_create_target_table
    ( source_pk
    , destination operator(pg_catalog.->>) 'target_schema'
    , destination operator(pg_catalog.->>) 'target_table'
    , dimensions
    , grant_to
    );
    -- halfvec: half the bytes per vector; the table is still empty, so this rewrite is free
    if (destination operator(pg_catalog.->>) 'vector_type') operator(pg_catalog.=) 'halfvec' then
        execute pg_catalog.format
        ( 'alter table %I.%I alter column embedding type @extschema:vector@.halfvec(%L)'
        , destination operator(pg_catalog.->>) 'target_schema'
        , destination operator(pg_catalog.->>) 'target_table'
        , dimensions
        );
    end if;
    perform ai._vectorizer_create_view
    ( destination operator(pg_catalog.->>) 'view_schema'
    , destination operator(pg_catalog.->>) 'view_name'
    , source_schema
    , source_table
    , source_pk
    , destination operator(pg_catalog.->>) 'target_schema'
    , destination operator(pg_catalog.->>) 'target_table'
    , grant_to
    );
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_add_embedding_column
( source_schema pg_catalog.name
, source_table pg_catalog.name
, dimensions pg_catalog.int4
, embedding_column pg_catalog.name
) returns void as
$func$
declare
    _existing_type pg_catalog.text;
    _wanted_type pg_catalog.text;
begin
    select pg_catalog.format_type(a.atttypid, a.atttypmod) into _existing_type
    from pg_catalog.pg_attribute a
    where a.attrelid operator(pg_catalog.=)
        pg_catalog.format('%I.%I', source_schema, source_table)::pg_catalog.regclass::pg_catalog.oid
    and a.attname operator(pg_catalog.=) embedding_column
    and a.attnum operator(pg_catalog.>) 0
    and not a.attisdropped;

    if _existing_type is not null then
        _wanted_type = pg_catalog.format_type
        ('@extschema:vector@.vector'::pg_catalog.regtype, dimensions);
        if _existing_type operator(pg_catalog.<>) _wanted_type then
            raise exception 'embedding column % already exists in %.% with type %, expected %'
            , embedding_column, source_schema, source_table, _existing_type, _wanted_type;
        end if;
        raise notice 'embedding column % already exists in %.% skipping creation'
        , embedding_column, source_schema, source_table;
        return;
    end if;

    execute pg_catalog.format
    ( 'alter table %I.%I add column %I @extschema:vector@.vector(%L) default null'
    , source_schema, source_table, embedding_column, dimensions
    );
    execute pg_catalog.format
    ( 'alter table %I.%I alter column %I set storage main'
    , source_schema, source_table, embedding_column
    );
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_create_destination_column
( source_schema pg_catalog.name
, source_table pg_catalog.name
, dimensions pg_catalog.int4
, destination pg_catalog.jsonb
) returns void as
$func$
begin
    perform ai._vectorizer_add_embedding_column
    ( source_schema
    , source_table
    , dimensions
    , destination operator(pg_catalog.->>) 'embedding_column'
    );
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_create_queue_table
( queue_schema pg_catalog.name
, queue_table pg_catalog.name
, source_pk pg_catalog.jsonb
, grant_to pg_catalog.name[]
) returns void as
$func$
begin
    -- no unique key on purpose: a key may be queued many times; the worker collapses them.
    -- lease_*: a worker embedding the key (vectorizer/lease.py); pgai's worker ignores them.
    execute pg_catalog.format
    ( $sql$
    create table %I.%I
    ( %s
    , queued_at pg_catalog.timestamptz not null default now()
    , loading_retries pg_catalog.int4 not null default 0
    , loading_retry_after pg_catalog.timestamptz
    , lease_token pg_catalog.uuid
    , lease_pid pg_catalog.int4
    , leased_until pg_catalog.timestamptz
    )
    $sql$
    , queue_schema, queue_table
    , ai._vectorizer_pk_column_defs(source_pk)
    );
    execute pg_catalog.format
    ( 'create index on %I.%I (%s)'
    , queue_schema, queue_table
    , ai._vectorizer_pk_list(source_pk, null, 'pknum')
    );
    perform ai._vectorizer_grant_on_table
    (queue_schema, queue_table, 'select, insert, update, delete', grant_to);
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;

-------------------------------------------------------------------------------
create or replace function ai._vectorizer_create_queue_failed_table
( queue_schema pg_catalog.name
, queue_failed_table pg_catalog.name
, source_pk pg_catalog.jsonb
, grant_to pg_catalog.name[]
) returns void as
$func$
begin
    execute pg_catalog.format
    ( $sql$
    create table %I.%I
    ( %s
    , created_at pg_catalog.timestamptz not null default now()
    , failure_step pg_catalog.text not null default ''
    )
    $sql$
    , queue_schema, queue_failed_table
    , ai._vectorizer_pk_column_defs(source_pk)
    );
    execute pg_catalog.format
    ( 'create index on %I.%I (%s)'
    , queue_schema, queue_failed_table
    , ai._vectorizer_pk_list(source_pk, null, 'pknum')
    );
    perform ai._vectorizer_grant_on_table
    (queue_schema, queue_failed_table, 'select, insert, update, delete', grant_to);
end;
$func$ language plpgsql volatile security invoker
set search_path to pg_catalog, pg_temp;
