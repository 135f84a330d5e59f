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
    NoChunking,
    RecursiveCharacterTextSplitter,
)
from vectorizer.errors import VectorizerError

Chunker = Callable[[str], list[str]]


def make_chunker(config: Chunking) -> Chunker:
    """The split function for a vectorizer's `chunking` config.

    A config no text could be split with (overlap larger than size, a bad separator regex)
    raises VectorizerError now, rather than failing every row later.
    """
    factory = _CHUNKERS.get(type(config))
    if factory is None:
        raise VectorizerError(
            f"chunking implementation {config.implementation!r} is not supported",
            step="chunking",
        )
    return factory(config)


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
