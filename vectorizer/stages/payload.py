"""What loading hands to parsing: text, or a document's bytes with what is known about them.
Its own module so the loaders (column, URI) and the parsers share it without importing each
other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


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
