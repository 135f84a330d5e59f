"""Every static SQL statement of the worker and the CLI, named once, and the catalog reads
built on them.

Statements composed per vectorizer from its catalog row (claim, requeue, write) live in
`queue.py` and the stage that runs them; the identifier helpers they share live in
`sqlparts.py`. What is here takes values only as parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

if TYPE_CHECKING:
    from vectorizer.config import Vectorizer


# --- schema and catalog ------------------------------------------------------------------

SCHEMA_PRESENCE = (
    "select to_regclass('ai._vectorizer_lib_version') is not null,"
    " to_regclass('ai.pgai_lib_version') is not null"
)
INSTALLED_VERSION = "select version from ai._vectorizer_lib_version where name = 'vectorizer'"
ALL_IDS = "select id from ai.vectorizer order by id"
ENABLED_IDS = "select id from ai.vectorizer where not disabled order by id"
IDS_BY_ID_OR_NAME = (
    "select id, name from ai.vectorizer where id = any(%s) or name = any(%s) order by id"
)
# the config as workers see it (a shadow store in place of the destination while an alter
# re-embeds), and what a batch compares right before it writes (reembed.ConfigGuard)
VECTORIZER = """
    select id, name, source_schema, source_table, source_pk, queue_schema, queue_table,
           coalesce(queue_failed_table, '_vectorizer_q_failed_' || id) as queue_failed_table,
           disabled, ai._vectorizer_worker_config(config) as config,
           ai._vectorizer_content_hash(config) as content_hash,
           (config -> 'shadow' ->> 'version')::int as shadow_version
    from ai.vectorizer where id = %s
"""
IS_DISABLED = "select disabled from ai.vectorizer where id = %s"
QUEUE_OF = "select v.queue_schema, v.queue_table from ai.vectorizer v where v.id = %s"
COUNT_ROWS = "select ai._vectorizer_count_rows(%s, %s)"
QUEUE_SIZES = (
    "select v.id, v.name,"
    " ai._vectorizer_count_rows(v.queue_schema, v.queue_table),"
    " ai._vectorizer_count_rows(v.queue_schema, v.queue_failed_table)"
    " from ai.vectorizer v where v.id = any(%s) and not v.disabled"
)
# NULL when the relation does not exist; otherwise its live column names.
RELATION_COLUMNS = """
    select (
        select coalesce(array_agg(a.attname::text), '{}')
        from pg_catalog.pg_attribute a
        where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
    )
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where n.nspname = %s and c.relname = %s
"""

# --- altering (reembed.py) ----------------------------------------------------------------

CONTENT_HASH = "select ai._vectorizer_content_hash(config) from ai.vectorizer where id = %s"
MAY_LOCK_CATALOG = "select has_table_privilege('ai.vectorizer', 'update')"
REEMBED_FEED = "select ai._vectorizer_reembed_feed(%s, %s)"
SWAP_STORE = "select ai._vectorizer_swap_store(%s)"
REEMBED_RUNNING = (
    "select exists (select from ai._vectorizer_reembed"
    " where vectorizer_id = %s and finished_at is null)"
)

# An idle once-run's look at a vectorizer without reading its config into models: whether it
# is disabled, and whether its vector index may be due by the test pgai's job path uses (false
# only when the config wants no index, the index exists, or the store has fewer than min_rows).
IDLE_STATE = (
    "select v.disabled, ai._vectorizer_should_create_vector_index(v)"
    " from ai.vectorizer v where v.id = %s"
)

# --- worker tracking -----------------------------------------------------------------------

WORKER_START = "select ai._worker_start(%s, %s)"
WORKER_HEARTBEAT = "select ai._worker_heartbeat(%s, %s, %s, %s)"
WORKER_PROGRESS = "select ai._worker_progress(%s, %s, %s, %s)"
WORKER_STOP = "select ai._worker_stop(%s)"
WORKER_CONCURRENCY = """
insert into ai._vectorizer_worker_concurrency (worker_id, vectorizer_id, executors, adaptive)
values (%s, %s, %s, %s)
on conflict (worker_id, vectorizer_id) do update
set executors = excluded.executors, adaptive = excluded.adaptive, updated_at = now()
returning vectorizer_id
"""
RECORD_REUSE = "select ai._vectorizer_record_reuse(%s, %s, %s, %s, %s, %s)"
# the one INSERT into the error table: row failures (inside a batch) and vectorizer failures
ERROR_ROW = "insert into ai._vectorizer_errors (id, message, details) values (%s, %s, %s::jsonb)"

# --- status (the operator's view) ------------------------------------------------------------

VECTORIZER_STATUS = """
select id, name, source_table, disabled, pending_items_estimate, failed_items,
       oldest_pending_age, source_rows, embedded_rows, errors_last_hour,
       last_error_at, last_error_message, last_success_at, empty_rows,
       chunks_embedded, chunks_reused_same_row, chunks_reused_other_row, rows_unchanged,
       tokens_saved, chunks_older_config, index_state,
       config_version, reembed_keys_done, reembed_keys_total, reembed_eta
