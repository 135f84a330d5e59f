"""Chunking: split parsed text into the pieces that get embedded.

The splitters are LangChain's own, so chunk boundaries match pgai's byte for byte and existing
embeddings stay valid when a pgai user switches workers. Each is built once per config; its
`split_text` keeps no state between calls, so one instance serves every thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
    if isinstance(config, (RecursiveTokenSplitter, MarkdownSplitter)):
        return _token_chunker(config, _required(counter))
    factory = _CHUNKERS.get(type(config))
    if factory is None:
        raise VectorizerError(
            f"chunking implementation {config.implementation!r} is not supported",
            step="chunking",
        )
    return factory(config)


def make_chunk_placer(config: Chunking, counter: TokenCounter | None = None) -> ChunkPlacer:
    """Like `make_chunker`, but each chunk comes with its offsets in the text (and headings).

    The character splitters keep pgai's exact boundaries; their chunks are located afterwards.
    """
    if isinstance(config, (RecursiveTokenSplitter, MarkdownSplitter)):
        return _token_chunker(config, _required(counter)).chunks
    split = make_chunker(config)

    def placed(text: str) -> list[Chunk]:
        return locate(text, split(text))

    return placed


def _token_chunker(
    config: RecursiveTokenSplitter | MarkdownSplitter, counter: TokenCounter
) -> TokenSplitter | MarkdownChunker:
    if isinstance(config, MarkdownSplitter):
        return MarkdownChunker(
            counter, config.chunk_tokens, config.overlap_tokens, config.heading_levels
        )
    return TokenSplitter(counter, config.chunk_tokens, config.overlap_tokens, config.separators)


def _required(counter: TokenCounter | None) -> TokenCounter:
    if counter is None:
        raise VectorizerError(
            "token-measured chunking needs the model's token counter", step="chunking"
        )
    return counter


def _no_chunking(config: NoChunking) -> Chunker:
    return _whole_text


def _whole_text(text: str) -> list[str]:
    # Blank text has nothing worth embedding, as with the LangChain splitters.
    if not text or text.isspace():
        return []
    return [text]


def _character_splitter(config: CharacterTextSplitter) -> Chunker:
    # Imported here: LangChain takes a noticeable time to import and only chunking needs it.
    from langchain_text_splitters import CharacterTextSplitter as Splitter

    if config.is_separator_regex:
        _check_regex(config.separator)
    splitter = _build(
        Splitter,
        separator=config.separator,
        chunk_size=config.chunk_size,
        chunk_overlap=config.chunk_overlap,
        is_separator_regex=config.is_separator_regex,
    )
    return splitter.split_text


def _recursive_splitter(config: RecursiveCharacterTextSplitter) -> Chunker:
    from langchain_text_splitters import RecursiveCharacterTextSplitter as Splitter

    if config.is_separator_regex:
        for separator in config.separators:
            _check_regex(separator)
    splitter = _build(
        Splitter,
        separators=config.separators,
        chunk_size=config.chunk_size,
        chunk_overlap=config.chunk_overlap,
        is_separator_regex=config.is_separator_regex,
    )
    return splitter.split_text


def _build(splitter_class: Callable[..., Any], **options: Any) -> Any:
    try:
        return splitter_class(**options)
    except ValueError as exc:
        raise VectorizerError(f"invalid chunking config: {exc}", step="chunking") from exc


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise VectorizerError(
            f"invalid chunking config: separator {pattern!r} is not a valid regex: {exc}",
            step="chunking",
        ) from exc


_CHUNKERS: dict[type, Callable[[Any], Chunker]] = {
    NoChunking: _no_chunking,
    CharacterTextSplitter: _character_splitter,
    RecursiveCharacterTextSplitter: _recursive_splitter,
}
