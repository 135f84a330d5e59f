"""The worker command's stand-in for httpx's command-line client (vectorizer.lean_imports)."""

from __future__ import annotations

import subprocess
import sys

CLI_PACKAGES = ("click", "rich", "pygments")


def _imported_after_httpx(skip: bool) -> set[str]:
    code = (
        "import sys\n"
        "from vectorizer import lean_imports\n"
        f"{'lean_imports.skip_httpx_cli()' if skip else ''}\n"
        "import httpx\n"
        "assert httpx.AsyncClient and httpx.Response\n"
        f"print(','.join(p for p in {CLI_PACKAGES!r} if p in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(filter(None, out.strip().split(",")))


def test_httpx_imports_its_cli_packages_when_they_are_installed() -> None:
    # the premise: this environment has them (litellm and transformers bring them)
    assert _imported_after_httpx(skip=False) == set(CLI_PACKAGES)


def test_the_worker_imports_httpx_without_its_cli() -> None:
    assert _imported_after_httpx(skip=True) == set()


def test_the_stand_in_refuses_to_run_the_cli() -> None:
    code = (
        "from vectorizer import lean_imports\n"
        "lean_imports.skip_httpx_cli()\n"
        "import httpx\n"
        "httpx.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "not loaded in vectorizer-worker" in done.stderr
