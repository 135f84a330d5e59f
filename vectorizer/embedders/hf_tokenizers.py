"""HuggingFace-hub tokenizers (Voyage publishes its models' as `voyageai/<model>`), loaded so
that an offline worker neither hangs nor fails.

Per repository, once per process:

1. the local HuggingFace cache (`HF_HUB_CACHE`, else the hub's default) is read, offline;
2. failing that, unless `HF_HUB_OFFLINE` is set, `tokenizer.json` is downloaded on a daemon
   thread; callers wait at most `VECTORIZER_TOKENIZER_DOWNLOAD_TIMEOUT` seconds (default 5)
   and go on without it, picking it up later if the download finishes after all;
3. a tokenizer that can't be had is logged once, and callers use an estimate instead.

The `tokenizers` library's own `Tokenizer.from_pretrained` is not used: offline it retries for
about 24 seconds before failing, and it can't be bounded from outside.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

from vectorizer.embedders.base import env_limit

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_DOWNLOAD_TIMEOUT = 5
TIMEOUT_ENV = "VECTORIZER_TOKENIZER_DOWNLOAD_TIMEOUT"

_loads: dict[str, Future[Tokenizer | None]] = {}
_lock = threading.Lock()


async def load_tokenizer(repo_id: str) -> Tokenizer | None:
    """The tokenizer of `repo_id`, or None when it can't be had soon (see the module doc)."""
    future = _start(repo_id)
    if future.done():
        return future.result()
    timeout = env_limit((TIMEOUT_ENV,), DEFAULT_DOWNLOAD_TIMEOUT)
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
    except TimeoutError:
        log.warning(
            "tokenizer %s: still downloading after %ss; estimating token counts meanwhile",
            repo_id,
            timeout,
        )
        return None


def load_tokenizer_blocking(repo_id: str) -> Tokenizer | None:
    """`load_tokenizer` for a thread: the same cache, download and time limit, waited on."""
    future = _start(repo_id)
    timeout = env_limit((TIMEOUT_ENV,), DEFAULT_DOWNLOAD_TIMEOUT)
    try:
        return future.result(timeout)
    except TimeoutError:
        log.warning(
            "tokenizer %s: still downloading after %ss; estimating meanwhile", repo_id, timeout
        )
        return None


def loaded_tokenizer(repo_id: str) -> Tokenizer | None:
    """The tokenizer if a load of it has finished successfully; never waits."""
    with _lock:
        future = _loads.get(repo_id)
    if future is None or not future.done():
        return None
    return future.result()


def tokenizer_from_file(path: str | os.PathLike[str]) -> Tokenizer:
    """A `tokenizer.json` on disk (a local model's, or one a user points at), ready to count."""
    return _ready(_tokenizer_class().from_file(str(path)))


def forget_tokenizers() -> None:
    """Forget every load, finished or not (tests)."""
    with _lock:
        _loads.clear()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _start(repo_id: str) -> Future[Tokenizer | None]:
    with _lock:
        future = _loads.get(repo_id)
        if future is not None:
            return future
        future = Future()
        _loads[repo_id] = future
    cached = _from_cache(repo_id)
    if cached is not None:
        future.set_result(cached)
    elif hub_offline():
        _unavailable(repo_id, "it is not in the HuggingFace cache and HF_HUB_OFFLINE is set")
        future.set_result(None)
    else:
        # A daemon thread: a download stuck on a black-holed network must not hold up exit.
        thread = threading.Thread(
            target=_download, args=(repo_id, future), name=f"tokenizer {repo_id}", daemon=True
        )
        thread.start()
    return future


def _from_cache(repo_id: str) -> Tokenizer | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(
            repo_id, TOKENIZER_FILE, cache_dir=os.environ.get("HF_HUB_CACHE") or None
        )
        if not isinstance(path, str):
            return None  # not cached, or cached as missing
        return _ready(_tokenizer_class().from_file(path))
    except Exception as exc:
        # A damaged cache entry is no reason to stop: download or estimate instead.
        log.warning("tokenizer %s: the cached copy can't be read: %s", repo_id, exc)
        return None


def _download(repo_id: str, future: Future[Tokenizer | None]) -> None:
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id, TOKENIZER_FILE, cache_dir=os.environ.get("HF_HUB_CACHE"))
        tokenizer = _ready(_tokenizer_class().from_file(path))
    except Exception as exc:
        _unavailable(repo_id, f"the download failed ({type(exc).__name__}: {exc})")
        future.set_result(None)
        return
    log.info("tokenizer %s: downloaded", repo_id)
    future.set_result(tokenizer)


def _tokenizer_class() -> type[Tokenizer]:
    from tokenizers import Tokenizer

    return Tokenizer


def _ready(tokenizer: Tokenizer) -> Tokenizer:
    # Counting needs every token: a tokenizer.json may carry a truncation or padding setting.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _unavailable(repo_id: str, why: str) -> None:
    log.warning(
        "tokenizer %s is unavailable: %s; token counts are estimated (a token per 3 UTF-8 "
        "bytes) until the worker restarts with it in the HuggingFace cache",
        repo_id,
        why,
    )
