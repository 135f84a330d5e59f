"""Lazy imports of third-party packages, made one at a time.

Provider SDKs, tokenizers, model loaders and S3 clients are imported only when a vectorizer
needs them, and some of those imports happen in threads (a model loads in its own thread, a
document is fetched in one). Two threads importing packages that share dependencies (httpx,
urllib3, ...) at the same moment can break each other: Python's per-module import locks resolve
the cross-wait by handing one thread a partially initialised module ("partially initialized
module 'httpx' has no attribute 'URL'"). Every lazy import of such a package therefore runs
under one process-wide lock.

That is not enough on its own: SDKs also peek at `sys.modules` at request time (openai looks
for an `httpx2` module, which the Hugging Face hub client imports), so a module being imported
in a thread is visible half-made to requests in the event loop. Provider SDKs and what they
import lazily are therefore imported in the event loop's own thread, before the provider is
used (`vectorizer.embedders.provider_class`): nothing else in the loop runs meanwhile.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

_lock = threading.RLock()
_imported: dict[str, ModuleType] = {}


def import_module(name: str) -> ModuleType:
    """`importlib.import_module(name)`, never concurrently with another lazy import."""
    module = _imported.get(name)  # fully imported before: no need to wait for the lock
    if module is None:
        with _lock:
            module = importlib.import_module(name)
        _imported[name] = module
    return module
