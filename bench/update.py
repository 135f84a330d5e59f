"""Update benchmark: what does catching up on edited rows cost, with and without chunk reuse?

    python bench/update.py --rows 20000 --latency-ms 50 --baseline /tmp/base --repeat 3

The workload of bench/backfill.py (same documents for the same seed; recursive 800/100 chunks,
`$title: $chunk`, 1536 dimensions, the fake OpenAI server in its own process). The table is
built once by this checkout's worker and cloned. Then rows with `id % 10 = 0` get a new first
paragraph in place of their first one, and the worker catches up: on one clone with this
checkout, on the other with the code at `--baseline` (a checkout of another revision, e.g.
`git worktree add /tmp/base main`), each run as `vectorizer-worker --once` with that code first
on PYTHONPATH. Prints, per code:
embedding inputs sent, tokens sent and saved, catch-up seconds; checks that both stores are
identical (the baseline re-embeds every chunk, so its store is a fresh build of those rows);
then repeats the same UPDATE with the keys queued again and reports what a no-op costs.

The fake answers every request after `--latency-ms`, whatever its size, so a catch-up there is
bound by the worker and the database; `--budget-tps 150000` (a 9M tokens-per-minute limit)
makes it bound by tokens, as a real provider's rate limit bounds a large catch-up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backfill import paragraph, prepare, start_database, start_fake  # noqa: E402


@dataclass
class Run:
    seconds: float
    inputs: int
    requests: int
    tokens_sent: int
    tokens_saved: int
    log: str


def fake_call(base_url: str, path: str, payload: dict[str, object] | None = None) -> bytes:
    root = base_url.rsplit("/v1", 1)[0]
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(root + path, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request) as response:
        return response.read()


def run_worker(
    db_url: str,
    base_url: str,
    concurrency: int,
    code: Path,
    behaviour: dict[str, object] | None = None,
) -> Run:
    fake_call(base_url, "/_reset", {})  # clears the request log, and the behaviour with it
    if behaviour:
        fake_call(base_url, "/_control", behaviour)
    env = dict(
        os.environ, OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=base_url, PYTHONPATH=str(code)
    )
    command = [sys.executable, "-m", "vectorizer", "worker", "--db-url", db_url, "--once"]
    process = subprocess.run(
        [*command, *(["-c", str(concurrency)] if concurrency else []), "--log-level", "info"],
        env=env,
        cwd=code,
        capture_output=True,
        text=True,
        check=False,
    )
    if process.returncode != 0:
        raise SystemExit(f"worker ({code}) failed:\n{process.stderr}")
    match = re.search(r"finished processing vectorizer .*seconds=([0-9.]+)", process.stderr)
    saved = re.search(r"finished processing vectorizer .*tokens_saved=(\d+)", process.stderr)
    requests = json.loads(fake_call(base_url, "/_requests"))["requests"]
    return Run(
        seconds=float(match.group(1)) if match else float("nan"),
        inputs=sum(r["input_count"] for r in requests if r["status"] == 200),
        requests=len(requests),
        tokens_sent=sum(r["tokens"] for r in requests if r["status"] == 200),
        tokens_saved=int(saved.group(1)) if saved else 0,
        log=process.stderr,
    )


def edit_rows(db_url: str, seed: int) -> int:
    """Rows with id % 10 = 0 get a new first paragraph in place of their first one (the same
    new paragraphs in every clone)."""
    rng = random.Random(seed + 1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        keys = [row[0] for row in conn.execute("select id from docs where id % 10 = 0 order by id")]
        firsts = [(key, paragraph(rng)) for key in keys]
        with conn.transaction():
            conn.execute("create temp table firsts (id int primary key, first text)")
            with conn.cursor().copy("copy firsts (id, first) from stdin") as copy:
                for row in firsts:
                    copy.write_row(row)
            # the first paragraph is replaced (a document without a second one is all new)
            conn.execute(
                "update docs d set body = case when strpos(d.body, E'\\n\\n') > 0"
                " then f.first || substr(d.body, strpos(d.body, E'\\n\\n')) else f.first end"
                " from firsts f where d.id = f.id"
            )
    return len(keys)


def touch_again(db_url: str) -> int:
    """The same UPDATE once more (the text does not change), and the keys queued anyway, as a
    trigger that queues every update (pgai's) would."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update docs set body = body where id % 10 = 0")
        queued = conn.execute(
            "insert into ai._vectorizer_q_1 (id) select id from docs where id % 10 = 0"
        ).rowcount
    return queued


def scalar(db_url: str, query: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return str(row[0])


def store_digest(db_url: str) -> str:
    """Every stored chunk's key, seq, text and vector: equal digests, equal stores."""
    return scalar(
        db_url,
        "select md5(string_agg(md5(id || ':' || chunk_seq || ':' || chunk || ':'"
        " || embedding::text), '' order by id, chunk_seq)) from docs_embedding_store",
    )


def tuple_versions(db_url: str) -> str:
    """A digest of every stored chunk's physical version: any DELETE or COPY changes it."""
    return scalar(
        db_url,
        "select md5(string_agg(ctid::text || xmin::text, ',' order by embedding_uuid))"
        " from docs_embedding_store",
    )


def edited_chunks(db_url: str) -> int:
    return int(scalar(db_url, "select count(*) from docs_embedding_store where id % 10 = 0"))


def clone(server_url: str, source: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(source)
            )
        )
    return make_conninfo(server_url, dbname=name)


def report(label: str, run: Run) -> None:
    print(
        f"  {label:<9} catch-up {run.seconds:7.2f}s  inputs sent {run.inputs:6d}  "
        f"requests {run.requests:4d}  tokens sent ~{run.tokens_sent:,}  "
        f"tokens saved ~{run.tokens_saved:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--concurrency", type=int, default=4, help="executors; 0: each checkout's own default"
    )
    parser.add_argument(
        "--budget-tps",
        type=float,
        default=None,
        help="the provider's token budget per second during the catch-up (a TPM limit / 60; "
        "429s with Retry-After past it), as a real provider's limits bound a catch-up",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--baseline", type=Path, help="a checkout to compare with")
    parser.add_argument("--repeat", type=int, default=1, help="catch-up runs per side")
    args = parser.parse_args()

    server_url, server = start_database()
    stamp = int(time.time())
    built = f"bench_update_{stamp}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(built)))
    fake, base_url = start_fake(0.0)
    try:
        built_url = make_conninfo(server_url, dbname=built)
        prepare(built_url, args.rows, args.seed)
        started = time.perf_counter()
        build = run_worker(built_url, base_url, args.concurrency, REPO)
        print(
            f"rows={args.rows} concurrency={args.concurrency} latency_ms={args.latency_ms} "
            f"budget_tps={args.budget_tps}: "
            f"built in {time.perf_counter() - started:.1f}s ({build.inputs} chunks embedded)"
        )
        labels = ["after", "before"] if args.baseline else ["after"]
        rounds = []  # per repeat: label -> database
        for r in range(args.repeat):
            rounds.append(
                {label: clone(server_url, built, f"{built}_{label}{r}") for label in labels}
            )
        edited = 0
        for clones in rounds:
            for url in clones.values():
                edited = edit_rows(url, args.seed)
        # the provider as the catch-ups meet it (the build above ran at full speed)
        provider = {"latency": args.latency_ms / 1000, "budget_tps": args.budget_tps}
        print(f"edited rows: {edited} (id % 10 = 0: the first paragraph replaced by a new one)")
        print("catching up (runs alternate, so machine load hits both sides alike):")
        runs: dict[str, list[Run]] = {label: [] for label in labels}
        for r, clones in enumerate(rounds):
            for label in labels if r % 2 == 0 else labels[::-1]:
                code = args.baseline if label == "before" else REPO
                assert code is not None
                runs[label].append(
                    run_worker(clones[label], base_url, args.concurrency, code, provider)
                )
                report(label, runs[label][-1])
        first = rounds[0]
        reused = re.search(r"reused_same_row=(\d+)", runs["after"][0].log)
        print(
            f"  chunks of the edited rows after the edit: {edited_chunks(first['after'])}, "
            f"of which already stored for their row: {reused.group(1) if reused else '?'}"
        )
        if args.baseline:
            after = statistics.median(run.seconds for run in runs["after"])
            before = statistics.median(run.seconds for run in runs["before"])
            inputs = runs["after"][0].inputs / runs["before"][0].inputs
            same = store_digest(first["after"]) == store_digest(first["before"])
            print(
                f"  inputs sent {inputs:.1%} of before; median catch-up {after:.2f}s vs "
                f"{before:.2f}s = {after / before:.1%} of before; stores identical: {same}"
            )
            if not same:
                raise SystemExit("the stores differ: reuse changed the result")
        print("same UPDATE again, keys queued anyway:")
        for label, url in first.items():
            versions = tuple_versions(url)
            queued = touch_again(url)
            code = args.baseline if label == "before" else REPO
            assert code is not None
            run = run_worker(url, base_url, args.concurrency, code, provider)
            untouched = tuple_versions(url) == versions
            report(label, run)
            print(f"  {'':<9} {queued} keys queued; store untouched (no row written): {untouched}")
    finally:
        fake.terminate()
        fake.wait()
    del server


if __name__ == "__main__":
    main()
