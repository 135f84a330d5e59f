"""The `vectorizer` command group and the `vectorizer-worker` entry point.

Every worker flag has a VECTORIZER_* environment variable; a `.env` file in the working
directory is read first (real environment variables win over it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from vectorizer.version import __version__

if TYPE_CHECKING:
    from vectorizer.settings import WorkerSettings

T = TypeVar("T")
D = TypeVar("D")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def parse_duration(text: str) -> float:
    """'500ms', '5s', '1m30s', '1h', or plain seconds ('2.5') → seconds."""
    value = text.strip().lower().replace(" ", "")
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number of seconds or units ms, s, m, h, d "
            "(e.g. 500ms, 5s, 1m30s)"
        )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}: use true or false")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# pgai's worker variables (read by `python -m pgai`), honoured when ours are not set
PGAI_ENV = {
    "VECTORIZER_ID": "PGAI_VECTORIZER_WORKER_VECTORIZER_IDS",
    "CONCURRENCY": "PGAI_VECTORIZER_WORKER_CONCURRENCY",
    "ONCE": "PGAI_VECTORIZER_WORKER_ONCE",
    "POLL_INTERVAL": "PGAI_VECTORIZER_WORKER_POLL_INTERVAL",
    "EXIT_ON_ERROR": "PGAI_VECTORIZER_WORKER_EXIT_ON_ERROR",
    "LOG_LEVEL": "PGAI_VECTORIZER_WORKER_LOG_LEVEL",
}


def _env_name(name: str) -> str:
    """The variable a setting comes from: VECTORIZER_<name>, else pgai's name when only that
    one is set."""
    ours = f"VECTORIZER_{name}"
    if os.environ.get(ours) in (None, "") and os.environ.get(PGAI_ENV.get(name, ""), "") != "":
        return PGAI_ENV[name]
    return ours


def _env(name: str) -> str | None:
    value = os.environ.get(_env_name(name))
    return value if value not in (None, "") else None


def _db_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-d",
        "--db-url",
        help="database URL (default: $VECTORIZER_DB_URL, else $DATABASE_URL, else libpq defaults)",
    )


# --- install -----------------------------------------------------------------------------


def _install(args: argparse.Namespace) -> int:
    from vectorizer.install import InstallError, install, resolve_db_url

    try:
        changed = install(resolve_db_url(args.db_url))
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # connection failures and SQL errors: say what failed, exit 1
        from vectorizer.observability.logging import redact

        print(f"error: install failed: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return 1
    print(
        f"vectorizer {__version__} installed"
        if changed
        else f"vectorizer {__version__} is already installed"
    )
    return 0


# --- worker ------------------------------------------------------------------------------


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    _db_url_argument(parser)
    parser.add_argument(
        "-i",
        "--vectorizer-id",
        action="append",
        default=None,
        metavar="ID_OR_NAME",
        help="only run these vectorizers (repeatable; ids or names). "
        "Env: VECTORIZER_VECTORIZER_ID, comma-separated. Default: all, rediscovered each cycle",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=positive_int,
        default=None,
        help="executors per vectorizer; overrides processing.concurrency. Default: adaptive "
        "(grows while throughput grows, within --max-connections). Env: VECTORIZER_CONCURRENCY",
    )
    parser.add_argument(
        "--max-connections",
        type=positive_int,
        default=None,
        help="database connections this worker may open; the adaptive concurrency of all "
        "vectorizers shares them, 3 kept for bookkeeping (default 15). "
        "Env: VECTORIZER_MAX_CONNECTIONS",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        default=None,
        help="process every queue until empty, then exit (implies --exit-on-error=true). "
        "Env: VECTORIZER_ONCE",
    )
    parser.add_argument(
        "--poll-interval",
        type=parse_duration,
        default=None,
        help="fallback wake-up interval and heartbeat period, e.g. 500ms, 5s, 1m "
        "(default 5s). Env: VECTORIZER_POLL_INTERVAL",
    )
    parser.add_argument(
        "--exit-on-error",
        type=parse_bool,
        default=None,
        metavar="BOOL",
        help="exit with status 1 on the first error (default: true with --once, else false). "
        "Env: VECTORIZER_EXIT_ON_ERROR",
    )
    parser.add_argument(
        "--retry-backoff",
        type=parse_duration,
        default=None,
        help="first backoff of a row that failed (doubles per attempt; default 3m). "
        "Env: VECTORIZER_RETRY_BACKOFF",
    )
    parser.add_argument(
        "--retry-backoff-max",
        type=parse_duration,
        default=None,
        help="cap of a failed row's backoff (default 1h). Env: VECTORIZER_RETRY_BACKOFF_MAX",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        default=None,
        choices=["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL"],
        help="default INFO. Env: VECTORIZER_LOG_LEVEL",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="default text. Env: VECTORIZER_LOG_FORMAT",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve the status page (/), /status.json, Prometheus /metrics and /healthz on "
        "this port (default: off). Env: VECTORIZER_METRICS_PORT",
    )
    parser.add_argument(
        "--metrics-host",
        default=None,
        help="address that server binds (default 127.0.0.1; 0.0.0.0 in containers). "
        "Env: VECTORIZER_METRICS_HOST",
    )
    parser.add_argument(
        "--health-stuck-after",
        type=parse_duration,
        default=None,
        help="/healthz fails when work is pending and nothing progressed for this long "
        "(default 5m). Env: VECTORIZER_HEALTH_STUCK_AFTER",
    )


def _setting(value: T | None, env_name: str, convert: Callable[[str], T], default: D) -> T | D:
    """The flag's value, else VECTORIZER_<env_name> converted, else the default."""
    if value is not None:
        return value
    raw = _env(env_name)
    if raw is None:
        return default
    try:
        return convert(raw)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise SystemExit(f"error: {_env_name(env_name)}: {exc}") from None


