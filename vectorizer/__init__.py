"""Postgres-native vectorizer: keeps embeddings of your rows in sync, pgai-compatible."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vectorizer.version import PGAI_COMPAT_VERSION, __version__

__all__ = ["PGAI_COMPAT_VERSION", "Worker", "__version__", "asearch", "install"]

if TYPE_CHECKING:  # pragma: no cover
    from vectorizer.inprocess import Worker as Worker
    from vectorizer.install import install as install
    from vectorizer.search import asearch as asearch


def __getattr__(name: str) -> object:
    # Keep `import vectorizer` light: the installer pulls in psycopg only when used.
    if name == "install":
        from vectorizer.install import install

        return install
    if name == "Worker":
        from vectorizer.inprocess import Worker

        return Worker
    if name in ("search", "asearch", "SearchHit"):
        from vectorizer import search as search_module

        return getattr(search_module, name)
    raise AttributeError(name)
