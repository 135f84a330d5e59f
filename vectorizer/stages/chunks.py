"""Chunks with their place in the parsed text, and the `chunk_metadata` stored with each.

`Chunk` is what the structure- and token-aware chunkers produce: the text plus its offsets in
the parsed text (and its Markdown heading path). `PagedText` is parsed text that knows where
each page starts, so a chunk's page follows from its offset. `metadata` turns both into the
jsonb the store's `chunk_metadata` column holds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    start: int | None
    end: int | None
    tokens: int | None = None
    # the Markdown heading path, e.g. ("# Guide", "## Install"); None when not Markdown-chunked
    headings: tuple[str, ...] | None = None


class PagedText(str):
    """Parsed text of a paged document; `page_starts[i]` is where page i + 1 begins.

    A str, so every stage that takes text takes it; the pages ride along, also through the
    parser process's pickling (a str subclass keeps its attributes).
    """

    page_starts: tuple[int, ...]

    def __new__(cls, text: str, page_starts: tuple[int, ...]) -> PagedText:
        paged = super().__new__(cls, text)
        paged.page_starts = tuple(page_starts)
        return paged

    def __reduce__(self) -> tuple[Any, ...]:
        return (PagedText, (str(self), self.page_starts))

    def page_at(self, offset: int) -> int:
        """The 1-based page holding the character at `offset`."""
        return max(1, bisect.bisect_right(self.page_starts, offset))


def locate(text: str, pieces: list[str]) -> list[Chunk]:
    """Chunks of splitters that return bare strings, placed by searching the text in order.

    Consecutive chunks overlap, so each is searched from just after the previous one's start;
    a piece not found verbatim (a regex separator re-joined differently) gets no offsets.
    """
    chunks: list[Chunk] = []
    cursor = 0
    for piece in pieces:
        start = _find(text, piece, cursor)
        if start < 0:
            start = _find(text, piece, 0)
        if start < 0:
            chunks.append(Chunk(piece, None, None))
            continue
        chunks.append(Chunk(piece, start, start + len(piece)))
        cursor = start + 1
    return chunks


def _find(text: str, piece: str, start: int) -> int:
    """`text.find(piece, start)`, by the piece's first characters and a comparison: for a
    chunk-long needle str.find first preprocesses the whole needle (a third of the cost)."""
    probe = piece[:32]
    at = text.find(probe, start)
    while at >= 0 and not text.startswith(piece, at):
        at = text.find(probe, at + 1)
    return at


def metadata(chunk: Chunk, text: str, tokens: int, *, estimated: bool = False) -> dict[str, Any]:
    """The `chunk_metadata` of one chunk of `text`."""
    meta: dict[str, Any] = {
        "tokens": tokens,
        "chars": len(chunk.text),
        "start": chunk.start,
        "end": chunk.end,
    }
    if estimated:
        meta["tokens_estimated"] = True
    if chunk.headings is not None:
        meta["headings"] = list(chunk.headings)
    if isinstance(text, PagedText) and chunk.start is not None and chunk.end is not None:
        first = text.page_at(chunk.start)
        last = text.page_at(max(chunk.start, chunk.end - 1))
        meta["page"] = first
        if last != first:
            meta["page_end"] = last
    return meta


def heading_text(meta: dict[str, Any]) -> str:
    """`$heading` of a template: the heading path, `# A > ## B`."""
    return " > ".join(meta.get("headings") or ())


def page_text(meta: dict[str, Any]) -> str:
    """`$page` of a template: `3`, or `3-4` for a chunk spanning pages; empty when unknown."""
    page = meta.get("page")
    if page is None:
        return ""
    end = meta.get("page_end")
    return f"{page}-{end}" if end else str(page)
