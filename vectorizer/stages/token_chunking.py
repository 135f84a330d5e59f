"""`chunking_recursive_token_splitter`: the recursive splitter, measured in the model's tokens.

Like LangChain's recursive splitter, text is cut at the first separator of the list that
occurs (paragraphs, then lines, then sentences, then words), and pieces are merged greedily up
to the budget with an overlap carried into the next chunk. Three differences, all for the token
budget:

* a piece that does not fit the room left in a chunk is cut at the next separator level and
  what fits goes in, so chunks fill the budget instead of stopping at the last whole paragraph;
* every chunk is counted whole before it is emitted (tokens do not add up exactly across a
  join), and one that is over loses its last piece: no chunk ever exceeds the budget;
* a piece with no separator left is cut at the longest prefix that fits, found by counting.

Separators stay with the text before them ("Sentence one." | " Sentence two."). Chunks are
spans of the text, stripped of surrounding whitespace, so their offsets are exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from vectorizer.stages.chunks import Chunk
from vectorizer.stages.token_counting import TokenCounter

# A chunk with at least this share of its budget free cuts the next piece to fill it.
_REFINE_ROOM = 0.1
# Characters per token above which a text is cut without counting it first (prose has ~4-5).
_SURELY_OVER = 8


@dataclass(slots=True)
class _Piece:
    start: int
    end: int
    tokens: int
    level: int  # the separator level its children are cut at


class TokenSplitter:
    """Splits text into chunks of at most `budget` tokens of `counter`; no state between calls."""

    def __init__(
        self, counter: TokenCounter, budget: int, overlap: int, separators: Sequence[str]
    ) -> None:
        self.counter = counter
        self.budget = counter.budget(budget)
        self.overlap = min(overlap, self.budget - 1)
        # the empty separator means "cut anywhere", which the prefix search does
        self.separators = [separator for separator in separators if separator]

    def __call__(self, text: str) -> list[str]:
        return [chunk.text for chunk in self.chunks(text)]

    def chunks(
        self, text: str, start: int = 0, end: int | None = None, level: int = 0
    ) -> list[Chunk]:
        """The chunks of `text[start:end]`, each at most `budget` tokens."""
        end = len(text) if end is None else end
        if start >= end or text[start:end].isspace():
            return []
        if end - start > _SURELY_OVER * self.budget:
            # not worth counting: it will be cut, and pieces that fit merge back anyway
            whole = _Piece(start, end, self.budget + 1, level)
        else:
            whole = _Piece(start, end, self.counter.count(text[start:end]), level)
        return self._merge(text, self._fitting(text, whole))

    # --- cutting ------------------------------------------------------------------------

    def _piece(self, text: str, start: int, end: int, level: int) -> _Piece | None:
        if start >= end or text[start:end].isspace():
            return None
        return _Piece(start, end, self.counter.count(text[start:end]), level)

    def _fitting(self, text: str, piece: _Piece) -> list[_Piece]:
        """`piece` cut until every part fits the budget."""
        if piece.tokens <= self.budget:
            return [piece]
        parts: list[_Piece] = []
        for child in self._cut(text, piece):
            parts.extend(self._fitting(text, child))
        return parts

    def _cut(self, text: str, piece: _Piece) -> list[_Piece]:
        """`piece` cut at the first separator (from its level on) that occurs in it."""
        for level in range(piece.level, len(self.separators)):
            separator = self.separators[level]
            bounds = _cut_points(text, piece.start, piece.end, separator)
            children = [
                child
                for left, right in itertools.pairwise(bounds)
                if (child := self._piece(text, left, right, level + 1)) is not None
            ]
            # a separator only at the edges (a paragraph's trailing newline) cuts nothing
            if len(children) > 1:
                return children
        return self._prefix_cut(text, piece)

    def _prefix_cut(self, text: str, piece: _Piece) -> list[_Piece]:
        """No separator left: the longest prefixes that fit, found by counting."""
        parts: list[_Piece] = []
        start = piece.start
        while start < piece.end:
            end = self._longest_fit(text, start, piece.end)
            part = self._piece(text, start, end, len(self.separators))
            if part is not None:
                parts.append(part)
            start = end
        return parts

    def _longest_fit(self, text: str, start: int, end: int) -> int:
        count = self.counter.count
        if count(text[start:end]) <= self.budget:
            return end
        low, high = start + 1, end  # text[start:low] fits (one character always does)
        while low < high:
            middle = (low + high + 1) // 2
            if count(text[start:middle]) <= self.budget:
                low = middle
            else:
                high = middle - 1
        return max(low, start + 1)

    # --- merging ------------------------------------------------------------------------

    def _merge(self, text: str, pieces: list[_Piece]) -> list[Chunk]:
        chunks: list[Chunk] = []
        first = 0
        while first < len(pieces):
            stop = self._fill(text, pieces, first)
            stop, chunk = self._emit(text, pieces, first, stop)
            if chunk is not None:
                chunks.append(chunk)
            if stop >= len(pieces):
                break
            first = self._overlap_start(pieces, first, stop)
        return chunks

    def _fill(self, text: str, pieces: list[_Piece], first: int) -> int:
        """One past the last piece that fits a chunk starting at `first` (refining as needed)."""
        total = 0
        index = first
        while index < len(pieces):
            piece = pieces[index]
            room = self.budget - total
            if piece.tokens <= room:
                total += piece.tokens
                index += 1
                continue
            if index > first and room >= _REFINE_ROOM * self.budget:
                children = self._cut(text, piece)
                if len(children) > 1:
                    pieces[index : index + 1] = self._fitting_all(text, children)
                    continue
            break
        return max(index, first + 1)

    def _fitting_all(self, text: str, children: list[_Piece]) -> list[_Piece]:
        return [part for child in children for part in self._fitting(text, child)]

    def _emit(
        self, text: str, pieces: list[_Piece], first: int, stop: int
    ) -> tuple[int, Chunk | None]:
        """The chunk of pieces[first:stop], dropping last pieces until it counts within budget."""
        while True:
            start, end = _strip(text, pieces[first].start, pieces[stop - 1].end)
            if start >= end:
                return stop, None
            body = text[start:end]
            tokens = self.counter.count(body)
            if tokens <= self.budget or stop - first == 1:
                return stop, Chunk(body, start, end, tokens)
            stop -= 1

    def _overlap_start(self, pieces: list[_Piece], first: int, stop: int) -> int:
        """Where the next chunk starts: the last pieces before `stop` within the overlap."""
        start = stop
        carried = 0
        while start - 1 > first and carried + pieces[start - 1].tokens <= self.overlap:
            start -= 1
            carried += pieces[start].tokens
        return start


def _cut_points(text: str, start: int, end: int, separator: str) -> list[int]:
    """start, each position just after an occurrence of `separator`, end."""
    points = [start]
    position = text.find(separator, start, end)
    while position >= 0:
        after = position + len(separator)
        if points[-1] < after < end:
            points.append(after)
        position = text.find(separator, after, end)
    points.append(end)
    return points


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
