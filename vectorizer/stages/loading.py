"""Loading: turn a source row into the payload the parser reads (text or a document's bytes).

Loaders are async because URI loading fetches over the network; column loading needs no I/O
but shares the interface so the pipeline treats every loader alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vectorizer.config import ColumnLoading, Loading, UriLoading
from vectorizer.errors import RowError, VectorizerError
from vectorizer.registry import Registry
from vectorizer.stages.filetypes import guess_file_type
from vectorizer.stages.payload import Document, Loader, Payload

__all__ = ["ColumnLoader", "Document", "Loader", "Payload", "make_loader"]


class ColumnLoader:
    """Reads the payload straight out of one column of the row (`loading_column`)."""

    def __init__(self, config: ColumnLoading) -> None:
        self.column_name = config.column_name

    async def load(self, row: Mapping[str, Any]) -> Payload:
        return self.load_now(row)

    def load_now(self, row: Mapping[str, Any]) -> Payload:
        """`load` without awaiting: the pipeline takes a column's text without a task."""
        try:
            value = row[self.column_name]
        except KeyError:
            # every row comes from the same table: a missing column is missing for all of them
            raise VectorizerError(
                f'loading_column: the source table has no column "{self.column_name}"',
                step="loading",
            ) from None
        return self._payload(value)

    def _payload(self, value: object) -> Payload:
        # NULL and empty values mean "nothing to embed": the row ends with no chunks, no error.
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return _document(bytes(value))
        raise RowError(
            "loading",
            f'loading_column: column "{self.column_name}" holds a {type(value).__name__} '
            "value; expected text or bytea",
        )


def _document(content: bytes) -> Payload:
    if not content:
        return ""
    return Document(content=content, file_type=guess_file_type(content))


# One line per implementation: a new loader adds its class here. The URI loader's module is
# imported when a vectorizer uses it (it brings smart_open and boto3 along).
_LOADERS: Registry[Callable[[Any], Loader]] = Registry(
    "loading",
    {ColumnLoading: ColumnLoader, UriLoading: "vectorizer.stages.uri_loading:UriLoader"},
)


def make_loader(config: Loading) -> Loader:
    """Build the loader for a vectorizer's `loading` config (VectorizerError if unsupported)."""
    return _LOADERS.build(config)
