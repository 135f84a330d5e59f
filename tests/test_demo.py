"""`vectorizer demo` end to end, as a newcomer runs it: offline, no Postgres, no API key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

DEMO_BUDGET_SECONDS = 120


def _run_demo(data_home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI", "DATABASE_URL", "VECTORIZER_"))
    }
    env["XDG_DATA_HOME"] = str(data_home)
    env["HF_HUB_OFFLINE"] = "1"
    # a proxy that refuses everything: any network attempt fails instead of going out
    env["HTTPS_PROXY"] = env["HTTP_PROXY"] = "http://127.0.0.1:9"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "vectorizer", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_BUDGET_SECONDS + 60,
    )
    return result, time.monotonic() - started


def _top_hit(output: str, query: str) -> str:
    block = output.split(f'search: "{query}"', 1)[1]
    first = block.strip().splitlines()[0]
    match = re.match(r"\s*(\d\.\d{3})\s+(.+?)\s+\[", first)
    assert match, first
    return match.group(2)


def test_demo_embeds_the_articles_and_answers_queries(tmp_path: Path) -> None:
    result, seconds = _run_demo(tmp_path, "--fresh")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "loaded 240 articles" in out
    assert "240/240 rows" in out
    assert seconds < DEMO_BUDGET_SECONDS, f"demo took {seconds:.0f}s"
    # the nearest chunks are the articles written about each query's subject
    assert "Coral" in _top_hit(out, "what happens to coral when the ocean warms")
    assert "Index Funds" in _top_hit(out, "saving money for retirement with index funds")
    assert "Traffic" in _top_hit(out, "riding a bike safely in heavy city traffic")
    assert "psql -h" in out and "select * from ai.vectorizer_status" in out
    assert (tmp_path / "vectorizer" / "demo" / "pgdata" / "PG_VERSION").exists()

    # the second run reuses the database: nothing left to embed, the searches still work
    again, _ = _run_demo(tmp_path)
    assert again.returncode == 0, again.stderr
    assert "loaded 240 articles" not in again.stdout
    assert "every article is already embedded" in again.stdout
    assert "Coral" in _top_hit(again.stdout, "what happens to coral when the ocean warms")
