"""Postgres-native vectorizer: keeps embeddings of your rows in sync, pgai-compatible."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The pgai library version whose SQL surface and config format we reproduce. It is written
# into each vectorizer's config (`version`) so pgai's own worker can read our catalog.
PGAI_COMPAT_VERSION = "0.12.1"

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
