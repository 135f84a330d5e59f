-- Leased claims: a worker marks the queue rows it is embedding instead of holding them in an
-- open transaction (vectorizer/lease.py). Queues created before this get the three columns;
-- ai._vectorizer_create_queue_table creates them for new ones. Nullable, no default: adding
-- them rewrites nothing, and pgai's worker, which does not know them, is unaffected.
do $block$
declare
    _queue record;
begin
    for _queue in
        select v.queue_schema, v.queue_table
        from ai.vectorizer v
        where pg_catalog.to_regclass
            (pg_catalog.format('%I.%I', v.queue_schema, v.queue_table)) is not null
    loop
        execute pg_catalog.format
        ( 'alter table %I.%I add column if not exists lease_token pg_catalog.uuid'
          ', add column if not exists lease_pid pg_catalog.int4'
          ', add column if not exists leased_until pg_catalog.timestamptz'
        , _queue.queue_schema, _queue.queue_table
        );
    end loop;
end
$block$;