def worker_settings(args: argparse.Namespace) -> WorkerSettings:
    from vectorizer.backoff import Backoff
    from vectorizer.install import resolve_db_url
    from vectorizer.settings import WorkerSettings

    default = WorkerSettings(db_url="")  # the defaults are written there, once

    ids = args.vectorizer_id
    if ids is None and _env("VECTORIZER_ID"):
        # ours is comma-separated, pgai's (a click list) space-separated: accept both
        ids = (_env("VECTORIZER_ID") or "").replace(",", " ").split()
    row_retry = Backoff(
        _setting(args.retry_backoff, "RETRY_BACKOFF", parse_duration, default.row_retry.base),
        _setting(
            args.retry_backoff_max, "RETRY_BACKOFF_MAX", parse_duration, default.row_retry.cap
        ),
    )
    return WorkerSettings(
        db_url=resolve_db_url(args.db_url),
        vectorizer_ids=list(ids or []),
        concurrency=_setting(args.concurrency, "CONCURRENCY", positive_int, None),
        max_connections=_setting(
            args.max_connections, "MAX_CONNECTIONS", positive_int, default.max_connections
        ),
        once=_setting(args.once, "ONCE", parse_bool, default.once),
        poll_interval=_setting(
            args.poll_interval, "POLL_INTERVAL", parse_duration, default.poll_interval
        ),
        exit_on_error=_setting(args.exit_on_error, "EXIT_ON_ERROR", parse_bool, None),
        row_retry=row_retry,
        metrics_port=_setting(args.metrics_port, "METRICS_PORT", int, default.metrics_port),
        metrics_host=_setting(args.metrics_host, "METRICS_HOST", str, default.metrics_host),
        stuck_after=_setting(
            args.health_stuck_after, "HEALTH_STUCK_AFTER", parse_duration, default.stuck_after
        ),
    )


def _worker(args: argparse.Namespace) -> int:
    from vectorizer import allocator, collector, lean_imports
    from vectorizer.observability.logging import LEVELS, configure_logging
    from vectorizer.worker import run_worker

    level = str(_setting(args.log_level, "LOG_LEVEL", str.upper, "INFO"))
    fmt = str(_setting(args.log_format, "LOG_FORMAT", str.lower, "text"))
    if level not in LEVELS or fmt not in ("text", "json"):
        print(f"error: invalid log level {level!r} or format {fmt!r}", file=sys.stderr)
        return 2
    configure_logging(level, fmt)
    allocator.tune()
    collector.tune()
    lean_imports.skip_httpx_cli()
    lean_imports.single_threaded_blas()
    settings = worker_settings(args)
    if settings.once and sys.stderr.isatty():
        settings.progress_out = sys.stderr  # plain log lines only when not on a terminal
    return asyncio.run(run_worker(settings))


