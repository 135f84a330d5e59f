"""The worker's live status page: `/status.json` read over real HTTP from a real worker
subprocess, and `/` loaded in a real headless Chromium (Selenium + Debian's chromedriver): the
page shows the served vectorizers, its chart follows rows being embedded, no console errors."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import browser
from tests.fake_openai import FakeOpenAI
from tests.test_observability import daemon_flags, free_port, http_get
from tests.worker_helpers import (
    create_source,
    create_vectorizer,
    daemon,
    doc_rows,
    error_rows,
    failed_rows,
    insert_rows,
    store_rows,
    wait_for,
    worker_env,
)

WRONG_KEY = "sk-wrongkey-status-0123456789abcdefWRONG"
GOOD_KEY = "sk-goodkey-status-0123456789abcdefGOOD"
HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">'


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def status_json(port: int) -> dict:
    status, body = http_get(port, "/status.json")
    assert status == 200, body
    return json.loads(body)


def test_status_json_shows_served_vectorizers_errors_with_step_and_key_and_no_secrets(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI
) -> None:
    fake.configure(api_key=GOOD_KEY)
    create_source(conn, "good_docs", [*doc_rows(4), (5, "p", "a POISON row")])
    create_source(conn, "bad_docs", doc_rows(2))
    create_source(conn, "other_docs", doc_rows(2))
    good = create_vectorizer(
        conn, "good_docs", name="good_vec", loading="ai.loading_column('body', retries => 0)"
    )
    bad = create_vectorizer(conn, "bad_docs", name="bad_vec", api_key_name="WRONG_OPENAI_KEY")
    create_vectorizer(conn, "other_docs", name="other_vec")
    port = free_port()
    flags = daemon_flags(port, "-i", "good_vec", "-i", "bad_vec")
    env = worker_env(fake, api_key=GOOD_KEY, WRONG_OPENAI_KEY=WRONG_KEY)
    with daemon(db_url, *flags, env=env):
        wait_for(lambda: failed_rows(conn, good) and error_rows(conn, bad), 20, what="errors")
        wait_for(lambda: len(store_rows(conn, "good_docs_embedding_store")) == 4, 20, what="rows")

        def settled() -> dict | None:
            data = status_json(port)
            states = {v["name"]: v["state"] for v in data["vectorizers"]}
            return data if states == {"good_vec": "idle", "bad_vec": "failing"} else None

        data = wait_for(settled, 20, interval=0.2, what="both vectorizers' states")
        page_status, page = http_get(port, "/")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/status.json", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)

    assert refused.value.code == 405  # read-only
    assert page_status == 200 and "<svg" in page and "status.json" in page
    # no CDN, nothing external: every referenced resource is inline
    assert all(ref.startswith("data:") for ref in re.findall(r'(?:src|href)="([^"]*)"', page))
    assert "<script src" not in page and "@import" not in page

    assert data["worker"]["serves"] == sorted([good, bad])
    assert data["worker"]["health"]["status"] == "ok"
    by_name = {v["name"]: v for v in data["vectorizers"]}
    assert set(by_name) == {"good_vec", "bad_vec"}
    assert by_name["good_vec"]["failed_items"] == 1
    assert by_name["good_vec"]["embedded_rows"] == 4 and by_name["good_vec"]["source_rows"] == 5
    assert by_name["bad_vec"]["pending_items_estimate"] == 2
    assert isinstance(by_name["bad_vec"]["oldest_pending_age"], float)

    poison = [e for e in data["errors"] if e["name"] == "good_vec"]
    assert poison and poison[0]["step"] == "embedding" and poison[0]["key"] == {"id": 5}
    failing = [e for e in data["errors"] if e["name"] == "bad_vec"]
    assert failing and failing[0]["message"] == "embedding provider failed"
    assert {e["name"] for e in data["errors"]} == {"good_vec", "bad_vec"}

    rates = data["throughput"]["chunks_per_second"]
    assert set(rates) == {"good_vec", "bad_vec"}
    assert sum(rates["good_vec"]) * data["throughput"]["bucket_seconds"] == pytest.approx(4)

    text = json.dumps(data)
    assert WRONG_KEY not in text and WRONG_KEY[:14] not in text and GOOD_KEY not in text
    assert db_url not in text and "host=" not in text


def _console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_status_page_in_a_headless_browser_follows_the_worker(
    conn: psycopg.Connection, db_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    problem = browser.missing()
    assert problem is None, problem  # CI installs them (.ci/run)
    from selenium.webdriver.common.by import By

    create_source(conn, "Odd Docs", doc_rows(3))
    create_vectorizer(conn, '"Odd Docs"', name="odd_docs_vec")
    create_source(conn, "notes")
    notes = create_vectorizer(conn, "notes", name="notes_vec")
    # an error text that is markup: the page must show it, never run it
    conn.execute(
        "insert into ai._vectorizer_errors (id, message, details) values (%s, %s, %s)",
        (notes, HOSTILE, json.dumps({"step": "formatting", "pk": {"id": "<b>1</b>"}})),
    )
    port = free_port()
    with daemon(db_url, *daemon_flags(port), env=worker_env(fake)), browser.chromium() as driver:
        wait_for(lambda: http_get(port, "/healthz")[0] == 200, 20, what="the worker's server")
        driver.get(f"http://127.0.0.1:{port}/")

        def names() -> set[str]:
            return set(
                driver.execute_script(
                    "return [...document.querySelectorAll('#vectorizers tr[data-vectorizer]')]"
                    ".map((row) => row.dataset.vectorizer)"
                )
            )

        def cell(vectorizer: str, field: str) -> dict[str, str] | None:
            """One table cell's text, class and title, read in one go (the page redraws)."""
            return driver.execute_script(
                "const c = document.querySelector("
                "`tr[data-vectorizer='${arguments[0]}'] [data-field='${arguments[1]}']`);"
                "return c && {text: c.textContent, cls: c.className, title: c.title};",
                vectorizer,
                field,
            )

        wait_for(
            lambda: names() == {"odd_docs_vec", "notes_vec"},
            20,
            interval=0.2,
            what="both vectorizers on the page",
        )
        chart = driver.find_element(By.ID, "chart")
        wait_for(
            lambda: chart.get_attribute("data-chunks") == "3",
            30,
            interval=0.3,
            what="the chart to show the backfill's 3 chunks",
        )
        assert driver.find_element(By.ID, "worker-health").text == "ok"
        assert cell("notes_vec", "backlog")["text"] == "0"
        seen: list[str | None] = []

        def reuse_text() -> str | None:
            seen.append((cell("odd_docs_vec", "reuse") or {}).get("text"))
            return seen[-1]

        try:
            wait_for(lambda: reuse_text() == "0 reused / 3 embedded", 30, interval=0.3)
        except AssertionError as exc:
            raise AssertionError(f"reuse counts never shown; the cell showed {set(seen)}") from exc
        assert cell("notes_vec", "reuse")["text"] == "0 reused / 0 embedded"  # nothing yet
        assert cell("notes_vec", "index")["cls"] != "pending-feature"  # ai.vectorizer_status has it

        insert_rows(conn, "notes", doc_rows(7))
        wait_for(
            lambda: chart.get_attribute("data-chunks") == "10",
            30,
            interval=0.3,
            what="the chart to follow 7 more chunks",
        )
        lines = driver.find_elements(By.CSS_SELECTOR, "#chart polyline")
        assert {line.get_attribute("data-vectorizer") for line in lines} == {
            "odd_docs_vec",
            "notes_vec",
        }
        wait_for(
            lambda: (cell("notes_vec", "coverage") or {}).get("text") == "7/7 (100%)",
            60,  # the page re-reads the database every 1-10 s, depending on its speed
            interval=0.3,
            what="coverage of notes_vec",
        )
        error_cells = driver.execute_script(
            "return [...document.querySelectorAll('#errors tbody td')].map((c) => c.textContent)"
        )
        assert HOSTILE in error_cells and "formatting" in error_cells
        assert '{"id":"<b>1</b>"}' in error_cells
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-pwned") is None
        assert driver.find_elements(By.CSS_SELECTOR, "#errors img, #errors b") == []
        refreshes = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-refreshes"))
        assert refreshes >= 2  # it polls by itself
        driver.save_screenshot(str(tmp_path / "status-page.png"))
        assert (tmp_path / "status-page.png").stat().st_size > 0
        assert _console_errors(driver) == []