from ai.vectorizer_status order by id
"""
# executors per vectorizer over the workers that are alive and not stopped
CONCURRENCY = """
select c.vectorizer_id, sum(c.executors)::int as executors, bool_or(c.adaptive) as adaptive
from ai._vectorizer_worker_concurrency c
join ai.vectorizer_worker_process w on w.id = c.worker_id
where w.stopped_at is null
  and w.last_heartbeat > now() - w.expected_heartbeat_interval * %s - %s
group by c.vectorizer_id
"""
WORKERS = """
select id, version, started, last_heartbeat, expected_heartbeat_interval,
       success_count, error_count, last_error_message, stopped_at, now() as now
from ai.vectorizer_worker_process
where last_heartbeat > now() - interval '1 day'
order by last_heartbeat desc
limit 20
"""
INTEGRITY = "select orphan_keys, orphan_chunks, missing_rows from ai.vectorizer_integrity(%s)"
# {} is the argument, typed by the caller (int4 id or text name)
REPAIR = "select orphan_keys, orphan_chunks, queued_rows from ai.repair_vectorizer({})"
VECTORIZER_EXISTS = "select 1 from ai.vectorizer where id = %s"
RETRY_FAILED_BY_ID = "select ai.retry_failed(%s::int4)"
RETRY_FAILED_BY_NAME = "select ai.retry_failed(%s::text)"
NOW = "select now()"
# the status page: the served vectorizers' status rows and their latest error rows
PAGE_VECTORIZERS = "select * from ai.vectorizer_status where id = any(%s) order by id"
PAGE_ERRORS = """
    select e.id, v.name, e.message, e.recorded,
           e.details ->> 'step' as step, e.details -> 'pk' as key,
           e.details ->> 'error_reason' as reason, e.details ->> 'provider' as provider,
           e.details ->> 'attempts' as attempts
    from ai._vectorizer_errors e left join ai.vectorizer v on v.id = e.id
    where e.id = any(%s)
    order by e.recorded desc
    limit %s
    """


async def load_vectorizer(conn: psycopg.AsyncConnection, vectorizer_id: int) -> Vectorizer | None:
    """The vectorizer's catalog row, validated; None when it was dropped."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(VECTORIZER, (vectorizer_id,))
        row = await cursor.fetchone()
    if not row:
        return None
    # here, not at import: pydantic and the config models are what an idle once-run would
    # otherwise import for nothing
    from vectorizer.config import Vectorizer

    return Vectorizer.model_validate(row)


async def is_disabled(conn: psycopg.AsyncConnection, vectorizer_id: int) -> bool:
    """True when the vectorizer was disabled or dropped."""
    row = await (await conn.execute(IS_DISABLED, (vectorizer_id,))).fetchone()
    return row is None or bool(row[0])


async def idle_state(conn: psycopg.AsyncConnection, vectorizer_id: int) -> tuple[bool, bool] | None:
    """(disabled, index maybe due) of a vectorizer with nothing queued; None when it was
    dropped. When the index test cannot be made (a config it does not know, a store it cannot
    read), the index counts as maybe due: the caller then checks it the full way."""
    try:
        row = await (await conn.execute(IDLE_STATE, (vectorizer_id,))).fetchone()
    except psycopg.DatabaseError:
        disabled = await (await conn.execute(IS_DISABLED, (vectorizer_id,))).fetchone()
        return None if disabled is None else (bool(disabled[0]), True)
    return None if row is None else (bool(row[0]), bool(row[1]))


async def pending_estimate(conn: psycopg.AsyncConnection, vectorizer_id: int) -> int:
    row = await (await conn.execute(QUEUE_OF, (vectorizer_id,))).fetchone()
    if row is None:
        return 0
    counted = await (await conn.execute(COUNT_ROWS, row)).fetchone()
    return int(counted[0] or 0) if counted else 0


async def has_work(conn: psycopg.AsyncConnection, vectorizer_id: int) -> bool:
    """Whether the vectorizer's queue holds any row (one index probe, no count) or a re-embed
    is running (a drain queues its next slice). True when in doubt: the normal path then
    builds the pipeline and finds out."""
    queue = await (await conn.execute(QUEUE_OF, (vectorizer_id,))).fetchone()
    if queue is None:
        return True  # gone: the normal path says so
    # the one statement here composed from a catalog row: it names only the queue
    queued = sql.SQL("select exists (select from {})").format(sql.Identifier(*queue))
    try:
        row = await (await conn.execute(queued)).fetchone()
        if row and row[0]:
            return True
        row = await (await conn.execute(REEMBED_RUNNING, (vectorizer_id,))).fetchone()
    except psycopg.DatabaseError:
        return True  # a schema or a grant from before re-embeds: not this check's to judge
    return bool(row and row[0])


async def relation_columns(
    conn: psycopg.AsyncConnection, schema: str, table: str
) -> frozenset[str] | None:
    """A table's live column names; None when it does not exist."""
    row = await (await conn.execute(RELATION_COLUMNS, (schema, table))).fetchone()
    return None if row is None else frozenset(row[0])
