"""`chunking_markdown`: chunks that follow a Markdown document's sections.

The text is cut into sections at every ATX heading (`#` … `######`) of at most `heading_levels`
(headings inside fenced code blocks are code, not structure). A section never shares a chunk
with another; one larger than the budget is split by the token splitter at paragraphs, lines,
then sentences. Each chunk carries its heading path, e.g. `("# Guide", "## Install")`. A
section that is only its heading (directly followed by a subsection) is kept with that
subsection, whose path names it anyway. Text before the first heading has an empty path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from vectorizer.stages.chunks import Chunk
from vectorizer.stages.token_chunking import TokenSplitter
from vectorizer.stages.token_counting import TokenCounter

SEPARATORS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True, slots=True)
class _Section:
    start: int
    end: int
    level: int  # of its heading; 0 for text before the first heading
    path: tuple[str, ...]


class MarkdownChunker:
    def __init__(
        self, counter: TokenCounter, budget: int, overlap: int, heading_levels: int
    ) -> None:
        self.heading_levels = heading_levels
        self._splitter = TokenSplitter(counter, budget, overlap, SEPARATORS)

    def __call__(self, text: str) -> list[str]:
        return [chunk.text for chunk in self.chunks(text)]

    def chunks(self, text: str) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in _joined(text, self._sections(text)):
            for chunk in self._splitter.chunks(text, section.start, section.end):
                chunks.append(replace(chunk, headings=section.path))
        return chunks

    def _sections(self, text: str) -> list[_Section]:
        sections: list[_Section] = []
        path: list[tuple[int, str]] = []
        start, level = 0, 0
        for offset, heading_level, title in _headings(text):
            if heading_level > self.heading_levels:
                continue
            sections.append(_Section(start, offset, level, tuple(h for _, h in path)))
            path = [(lvl, h) for lvl, h in path if lvl < heading_level]
            path.append((heading_level, f"{'#' * heading_level} {title}".rstrip()))
            start, level = offset, heading_level
        sections.append(_Section(start, len(text), level, tuple(h for _, h in path)))
        return [s for s in sections if s.start < s.end and not text[s.start : s.end].isspace()]


def _headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, title) of every ATX heading outside fenced code."""
    found: list[tuple[int, int, str]] = []
    fence: str | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        fence_match = _FENCE.match(stripped)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
        elif fence is None:
            match = _HEADING.match(stripped)
            if match:
                found.append((offset, len(match.group(1)), match.group(2).strip()))
        offset += len(line)
    return found


def _joined(text: str, sections: list[_Section]) -> list[_Section]:
    """Heading-only sections merged into the subsection that directly follows them."""
    joined: list[_Section] = []
    pending: _Section | None = None
    for section in sections:
        if pending is not None and section.level > pending.level:
            section = replace(section, start=pending.start)
        elif pending is not None:
            joined.append(pending)
        pending = None
        if section.level and _only_heading(text, section):
            pending = section
            continue
        joined.append(section)
    if pending is not None:
        joined.append(pending)
    return joined


def _only_heading(text: str, section: _Section) -> bool:
    lines = text[section.start : section.end].splitlines()
    return all(not line.strip() or _HEADING.match(line) for line in lines)