# --- operating ---------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from vectorizer.install import resolve_db_url
    from vectorizer.status import show_status

    try:
        show_status(resolve_db_url(args.db_url), sys.stdout, watch=args.watch, check=args.check)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        return _fail(exc)
    return 0


def _retry_failed(args: argparse.Namespace) -> int:
    from vectorizer.status import retry_failed

    return _on_vectorizer(
        args,
        retry_failed,
        lambda moved: f"requeued {moved} failed key(s) of vectorizer {args.vectorizer}",
    )


def _repair(args: argparse.Namespace) -> int:
    from vectorizer.status import repair

    return _on_vectorizer(
        args,
        repair,
        lambda done: (
            f"vectorizer {args.vectorizer}: deleted {done['orphan_chunks']} orphan chunk(s) of "
            f"{done['orphan_keys']} key(s) without a source row; queued {done['queued_rows']} "
            "row(s) without embeddings"
        ),
    )


def _on_vectorizer(
    args: argparse.Namespace, action: Callable[[str, str], T], report: Callable[[T], str]
) -> int:
    """Runs `action(db_url, vectorizer)` and prints `report` of its result; a failure is one
    line on stderr and exit status 1."""
    from vectorizer.install import resolve_db_url

    try:
        result = action(resolve_db_url(args.db_url), args.vectorizer)
    except Exception as exc:
        return _fail(exc)
    print(report(result))
    return 0


def _search(args: argparse.Namespace) -> int:
    from vectorizer.install import resolve_db_url
    from vectorizer.search import render_hits, search

    try:
        hits = search(
            resolve_db_url(args.db_url),
            args.vectorizer,
            args.query,
            k=args.k,
            hybrid=args.hybrid,
            filter=args.filter,
            params=dict(args.param) if args.param else None,
            rrf_k=args.rrf_k,
            vector_weight=args.vector_weight,
            text_weight=args.text_weight,
        )
    except Exception as exc:
        return _fail(exc)
    print(render_hits(hits, as_json=args.json))
    return 0


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"invalid parameter {text!r}: use NAME=VALUE and %(NAME)s in the filter"
        )
    return name, value


def _add_search_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    search = commands.add_parser(
        "search", help="the chunks nearest to a query (vector, or hybrid with full text)"
    )
    _db_url_argument(search)
    search.add_argument("vectorizer", help="vectorizer id or name")
    search.add_argument("query", help="the text to search for")
    search.add_argument("-k", type=positive_int, default=10, help="results (default 10)")
    search.add_argument(
        "--hybrid", action="store_true", help="fuse full-text and vector rankings (RRF)"
    )
    search.add_argument(
        "--filter",
        metavar="SQL",
        help="a SQL predicate on the vectorizer's view, e.g. 'topic = %%(topic)s'",
    )
    search.add_argument(
        "--param",
        type=_name_value,
        action="append",
        metavar="NAME=VALUE",
        help="a value for %%(NAME)s in --filter, sent as a query parameter (repeatable)",
    )
    search.add_argument("--rrf-k", type=int, default=60, help="RRF constant (default 60)")
    search.add_argument("--vector-weight", type=float, default=1.0, help="hybrid: default 1")
    search.add_argument("--text-weight", type=float, default=1.0, help="hybrid: default 1")
    search.add_argument("--json", action="store_true", help="one JSON object per result")
    search.set_defaults(handler=_search)


def _demo(args: argparse.Namespace) -> int:
    from vectorizer.demo import run_demo

    return run_demo(fresh=args.fresh, serve=args.serve)


