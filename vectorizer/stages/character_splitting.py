"""pgai's two character splitters, cutting exactly where LangChain's would.

pgai chunks with langchain-text-splitters' `CharacterTextSplitter` and
`RecursiveCharacterTextSplitter` (length in characters, chunks stripped of surrounding
whitespace). Chunk boundaries decide which embeddings a pgai user can keep when switching
workers, so these reproduce LangChain's output exactly, quirks included; importing LangChain
instead costs a worker run ~0.3 s of CPU before the first row is chunked.

How both work:

1. The text is cut at a separator into pieces. The character splitter drops the separator;
   the recursive one keeps it at the start of the piece after it. Empty pieces are dropped.
2. Pieces are merged greedily, joined by the merge separator (the dropped separator, or "" when
   it is kept or matches no characters), into chunks of at most `chunk_size` characters. Each
   new chunk starts with the previous one's last pieces, up to `chunk_overlap` characters.
3. The recursive splitter uses the first separator of its list that occurs in the text and
   cuts any piece of `chunk_size` characters or more again with the separators after it; a
   piece nothing is left to cut becomes a chunk as it is (not stripped).

Tests compare both with the installed LangChain over thousands of generated texts
(tests/test_stages.py).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence

# LangChain's list when a recursive splitter is given none (pgai's config always has one).
_FALLBACK_SEPARATORS = ("\n\n", "\n", " ", "")
# A regex separator starting like this matches no characters, so nothing is put back on merging.
_LOOKAROUNDS = ("(?=", "(?<!", "(?<=", "(?!")


def check_sizes(chunk_size: int, chunk_overlap: int) -> None:
    """Reject the sizes LangChain rejects, with its messages (pgai users see the same text)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    if chunk_overlap < 0:
        raise ValueError(f"chunk_overlap must be >= 0, got {chunk_overlap}")
    if chunk_overlap > chunk_size:
        raise ValueError(
            f"Got a larger chunk overlap ({chunk_overlap}) than chunk size ({chunk_size}), "
            "should be smaller."
        )


class CharacterSplitter:
    """`CharacterTextSplitter`: cut at one separator, merge up to the size. Keeps no state."""

    def __init__(
        self, separator: str, chunk_size: int, chunk_overlap: int, is_separator_regex: bool
    ) -> None:
        check_sizes(chunk_size, chunk_overlap)
        self._separator = separator
        self._regex = is_separator_regex
        self._size = chunk_size
        self._overlap = chunk_overlap
        # LangChain puts the separator back between merged pieces as written, also a regex
        # (`\s+` joins with a literal "\s+"), unless it is a lookaround.
        zero_width = is_separator_regex and separator.startswith(_LOOKAROUNDS)
        self._joiner = "" if zero_width else separator

    def split_text(self, text: str) -> list[str]:
        return merge(self._pieces(text), self._joiner, self._size, self._overlap)

    def _pieces(self, text: str) -> list[str]:
        if not self._separator:
            return list(text)
        if self._regex:
            # a group in the pattern puts its match in the list (None when it did not take part)
            parts: Iterable[str | None] = re.split(self._separator, text)
        else:
            parts = text.split(self._separator)
        return [part for part in parts if part]


class RecursiveCharacterSplitter:
    """`RecursiveCharacterTextSplitter`: separators tried in order, long pieces cut again."""

    def __init__(
        self,
        separators: Sequence[str],
        chunk_size: int,
        chunk_overlap: int,
        is_separator_regex: bool,
    ) -> None:
        check_sizes(chunk_size, chunk_overlap)
        self._separators = tuple(separators) or _FALLBACK_SEPARATORS
        self._regex = is_separator_regex
        self._size = chunk_size
        self._overlap = chunk_overlap

    def split_text(self, text: str) -> list[str]:
        if not self._regex and len(text) < self._size:
            # Literal pieces with their separators put back together are the text, and all of
            # it fits one chunk: the merge would give the text, stripped.
            whole = text.strip()
            return [whole] if whole else []
        return self._split(text, self._separators)

    def _split(self, text: str, separators: Sequence[str]) -> list[str]:
        separator, finer = self._choose(text, separators)
        chunks: list[str] = []
        fitting: list[str] = []
        for piece in self._pieces(text, separator):
            if len(piece) < self._size:
                fitting.append(piece)
                continue
            if fitting:
                chunks += merge(fitting, "", self._size, self._overlap)
                fitting = []
            if finer:
                chunks += self._split(piece, finer)
            else:
                chunks.append(piece)
        if fitting:
            chunks += merge(fitting, "", self._size, self._overlap)
        return chunks

    def _choose(self, text: str, separators: Sequence[str]) -> tuple[str, Sequence[str]]:
        """The first separator found in the text (or "", or the last), and those after it."""
        for index, separator in enumerate(separators):
            if not separator:
                return separator, ()
            found = re.search(separator, text) if self._regex else separator in text
            if found:
                return separator, separators[index + 1 :]
        return separators[-1], ()

    def _pieces(self, text: str, separator: str) -> list[str]:
        if not separator:
            return list(text)
        if not self._regex:
            first, *rest = text.split(separator)
            kept = [separator + part for part in rest]
            return [first, *kept] if first else kept
        return _regex_pieces(text, separator)


def _regex_pieces(text: str, separator: str) -> list[str]:
    # With the pattern in a group, re.split lists text, match, text, match, ..., text; each
    # match is glued to the text after it. Groups of the separator's own add entries and break
    # that pairing: LangChain then fails (IndexError, TypeError) or pairs them as they come,
    # and so does this.
    parts = re.split(f"({separator})", text)
    pieces = [parts[0]]
    for index in range(1, len(parts), 2):
        pieces.append(parts[index] + parts[index + 1])
    return [piece for piece in pieces if piece]


def merge(pieces: Iterable[str], joiner: str, size: int, overlap: int) -> list[str]:
    """Pieces joined into chunks of at most `size` characters where possible.

    A piece is never cut here: one longer than `size` makes a chunk of its own. When a chunk is
    full, pieces leave its front until what stays is at most `overlap` characters and leaves
    room for the next piece; what stays opens the next chunk.
    """
    step = len(joiner)
    chunks: list[str] = []
    window: deque[str] = deque()
    total = 0  # characters in the window, joiners included
    for piece in pieces:
        length = len(piece)
        if window and total + length + step > size:
            _emit(chunks, joiner.join(window))
            while total > overlap or (total > 0 and total + length + _gap(window, step) > size):
                dropped = window.popleft()
                total -= len(dropped) + _gap(window, step)
        total += length + _gap(window, step)
        window.append(piece)
    _emit(chunks, joiner.join(window))
    return chunks


def _gap(window: deque[str], step: int) -> int:
    return step if window else 0


def _emit(chunks: list[str], chunk: str) -> None:
    chunk = chunk.strip()
    if chunk:
        chunks.append(chunk)
