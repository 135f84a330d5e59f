"""The `vectorizer` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vectorizer import __version__


def _install(args: argparse.Namespace) -> int:
    from vectorizer.install import InstallError, install, resolve_db_url

    try:
        changed = install(resolve_db_url(args.db_url))
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # connection failures and SQL errors: say what failed, exit 1
        print(f"error: install failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(
        f"vectorizer {__version__} installed"
        if changed
        else f"vectorizer {__version__} is already installed"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vectorizer", description="Keep embeddings of Postgres rows in sync."
    )
    parser.add_argument("--version", action="version", version=f"vectorizer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    install = commands.add_parser(
        "install", help="install or upgrade the ai schema in a database"
    )
    install.add_argument(
        "-d",
        "--db-url",
        help="database URL (default: $VECTORIZER_DB_URL, else $DATABASE_URL, else libpq defaults)",
    )
    install.set_defaults(handler=_install)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
