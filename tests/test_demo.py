"""`vectorizer demo` end to end, as a newcomer runs it: offline, no Postgres, no API key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

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


@pytest.mark.timeout(900)  # behaviour, not speed: the budget is the first test's business
def test_demo_serve_embeds_edits_live_and_stops_postgres_on_sigterm() -> None:
    with tempfile.TemporaryDirectory(prefix="vectorizer-demo-") as data_home:
        # outside pytest's private (0700) tmp tree: the embedded server runs as its own user
        os.chmod(data_home, 0o755)
        _serve_demo(Path(data_home))


def _serve_demo(tmp_path: Path) -> None:
    import json
    import signal
    import socket
    import urllib.request

    import psycopg

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI", "DATABASE_URL", "VECTORIZER_", "PGAI_"))
    }
    env.update(
        XDG_DATA_HOME=str(tmp_path),
        HF_HUB_OFFLINE="1",
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
        VECTORIZER_METRICS_PORT=str(port),
    )
    demo = subprocess.Popen(
        [sys.executable, "-m", "vectorizer", "demo", "--fresh", "--serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 600
        while not any(line.startswith("  export VECTORIZER_DB_URL=") for line in lines):
            line = demo.stdout.readline()  # type: ignore[union-attr]
            assert line, "the demo exited: " + "".join(lines) + demo.stderr.read()  # type: ignore[union-attr]
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        export = next(line for line in lines if line.startswith("  export VECTORIZER_DB_URL="))
        db_url = export.split("=", 1)[1].strip().strip("'")

        # the printed URL works for the other commands
        status = subprocess.run(
            [sys.executable, "-m", "vectorizer", "status"],
            env={**env, "VECTORIZER_DB_URL": db_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert "demo_articles" in status.stdout

        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "insert into articles values (1000, 'My note', 'misc',"
                " 'Postgres keeps my embeddings fresh.')"
            )
            deadline = time.monotonic() + 60
            while not conn.execute("select 1 from articles_embedding where id = 1000").fetchone():
                assert time.monotonic() < deadline, "the edit was not embedded live"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as page:
            served = [v["name"] for v in json.loads(page.read())["vectorizers"]]
        assert served == ["demo_articles"]

        demo.send_signal(signal.SIGTERM)
        out, err = demo.communicate(timeout=30)
        assert demo.returncode == 0, err
        assert "stopped the worker and Postgres" in out
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    # Postgres is down: the URL no longer connects
    try:
        psycopg.connect(db_url, connect_timeout=3).close()
        raise AssertionError("Postgres still answers after SIGTERM")
    except psycopg.OperationalError:
        pass
