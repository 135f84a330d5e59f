"""What the worker command leaves out at start-up (vectorizer.lean_imports): httpx's
command-line client and numpy's BLAS threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


def _threads_after_numpy(single: bool) -> int:
    code = (
        "import os\n"
        "from vectorizer import lean_imports\n"
        f"{'lean_imports.single_threaded_blas()' if single else ''}\n"
        "import numpy\n"
        "print(len(os.listdir('/proc/self/task')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    return int(out)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no thread on one core")
def test_numpy_starts_blas_threads_by_default() -> None:
    # the premise: on more than one core numpy's OpenBLAS starts threads of its own
    assert _threads_after_numpy(single=False) > 1


def test_the_worker_imports_numpy_without_blas_threads() -> None:
    assert _threads_after_numpy(single=True) == 1


def test_a_blas_thread_count_from_the_environment_is_kept() -> None:
    code = (
        "import os\n"
        "from vectorizer import lean_imports\n"
        "lean_imports.single_threaded_blas()\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'])\n"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "3"
