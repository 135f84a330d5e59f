"""The chaos suite (bench/chaos.py) at CI size: kills, a Postgres restart, rival workers,
provider storms and hopeless runs. Each scenario checks the store itself (every row exactly its
chunks, every vector its chunk's, queue and failed queue empty) and raises on any difference;
the figures it returns are checked here where a bound is part of the promise."""

from __future__ import annotations

import pytest

from bench import chaos
from tests.worker_helpers import REPO_ROOT

pytestmark = pytest.mark.chaos


def test_sigkills_during_a_backfill_lose_and_duplicate_nothing(db_url: str) -> None:
    figures = chaos.sigkill(db_url, REPO_ROOT, rows=300, kills=3)
    print(figures)
    assert figures["kills"] >= 1
    # a kill costs at most the batches in hand: 2 executors x 20 rows x 4 chunks per kill
    assert figures["waste"] <= 1 + figures["kills"] * 160 / figures["chunks"]


def test_four_workers_embed_each_chunk_once(db_url: str) -> None:
    figures = chaos.rival_workers(db_url, REPO_ROOT, rows=600, workers=4)
    print(figures)
    assert figures["waste"] == 1.0


def test_a_provider_storm_still_lands_every_row(db_url: str) -> None:
    figures = chaos.storms(db_url, REPO_ROOT, rows=150)
    print(figures)
    assert figures["failed_requests"] > 0  # the storm really happened


def test_hopeless_runs_exit_1_with_one_error_row_and_nothing_charged(db_url: str) -> None:
    figures = chaos.hopeless(db_url, REPO_ROOT, rows=20, retry_budget="5")
    print(figures)
    assert (figures["outage_exit"], figures["config_exit"]) == (1, 1)


def test_the_daemon_reconnects_after_postgres_restarts() -> None:
    figures = chaos.postgres_restart(REPO_ROOT, rows=400, down_seconds=2.0)
    print(figures)
    assert figures["recovery_s"] < 60