def _fail(exc: Exception) -> int:
    from vectorizer.observability.logging import redact

    print(f"error: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
    return 1


# --- entry points ------------------------------------------------------------------------


def _load_dotenv() -> None:
    from dotenv import find_dotenv, load_dotenv

    load_dotenv(find_dotenv(usecwd=True), override=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vectorizer", description="Keep embeddings of Postgres rows in sync."
    )
    parser.add_argument("--version", action="version", version=f"vectorizer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    install = commands.add_parser("install", help="install or upgrade the ai schema in a database")
    _db_url_argument(install)
    install.set_defaults(handler=_install)

    worker = commands.add_parser("worker", help="run the vectorizer worker")
    add_worker_arguments(worker)
    worker.set_defaults(handler=_worker)

    _download_models_command(
        commands.add_parser(
            "download-models",
            help="download docling's models for parsing PDFs and images, or the named local "
            "embedding models",
        )
    )

    status = commands.add_parser("status", help="backlog, failures and workers at a glance")
    _db_url_argument(status)
    status.add_argument(
        "--watch",
        type=parse_duration,
        nargs="?",
        const=2.0,
        default=None,
        metavar="INTERVAL",
        help="refresh every INTERVAL (default 2s) until Ctrl-C",
    )
    status.add_argument(
        "--check",
        action="store_true",
        help="also count orphan embeddings and rows missing theirs (scans every table: slow)",
    )
    status.set_defaults(handler=_status)

    repair = commands.add_parser(
        "repair",
        help="delete embeddings without a source row and queue rows without embeddings",
    )
    _db_url_argument(repair)
    repair.add_argument("vectorizer", help="vectorizer id or name")
    repair.set_defaults(handler=_repair)

    retry = commands.add_parser(
        "retry-failed", help="move a vectorizer's failed keys back into its queue"
    )
    _db_url_argument(retry)
    retry.add_argument("vectorizer", help="vectorizer id or name")
    retry.set_defaults(handler=_retry_failed)

    _add_search_parser(commands)

    demo = commands.add_parser(
        "demo", help="embed sample articles into an embedded Postgres, offline, and search them"
    )
    demo.add_argument("--fresh", action="store_true", help="start over with a new database")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="afterwards keep Postgres and a worker running (edits are embedded live, status "
        "page on VECTORIZER_METRICS_PORT or 9464) until Ctrl-C or SIGTERM",
    )
    demo.set_defaults(handler=_demo)
    _add_pgai_alias(commands)
    return parser


def _add_pgai_alias(commands: argparse._SubParsersAction) -> None:
    """`vectorizer vectorizer worker|download-models`: pgai's `pgai vectorizer ...` with only
    the program name changed (e.g. `python -m vectorizer vectorizer worker -c 4`)."""
    group = commands.add_parser(
        "vectorizer", help="pgai-style alias: `vectorizer vectorizer worker|download-models`"
    )
    alias = group.add_subparsers(dest="pgai_command", required=True, metavar="COMMAND")
    worker = alias.add_parser("worker", help="the same as `vectorizer worker`")
    add_worker_arguments(worker)
    worker.set_defaults(handler=_worker)
    _download_models_command(
        alias.add_parser("download-models", help="the same as `vectorizer download-models`")
    )


def _download_models_command(models: argparse.ArgumentParser) -> None:
    models.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="sentence-transformers models to fetch into the HuggingFace cache, e.g. "
        "sentence-transformers/all-MiniLM-L6-v2 (default: docling's models)",
    )
    models.add_argument(
        "--cache-dir",
        help="default: $VECTORIZER_DOCLING_CACHE_DIR for docling, $HF_HUB_CACHE for models",
    )
    models.add_argument("--force", action="store_true", help="download even if present")
    models.set_defaults(handler=_download_models)


def _download_models(args: argparse.Namespace) -> int:
    from vectorizer.model_download import download_models

    return download_models(args)


def main(argv: Sequence[str] | None = None) -> int:
    _load_dotenv()
    args = build_parser().parse_args(argv)
    if args.handler is not _worker:  # the worker configures its own logging
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return int(args.handler(args))


def worker_main(argv: Sequence[str] | None = None) -> int:
    _load_dotenv()
    parser = argparse.ArgumentParser(
        prog="vectorizer-worker", description="Run the vectorizer worker."
    )
    parser.add_argument("--version", action="version", version=f"vectorizer {__version__}")
    add_worker_arguments(parser)
    return _worker(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
