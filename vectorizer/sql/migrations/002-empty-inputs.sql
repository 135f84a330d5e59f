-- Source rows whose input was empty (NULL, '', whitespace only, an empty or blank document)
-- when the worker last processed them. pgai leaves no trace of them; we keep their keys so
-- ai.vectorizer_status can count them. The worker adds a key when it finds the input empty and
-- removes it whenever it processes that key again (the row got text, failed, or is gone);
-- keys whose source row was deleted meanwhile are not counted (see ai._vectorizer_empty_rows).
create table if not exists ai._vectorizer_empty_input
( vectorizer_id pg_catalog.int4 not null references ai.vectorizer (id) on delete cascade
, pk pg_catalog.jsonb not null
, recorded pg_catalog.timestamptz not null default pg_catalog.now()
, primary key (vectorizer_id, pk)
);
