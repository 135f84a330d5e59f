"""A randomized interleaving of source-table writes with a running daemon worker, ending with
a comparison of its store against a fresh build of the final table (issue 18).

Used by tests/test_interleaving.py (bounded, in CI) and bench/interleaving.py (as long as you
like). One connection writes at random: inserts, text updates, title-only updates, single and
ranged deletes, single and bulk key changes, delete-then-reinsert of one key inside a
transaction held open for a moment, rolled-back deletes, and a rare TRUNCATE; meanwhile the
daemon (4 executors, small batches, a provider with latency) embeds. Afterwards the queue is
drained, the daemon stopped, a copy of the final table embedded from scratch, and the two
stores compared row for row.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from tests.fake_openai import FakeOpenAI
from tests.worker_helpers import (
    count,
    create_vectorizer,
    daemon,
    run_ok,
    store_rows,
    terminate,
    wait_for,
    worker_env,
)

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")
CHUNKING = "ai.chunking_character_text_splitter(24, 0, ' ')"
PROCESSING = "ai.processing_default(batch_size => 5)"
REKEY_OFFSET = 1_000_000
_RECHECK_LOG = re.compile(r"(\d+) row\(s\) deleted or re-keyed during the batch, (\d+) busy")


@dataclass
class Report:
    seed: int
    seconds: float
    operations: Counter[str] = field(default_factory=Counter)
    final_rows: int = 0
    stored_chunks: int = 0
    orphan_keys: list[Any] = field(default_factory=list)
    mismatched_keys: list[Any] = field(default_factory=list)
    failed_keys: int = 0
    error_rows: int = 0
    gone_at_write: int = 0
    busy_at_write: int = 0
    drain_seconds: float = 0.0

    def summary(self) -> str:
        ops = " ".join(f"{name}={n}" for name, n in sorted(self.operations.items()))
        return (
            f"seed={self.seed} mutate={self.seconds:.0f}s ops[{ops}] final_rows={self.final_rows} "
            f"chunks={self.stored_chunks} gone_at_write={self.gone_at_write} "
            f"busy_at_write={self.busy_at_write} drain={self.drain_seconds:.1f}s "
            f"orphans={len(self.orphan_keys)} mismatched={len(self.mismatched_keys)} "
            f"failed={self.failed_keys} errors={self.error_rows}"
        )


class Mutator:
    """Random writes to `docs(id, title, body)` on one autocommit connection."""

    def __init__(
        self, conn: psycopg.Connection, rng: random.Random, next_id: int, queue: str
    ) -> None:
        self._conn = conn
        self._queue = sql.Identifier("ai", queue)
        self._rng = rng
        self._next_id = next_id
        # keys written lately: most deletes and key changes hit one, as they do in real life,
        # so they land while its batch is in flight
        self._recent: deque[int] = deque(maxlen=30)
        self.operations: Counter[str] = Counter()
        # off for the second half of a run: a TRUNCATE wipes every orphan made before it
        self.allow_truncate = True
        self._choices: list[tuple[Callable[[], None], int]] = [
            (self.insert, 30),
            (self.update_body, 25),
            (self.update_title, 5),
            (self.delete_one, 15),
            (self.delete_range, 3),
            (self.rekey_one, 12),
            (self.rekey_many, 2),
            (self.delete_and_reinsert, 8),
            (self.rolled_back_delete, 4),
            (self.truncate, 1),
        ]

    def body(self) -> str:
        return " ".join(self._rng.choice(WORDS) for _ in range(self._rng.randint(1, 9)))

    def step(self) -> None:
        actions, weights = zip(*self._choices, strict=True)
        action = self._rng.choices(actions, weights)[0]
        if action == self.truncate and not self.allow_truncate:
            action = self.insert
        action()
        self.operations[action.__name__] += 1

    def _some_id(self) -> int | None:
        dice = self._rng.random()
        if dice < 0.4:
            # queued keys, including those a batch has claimed but not committed yet
            query = sql.SQL("select id from {} order by random() limit 1").format(self._queue)
        elif dice < 0.7 and self._recent:
            return self._rng.choice(self._recent)
        else:
            query = sql.SQL("select id from docs order by random() limit 1")
        row = self._conn.execute(query).fetchone()
        return None if row is None else int(row[0])

    def _new_id(self) -> int:
        self._next_id += 1
        self._recent.append(self._next_id)
        return self._next_id

    def insert(self) -> None:
        self._conn.execute("insert into docs values (%s, 't', %s)", (self._new_id(), self.body()))

    def update_body(self) -> None:
        key = self._some_id()
        self._conn.execute("update docs set body = %s where id = %s", (self.body(), key))
        if key is not None:
            self._recent.append(key)

    def update_title(self) -> None:
        self._conn.execute("update docs set title = title || 'x' where id = %s", (self._some_id(),))

    def delete_one(self) -> None:
        self._conn.execute("delete from docs where id = %s", (self._some_id(),))

    def delete_range(self) -> None:
        first = self._some_id() or 0
        self._conn.execute("delete from docs where id between %s and %s", (first, first + 4))

    def rekey_one(self) -> None:
        self._conn.execute(
            "update docs set id = %s where id = %s", (self._new_id(), self._some_id())
        )

    def rekey_many(self) -> None:
        # several rows change key in one statement, new keys far away from the old ones
        modulus = self._rng.randint(5, 9)
        self._conn.execute(
            "update docs set id = id + %(offset)s where id %% %(modulus)s = 0 and id < %(offset)s"
            " and not exists (select 1 from docs d where d.id = docs.id + %(offset)s)",
            {"offset": REKEY_OFFSET, "modulus": modulus},
        )

    def delete_and_reinsert(self) -> None:
        key = self._some_id()
        if key is None:
            return
        with self._conn.transaction():
            self._conn.execute("delete from docs where id = %s", (key,))
            time.sleep(self._rng.uniform(0.0, 0.3))  # the batch meets a busy row
            self._conn.execute("insert into docs values (%s, 't', %s)", (key, self.body()))

    def rolled_back_delete(self) -> None:
        first = self._some_id() or 0
        with self._conn.transaction(force_rollback=True):
            self._conn.execute("delete from docs where id between %s and %s", (first, first + 2))
            time.sleep(self._rng.uniform(0.0, 0.2))

    def truncate(self) -> None:
        with self._conn.transaction():
            self._conn.execute("truncate docs")
            for _ in range(100):
                self.insert()


def _store_by_key(conn: psycopg.Connection, table: str) -> dict[Any, list[tuple[Any, ...]]]:
    by_key: dict[Any, list[tuple[Any, ...]]] = {}
    for key, seq, chunk, embedding in store_rows(conn, table):
        by_key.setdefault(key, []).append((seq, chunk, [float(x) for x in embedding]))
    return by_key


def _fresh_build(conn: psycopg.Connection, db_url: str, fake: FakeOpenAI) -> None:
    conn.execute("create table fresh (id int primary key, title text, body text)")
    conn.execute("insert into fresh select id, title, body from docs")
    create_vectorizer(conn, "fresh", name="fresh", chunking=CHUNKING)
    run_ok(db_url, "--vectorizer-id", "fresh", env=worker_env(fake))


def run(
    conn: psycopg.Connection,
    db_url: str,
    fake: FakeOpenAI,
    *,
    seconds: float,
    seed: int,
    rows: int = 200,
    latency: float = 0.2,
    drain_timeout: float = 120.0,
) -> Report:
    """The whole scenario on an installed, empty database; `conn` is autocommit."""
    rng = random.Random(seed)
    report = Report(seed=seed, seconds=seconds)
    conn.execute("create table docs (id int primary key, title text, body text)")
    vid = create_vectorizer(conn, name="docs", chunking=CHUNKING, processing=PROCESSING)
    mutator = Mutator(conn, rng, next_id=rows, queue=f"_vectorizer_q_{vid}")
    with conn.cursor() as cursor:
        cursor.executemany(
            "insert into docs values (%s, 't', %s)", [(i, mutator.body()) for i in range(rows)]
        )
    fake.configure(latency=latency)
    flags = ("--vectorizer-id", "docs", "--concurrency", "4", "--poll-interval", "0.2")
    with daemon(db_url, *flags, env=worker_env(fake)) as handle:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            mutator.allow_truncate = deadline - time.monotonic() > seconds / 2
            mutator.step()
            time.sleep(rng.uniform(0.0, 0.01))
        started = time.monotonic()
        wait_for(
            lambda: count(conn, f"ai._vectorizer_q_{vid}") == 0,
            drain_timeout,
            interval=0.2,
            what="the queue to drain",
        )
        report.drain_seconds = time.monotonic() - started
        code, _ = terminate(handle, timeout=30)
        assert code == 0, handle.stderr()
        for gone, busy in _RECHECK_LOG.findall(handle.stderr()):
            report.gone_at_write += int(gone)
            report.busy_at_write += int(busy)
    report.operations = mutator.operations
    fake.configure(latency=0.0)
    _fresh_build(conn, db_url, fake)
    _compare(conn, vid, report)
    return report


def _compare(conn: psycopg.Connection, vid: int, report: Report) -> None:
    actual = _store_by_key(conn, "docs_embedding_store")
    expected = _store_by_key(conn, "fresh_embedding_store")
    source_keys = {key for (key,) in conn.execute("select id from docs").fetchall()}
    report.final_rows = len(source_keys)
    report.stored_chunks = sum(len(chunks) for chunks in actual.values())
    report.orphan_keys = sorted(set(actual) - source_keys)
    report.mismatched_keys = sorted(
        key for key in set(actual) | set(expected) if actual.get(key) != expected.get(key)
    )
    report.failed_keys = count(conn, f"ai._vectorizer_q_failed_{vid}")
    report.error_rows = count(conn, "ai._vectorizer_errors", f"id = {int(vid)}")
