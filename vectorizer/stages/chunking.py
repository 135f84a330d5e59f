"""Chunking: split parsed text into the pieces that get embedded.

The character splitters cut exactly where pgai's (LangChain's) do, so existing embeddings stay
valid when a pgai user switches workers (vectorizer.stages.character_splitting). Each is built
once per config; its `split_text` keeps no state between calls, so one instance serves every
thread.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

from vectorizer.config import (
    CharacterTextSplitter,
    Chunking,
    MarkdownSplitter,
    NoChunking,
    RecursiveCharacterTextSplitter,
    RecursiveTokenSplitter,
)
from vectorizer.errors import VectorizerError
from vectorizer.registry import Registry
from vectorizer.stages.character_splitting import CharacterSplitter, RecursiveCharacterSplitter
from vectorizer.stages.chunks import Chunk, locate
from vectorizer.stages.markdown_chunking import MarkdownChunker
from vectorizer.stages.token_chunking import TokenSplitter
from vectorizer.stages.token_counting import TokenCounter

Chunker = Callable[[str], list[str]]
# Chunks with their offsets (and headings): what chunk_metadata is made of.
ChunkPlacer = Callable[[str], list[Chunk]]


def make_chunker(config: Chunking, counter: TokenCounter | None = None) -> Chunker:
    """The split function for a vectorizer's `chunking` config.

    A config no text could be split with (overlap larger than size, a bad separator regex)
    raises VectorizerError now, rather than failing every row later. Token-measured configs
    need the `counter` of the model's tokenizer (vectorizer.stages.token_counting).
    """
    return _CHUNKERS.build(config, counter)


def make_chunk_placer(config: Chunking, counter: TokenCounter | None = None) -> ChunkPlacer:
    """Like `make_chunker`, but each chunk comes with its offsets in the text (and headings).

    The character splitters keep pgai's exact boundaries; their chunks are located afterwards.
    """
    if isinstance(config, (RecursiveTokenSplitter, MarkdownSplitter)):
        return _token_chunker(config, counter).chunks
    split = make_chunker(config)

    def placed(text: str) -> list[Chunk]:
        return locate(text, split(text))

    return placed


def _token_chunker(
    config: RecursiveTokenSplitter | MarkdownSplitter, counter: TokenCounter | None
) -> TokenSplitter | MarkdownChunker:
    counted = _required(counter)
    if isinstance(config, MarkdownSplitter):
        return MarkdownChunker(
            counted, config.chunk_tokens, config.overlap_tokens, config.heading_levels
        )
    return TokenSplitter(counted, config.chunk_tokens, config.overlap_tokens, config.separators)


def _required(counter: TokenCounter | None) -> TokenCounter:
    if counter is None:
        raise VectorizerError(
            "token-measured chunking needs the model's token counter", step="chunking"
        )
    return counter


def _no_chunking(config: NoChunking, counter: TokenCounter | None) -> Chunker:
    return _whole_text


def _whole_text(text: str) -> list[str]:
    # Blank text has nothing worth embedding, as with the character splitters.
    if not text or text.isspace():
        return []
    return [text]


def _character_splitter(config: CharacterTextSplitter, counter: TokenCounter | None) -> Chunker:
    _check_separators([config.separator], config.is_separator_regex)
    with _invalid_sizes():
        splitter = CharacterSplitter(
            config.separator, config.chunk_size, config.chunk_overlap, config.is_separator_regex
        )
    return splitter.split_text


def _recursive_splitter(
    config: RecursiveCharacterTextSplitter, counter: TokenCounter | None
) -> Chunker:
    _check_separators(config.separators, config.is_separator_regex)
    with _invalid_sizes():
        splitter = RecursiveCharacterSplitter(
            config.separators, config.chunk_size, config.chunk_overlap, config.is_separator_regex
        )
    return splitter.split_text


@contextlib.contextmanager
def _invalid_sizes() -> Iterator[None]:
    """The splitters reject sizes with LangChain's ValueError texts; pgai users see them as a
    chunking config error."""
    try:
        yield
    except ValueError as exc:
        raise VectorizerError(f"invalid chunking config: {exc}", step="chunking") from exc


def _check_separators(separators: list[str], is_regex: bool) -> None:
    if is_regex:
        for pattern in separators:
            _check_regex(pattern)


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise VectorizerError(
            f"invalid chunking config: separator {pattern!r} is not a valid regex: {exc}",
            step="chunking",
        ) from exc


# One line per implementation; each factory takes (config, the model's token counter).
_CHUNKERS: Registry[Callable[[Any, TokenCounter | None], Chunker]] = Registry(
    "chunking",
    {
        NoChunking: _no_chunking,
        CharacterTextSplitter: _character_splitter,
        RecursiveCharacterTextSplitter: _recursive_splitter,
        RecursiveTokenSplitter: _token_chunker,
        MarkdownSplitter: _token_chunker,
    },
)
