"""`vectorizer status` and `vectorizer retry-failed`: the operator's view of a database."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, TextIO

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from vectorizer import catalog
from vectorizer.version import __version__

# A worker is alive while its last heartbeat is younger than this many expected intervals.
STALE_AFTER_INTERVALS = 3
STALE_SLACK = timedelta(seconds=30)


@dataclass(frozen=True)
class Snapshot:
    vectorizers: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    # vectorizer id -> ai.vectorizer_integrity's counts, or the error that prevented them
    integrity: dict[int, dict[str, Any] | str] | None = None
    # vectorizer id -> (executors over live workers, any of them adaptive)
    concurrency: dict[int, tuple[int, bool]] = field(default_factory=dict)


class SchemaTooOld(RuntimeError):
    """The database's ai schema lacks what this version reads: `vectorizer install` adds it."""


def snapshot(conn: psycopg.Connection, check: bool = False) -> Snapshot:
    try:
        with conn.cursor(row_factory=dict_row) as cursor:
            vectorizers = cursor.execute(catalog.VECTORIZER_STATUS).fetchall()
            workers = cursor.execute(catalog.WORKERS).fetchall()
    except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction) as exc:
        raise SchemaTooOld(
            f"the ai schema in this database is older than vectorizer {__version__} "
            f"({exc.diag.message_primary}): run `vectorizer install` to upgrade it"
        ) from None
    integrity = integrity_counts(conn, [v["id"] for v in vectorizers]) if check else None
    return Snapshot(vectorizers, workers, integrity, concurrency=_concurrency(conn))


def _concurrency(conn: psycopg.Connection) -> dict[int, tuple[int, bool]]:
    try:
        rows = conn.execute(catalog.CONCURRENCY, (STALE_AFTER_INTERVALS, STALE_SLACK)).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege):
        return {}  # a schema from before this table, or a viewer without the grant
    return {row[0]: (row[1], row[2]) for row in rows}


def integrity_counts(
    conn: psycopg.Connection, vectorizer_ids: Sequence[int]
) -> dict[int, dict[str, Any] | str]:
    """Orphan and missing counts per vectorizer; one that cannot be checked gets its error."""
    counts: dict[int, dict[str, Any] | str] = {}
    for vectorizer_id in vectorizer_ids:
        try:
            with conn.cursor(row_factory=dict_row) as cursor:
                counts[vectorizer_id] = (
                    cursor.execute(catalog.INTEGRITY, (vectorizer_id,)).fetchone() or "no answer"
                )
        except psycopg.Error as exc:
            counts[vectorizer_id] = " ".join(str(exc).split())
    return counts


def _render_integrity(data: Snapshot) -> list[str]:
    if data.integrity is None:
        return []
    lines = ["", "Integrity (--check)"]
    rows = []
    for v in data.vectorizers:
        counts = data.integrity.get(v["id"], "not checked")
        if isinstance(counts, str):
            rows.append([str(v["id"]), v["name"], "-", "-", "-", counts[:120]])
            continue
        damaged = counts["orphan_keys"] or counts["missing_rows"]
        rows.append(
            [
                str(v["id"]),
                v["name"],
                str(counts["orphan_keys"]),
                str(counts["orphan_chunks"]),
                str(counts["missing_rows"]),
                f"run: vectorizer repair {v['name']}" if damaged else "ok",
            ]
        )
    headers = ["id", "name", "orphan keys", "orphan chunks", "missing", ""]
    return lines + ["  " + line for line in _table(headers, rows)]


def worker_state(worker: dict[str, Any]) -> str:
    """stopped (exited cleanly), alive (beating), or stale (stopped beating: killed, hung)."""
    if worker.get("stopped_at") is not None:
        return "stopped"
    return "alive" if worker_alive(worker) else "stale"


def worker_alive(worker: dict[str, Any]) -> bool:
    allowed = worker["expected_heartbeat_interval"] * STALE_AFTER_INTERVALS + STALE_SLACK
    age: timedelta = worker["now"] - worker["last_heartbeat"]
    return age <= allowed


def _executors(level: tuple[int, bool] | None) -> str:
    if level is None:
        return "-"
    executors, adaptive = level
    return f"{executors} (adaptive)" if adaptive else str(executors)


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
    share = f" ({percent(embedded, source)})" if source else ""
    return f"{embedded}/{source}{share}"


def percent(part: int, whole: int) -> str:
    """`part` of `whole`, rounded down to 0.1%: 7030 of 7033 is 99.9%, never 100%."""
    if part == whole:
        return "100%"
    tenths = part * 1000 // whole
    return f"{tenths // 10}.{tenths % 10}%"


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


