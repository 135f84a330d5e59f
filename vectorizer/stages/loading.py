"""Loading: turn a source row into the payload the parser reads (text or a document's bytes).

Loaders are async because URI loading fetches over the network; column loading needs no I/O
but shares the interface so the pipeline treats every loader alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from vectorizer.config import ColumnLoading, Loading, UriLoading
from vectorizer.errors import RowError, VectorizerError
from vectorizer.stages.filetypes import guess_file_type


@dataclass(frozen=True, slots=True)
class Document:
    """Raw bytes of a document plus what we know about them, handed from loading to parsing.

    `source` is the URI it came from, already stripped of credentials, and `content_type` the
    server's Content-Type; both only serve to explain a type that could not be guessed.
    """

    content: bytes
    file_type: str | None
    source: str | None = None
    content_type: str | None = None


Payload = str | Document


class Loader(Protocol):
    async def load(self, row: Mapping[str, Any]) -> Payload: ...


class ColumnLoader:
    """Reads the payload straight out of one column of the row (`loading_column`)."""

    def __init__(self, config: ColumnLoading) -> None:
        self.column_name = config.column_name

    async def load(self, row: Mapping[str, Any]) -> Payload:
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


def _uri_loader(config: UriLoading) -> Loader:
    # Imported here: uri_loading needs Document from this module, and boto3 only when used.
    from vectorizer.stages.uri_loading import UriLoader

    return UriLoader(config)


# One line per implementation: a new loader adds its class here.
_LOADERS: dict[type, Callable[[Any], Loader]] = {
    ColumnLoading: ColumnLoader,
    UriLoading: _uri_loader,
}


def make_loader(config: Loading) -> Loader:
    """Build the loader for a vectorizer's `loading` config (VectorizerError if unsupported)."""
    factory = _LOADERS.get(type(config))
    if factory is None:
        raise VectorizerError(
            f"loading implementation {config.implementation!r} is not supported", step="loading"
        )
    return factory(config)
