"""`vectorizer status` and `vectorizer retry-failed`: the operator's view of a database."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

import psycopg
from psycopg.rows import dict_row

# A worker is alive while its last heartbeat is younger than this many expected intervals.
STALE_AFTER_INTERVALS = 3
STALE_SLACK = timedelta(seconds=30)

VECTORIZER_QUERY = """
select id, name, source_table, disabled, pending_items_estimate, failed_items,
       oldest_pending_age, source_rows, embedded_rows, errors_last_hour,
       last_error_at, last_error_message, last_success_at, index_state
from ai.vectorizer_status order by id
"""

WORKER_QUERY = """
select id, version, started, last_heartbeat, expected_heartbeat_interval,
       success_count, error_count, last_error_message, now() as now
from ai.vectorizer_worker_process
where last_heartbeat > now() - interval '1 day'
order by last_heartbeat desc
limit 20
"""


@dataclass(frozen=True)
class Snapshot:
    vectorizers: list[dict[str, Any]]
    workers: list[dict[str, Any]]


def snapshot(conn: psycopg.Connection) -> Snapshot:
    with conn.cursor(row_factory=dict_row) as cursor:
        vectorizers = cursor.execute(VECTORIZER_QUERY).fetchall()
        workers = cursor.execute(WORKER_QUERY).fetchall()
    return Snapshot(vectorizers, workers)


def worker_alive(worker: dict[str, Any]) -> bool:
    allowed = worker["expected_heartbeat_interval"] * STALE_AFTER_INTERVALS + STALE_SLACK
    age: timedelta = worker["now"] - worker["last_heartbeat"]
    return age <= allowed


def _age(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _since(moment: datetime | None, now: datetime) -> str:
    return "-" if moment is None else f"{_age(now - moment)} ago"


def _coverage(row: dict[str, Any]) -> str:
    source, embedded = row["source_rows"], row["embedded_rows"]
    if source is None or embedded is None:
        return "-"
    share = f" ({embedded / source:.0%})" if source else ""
    return f"{embedded}/{source}{share}"


def _index_state(state: str | None) -> str:
    # a failure's reason is long: the table shows the word, the line below it the reason
    return "-" if state is None else state.split(":", 1)[0]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return [line, *body]


def render(data: Snapshot, now: datetime) -> str:
    lines = ["Vectorizers"]
    rows = []
    for v in data.vectorizers:
        rows.append(
            [
                str(v["id"]),
                v["name"] + (" (disabled)" if v["disabled"] else ""),
                "-" if v["pending_items_estimate"] is None else str(v["pending_items_estimate"]),
                _age(v["oldest_pending_age"]),
                "-" if v["failed_items"] is None else str(v["failed_items"]),
                _coverage(v),
                str(v["errors_last_hour"] or 0),
                _since(v["last_success_at"], now),
                _index_state(v.get("index_state")),
            ]
        )
    lines += [
        "  " + line
        for line in _table(
            [
                "id",
                "name",
                "pending",
                "oldest",
                "failed",
                "embedded/source",
                "errors 1h",
                "last success",
                "index",
            ],
            rows,
        )
    ]
    for v in data.vectorizers:
        if str(v.get("index_state") or "").startswith("failed:"):
            lines.append(f"  ! {v['name']}: vector index {v['index_state']}"[:200])
        if v["errors_last_hour"] and v["last_error_message"]:
            message = " ".join(str(v["last_error_message"]).split())[:160]
            lines.append(f"  ! {v['name']}: {message}")
    if not data.vectorizers:
        lines.append("  (no vectorizers)")
    lines += ["", "Workers (last 24h)"]
    worker_rows = [
        [
            str(w["id"]).split("-")[0],
            w["version"],
            "alive" if worker_alive(w) else "stale",
            _since(w["last_heartbeat"], w["now"]),
            str(w["success_count"]),
            str(w["error_count"]),
        ]
        for w in data.workers
    ]
    lines += [
        "  " + line
        for line in _table(
            ["worker", "version", "state", "heartbeat", "successes", "errors"], worker_rows
        )
    ]
    if not data.workers:
        lines.append("  (no worker has reported)")
    return "\n".join(lines)


def show_status(db_url: str, out: TextIO, watch: float | None = None) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            data = snapshot(conn)
            now = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
            text = render(data, now)
            if watch:
                out.write("\x1b[H\x1b[2J")  # clear the terminal between refreshes
            out.write(text + "\n")
            out.flush()
            if not watch:
                return
            time.sleep(watch)


def retry_failed(db_url: str, vectorizer: str) -> int:
    """Requeues the failed keys of a vectorizer (id or name); returns how many."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        if vectorizer.isdigit():
            exists = conn.execute(
                "select 1 from ai.vectorizer where id = %s", (int(vectorizer),)
            ).fetchone()
            if not exists:
                raise LookupError(f"no vectorizer with id {vectorizer}")
            row = conn.execute("select ai.retry_failed(%s::int4)", (int(vectorizer),)).fetchone()
        else:
            row = conn.execute("select ai.retry_failed(%s::text)", (vectorizer,)).fetchone()
            if row is None or row[0] is None:
                raise LookupError(f"no vectorizer named {vectorizer!r}")
    assert row is not None
    return int(row[0])