def _reuse_table(vectorizers: Sequence[dict[str, Any]]) -> list[str]:
    rows = []
    for v in vectorizers:
        embedded = v["chunks_embedded"]
        reused = v["chunks_reused_same_row"] + v["chunks_reused_other_row"]
        share = f" ({reused / (reused + embedded):.0%})" if reused + embedded else ""
        rows.append(
            [
                v["name"],
                str(embedded),
                f"{reused}{share}",
                str(v["chunks_reused_same_row"]),
                str(v["chunks_reused_other_row"]),
                str(v["rows_unchanged"]),
                f"~{v['tokens_saved']}",
                "-" if v["chunks_older_config"] is None else str(v["chunks_older_config"]),
            ]
        )
    headers = [
        "name",
        "embedded",
        "reused",
        "same row",
        "other row",
        "unchanged rows",
        "tokens saved",
        "older config",
    ]
    return _table(headers, rows)


def _versions_table(vectorizers: Sequence[dict[str, Any]]) -> list[str]:
    """Config versions (ai.alter_vectorizer) and re-embeds in progress; nothing when every
    vectorizer is still at the config it was created with."""
    altered = [v for v in vectorizers if (v.get("config_version") or 1) > 1]
    if not altered:
        return []
    rows = []
    for v in altered:
        done, total = v.get("reembed_keys_done"), v.get("reembed_keys_total")
        if total is None:
            progress, left = "done", "-"
        else:
            progress = f"{done}/{total} {percent(done or 0, total)}"
            left = _age(v.get("reembed_eta")) if v.get("reembed_eta") is not None else "?"
        rows.append([str(v["id"]), v["name"], str(v["config_version"]), progress, left])
    headers = ["id", "name", "version", "re-embed keys", "time left"]
    return ["", "Config versions", *["  " + line for line in _table(headers, rows)]]


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
                "-" if v["empty_rows"] is None else str(v["empty_rows"]),
                str(v["errors_last_hour"] or 0),
                _since(v["last_success_at"], now),
                _index_state(v.get("index_state")),
                _executors(data.concurrency.get(v["id"])),
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
                "empty",
                "errors 1h",
                "last success",
                "index",
                "executors",
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
    else:
        lines += ["", "Reuse (chunks not sent to the provider)"]
        lines += ["  " + line for line in _reuse_table(data.vectorizers)]
    lines += _versions_table(data.vectorizers)
    lines += ["", "Workers (last 24h)"]
    worker_rows = [
        [
            str(w["id"]).split("-")[0],
            w["version"],
            worker_state(w),
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
    lines += _render_integrity(data)
    return "\n".join(lines)


def show_status(db_url: str, out: TextIO, watch: float | None = None, check: bool = False) -> None:
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        _Interrupts(enabled=bool(watch)) as interrupts,
    ):
        while True:
            data = snapshot(conn, check)
            now = conn.execute(catalog.NOW).fetchone()[0]  # type: ignore[index]
            text = render(data, now)
            if watch:
                out.write("\x1b[H\x1b[2J")  # clear the terminal between refreshes
            out.write(text + "\n")
            out.flush()
            if not watch or interrupts.stop:
                return
            interrupts.sleep(watch)


class _Interrupts:
    """With `--watch`, Ctrl-C while a screen is being read ends the loop once it is drawn: a
    KeyboardInterrupt in the middle of a query would make psycopg cancel it and wait for the
    server (up to 10 s). Ctrl-C between screens, or a second one, interrupts at once."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled and threading.current_thread() is threading.main_thread()
        self._previous: Any = None
        self._sleeping = False
        self.stop = False

    def __enter__(self) -> _Interrupts:
        if self._enabled:
            self._previous = signal.signal(signal.SIGINT, self._interrupted)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._enabled:
            signal.signal(signal.SIGINT, self._previous)

    def sleep(self, seconds: float) -> None:
        self._sleeping = True
        try:
            time.sleep(seconds)
        finally:
            self._sleeping = False

    def _interrupted(self, signum: int, frame: FrameType | None) -> None:
        if self._sleeping or self.stop:
            raise KeyboardInterrupt
        self.stop = True  # no lock taken here: a handler may run inside any code


def retry_failed(db_url: str, vectorizer: str) -> int:
    """Requeues the failed keys of a vectorizer (id or name); returns how many."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        if vectorizer.isdigit():
            exists = conn.execute(catalog.VECTORIZER_EXISTS, (int(vectorizer),)).fetchone()
            if not exists:
                raise LookupError(f"no vectorizer with id {vectorizer}")
            row = conn.execute(catalog.RETRY_FAILED_BY_ID, (int(vectorizer),)).fetchone()
        else:
            row = conn.execute(catalog.RETRY_FAILED_BY_NAME, (vectorizer,)).fetchone()
            if row is None or row[0] is None:
                raise LookupError(f"no vectorizer named {vectorizer!r}")
    assert row is not None
    return int(row[0])


def repair(db_url: str, vectorizer: str) -> dict[str, int]:
    """Deletes a vectorizer's (id or name) orphan store rows and queues its missing rows."""
    argument = sql.SQL("%s::int4" if vectorizer.isdigit() else "%s::text")
    value: int | str = int(vectorizer) if vectorizer.isdigit() else vectorizer
    with psycopg.connect(db_url, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(sql.SQL(catalog.REPAIR).format(argument), (value,)).fetchone()
    assert row is not None
    return {name: int(count) for name, count in row.items()}
