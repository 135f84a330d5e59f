"""Randomized interleaving of inserts, updates, deletes, key changes and TRUNCATE with a
daemon worker running 4 executors: the store ends equal to a fresh build of the final table.

Bounded for CI; VECTORIZER_TEST_INTERLEAVING_SECONDS makes it longer and
VECTORIZER_TEST_INTERLEAVING_SEED replays a run (bench/interleaving.py runs it outside pytest).
"""

from __future__ import annotations

import os
import random

import psycopg

from tests import interleaving
from tests.fake_openai import FakeOpenAI

SECONDS = float(os.environ.get("VECTORIZER_TEST_INTERLEAVING_SECONDS", "15"))
SEED = int(os.environ.get("VECTORIZER_TEST_INTERLEAVING_SEED", random.randrange(1 << 30)))


def test_store_equals_a_fresh_build_after_random_interleavings(
    conn: psycopg.Connection, db_url: str, fake_openai: FakeOpenAI
) -> None:
    report = interleaving.run(conn, db_url, fake_openai, seconds=SECONDS, seed=SEED)
    print(report.summary())
    assert report.orphan_keys == [], report.summary()
    assert report.mismatched_keys == [], report.summary()
    assert report.failed_keys == 0 and report.error_rows == 0, report.summary()
    # the run really wrote while batches were in flight, and really deleted and re-keyed
    assert report.gone_at_write + report.busy_at_write > 0, report.summary()
    assert report.operations["delete_one"] and report.operations["rekey_one"], report.summary()
    assert report.final_rows > 0 and report.stored_chunks > 0, report.summary()
