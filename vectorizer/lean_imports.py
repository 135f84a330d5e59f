"""Start-up work the worker command leaves out.

`import httpx` also imports httpx's command-line client (`httpx._main`, with click, rich and
pygments) whenever those packages are installed, and litellm and transformers install them:
~50 ms of CPU at every worker start that does work, for a client the worker never runs.
`skip_httpx_cli` registers a stand-in for that module before httpx is first imported.

numpy's OpenBLAS starts a thread per core at import, and each spins ~0.1 s of CPU waiting for
work that never comes: the worker does no matrix algebra (numpy decodes and converts vectors;
local models compute through torch's own BLAS). `single_threaded_blas` sets
`OPENBLAS_NUM_THREADS=1` before numpy is imported, unless the environment says otherwise.

Only the `vectorizer-worker` command calls these, as with `allocator.tune`.
"""

from __future__ import annotations

import os
import sys
import types
from typing import NoReturn

HTTPX_CLI = "httpx._main"


def skip_httpx_cli() -> None:
    if "httpx" in sys.modules or HTTPX_CLI in sys.modules:
        return  # too late, or done
    stand_in = types.ModuleType(HTTPX_CLI)
    stand_in.main = _no_cli  # type: ignore[attr-defined]
    sys.modules[HTTPX_CLI] = stand_in


def _no_cli(*args: object, **kwargs: object) -> NoReturn:
    raise SystemExit("the httpx command line is not loaded in vectorizer-worker")


def single_threaded_blas() -> None:
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
