"""One vectorizer's row pipeline: load → parse → chunk → format, ahead of embedding.

Every stage is built once from the config, so a config no row could pass (unsupported loader,
overlap larger than size, malformed template) raises VectorizerError at construction. After
that, a failure belongs to the row: it surfaces as a RowError tagged with the failing step.

`prepare(rows)` is the one entry, the executor's and the tests': every row is loaded (I/O) and
parsed (awaited: a document is parsed in a parser process under a time limit, text passes
through) concurrently, then chunked and formatted (`prepare_chunks`: pure CPU, no shared mutable
state) in one thread for the whole batch.
"""

from __future__ import annotations

import asyncio
from collections import ChainMap
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vectorizer.config import Config, MarkdownSplitter, RecursiveTokenSplitter
from vectorizer.errors import RowError, TransientError, VectorizerError
from vectorizer.observability import tracing
from vectorizer.stages.chunking import make_chunk_placer
from vectorizer.stages.chunks import Chunk, heading_text, metadata, page_text
from vectorizer.stages.formatting import make_formatter, uses_chunk_context
from vectorizer.stages.loading import Payload, make_loader
from vectorizer.stages.parsing import make_parser
from vectorizer.stages.token_counting import (
    TokenCounter,
    estimate_counter,
    input_limit,
    resolve_counter,
)

T = TypeVar("T")

# Errors that already say what kind of failure they are; everything else is the row's.
_CLASSIFIED = (RowError, VectorizerError, TransientError)


@dataclass
class PreparedChunks:
    """A row's formatted chunk texts (index = chunk_seq) and each one's chunk_metadata."""

    texts: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)


def token_counter_for(config: Config, embedder: Any = None) -> TokenCounter:
    """The counter chunks of `config` are measured with; blocking (see resolve_counter).

    pgai's character splitters (and chunking_none) get the byte estimate: their chunk sizes
    do not depend on it, and tokenising every chunk of the default path would cost a backfill
    a third more CPU and the tokenizer's memory, for a number only chunk_metadata shows.
    """
    chunking = config.chunking
    if isinstance(chunking, (RecursiveTokenSplitter, MarkdownSplitter)):
        return resolve_counter(chunking.tokenizer, config.embedding, embedder)
    return estimate_counter(input_limit(config.embedding, embedder))


class RowPipeline:
    """Turns a source row into its formatted chunk texts, index = chunk_seq."""

    def __init__(self, config: Config, counter: TokenCounter | None = None) -> None:
        self._loader = make_loader(config.loading)
        # loaders that need no I/O (a column) also load without awaiting
        self._load_now: Callable[[Mapping[str, Any]], Payload] | None = getattr(
            self._loader, "load_now", None
        )
        self._parse = make_parser(config.parsing)
        self._counter = counter or token_counter_for(config)
        self._chunk = make_chunk_placer(config.chunking, self._counter)
        self._format = make_formatter(config.formatting)
        self._with_context = uses_chunk_context(config.formatting)

    async def prepare(self, rows: Sequence[Mapping[str, Any]]) -> list[PreparedChunks | RowError]:
        """Load, parse, chunk and format `rows`: each row's chunks (none when it has nothing
        to embed) or its RowError. A VectorizerError (every row would fail) raises."""
        with tracing.span("vectorizer.stage", stage="load_parse", rows=len(rows)):
            texts = await self._load_and_parse_all(rows)
        for text in texts:
            if isinstance(text, BaseException) and not isinstance(text, RowError):
                raise text
        with tracing.span("vectorizer.stage", stage="chunk_format", rows=len(rows)):
            return await asyncio.to_thread(self._prepare_all, texts, rows)

    async def prepare_row(self, row: Mapping[str, Any]) -> PreparedChunks:
        """`prepare` for one row; its RowError raises."""
        [prepared] = await self.prepare([row])
        if isinstance(prepared, RowError):
            raise prepared
        return prepared

    async def _load_and_parse_all(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> list[str | BaseException]:
        """Each row's text or its exception. Text at hand (a text column, the common case) is
        taken without a task per row: those cost a backfill ~1 ms of CPU per 1,000 chunks."""
        texts = [self._text_at_hand(row) for row in rows]
        waiting = [index for index, text in enumerate(texts) if text is None]
        if waiting:
            awaited = await asyncio.gather(
                *(self._load_and_parse(rows[index]) for index in waiting), return_exceptions=True
            )
            for index, text in zip(waiting, awaited, strict=True):
                texts[index] = text
        return texts  # type: ignore[return-value]  # no None is left

    def _text_at_hand(self, row: Mapping[str, Any]) -> str | BaseException | None:
        """The row's text when neither loading nor parsing waits for anything; else None."""
        if self._load_now is None:
            return None
        try:
            payload = _guarded("loading", self._load_now, row)
            return _guarded("parsing", self._parse.parse_now, payload)
        except _CLASSIFIED as exc:
            return exc

    async def _load_and_parse(self, row: Mapping[str, Any]) -> str:
        return await self.parse(await self.load(row))

    def _prepare_all(
        self, texts: Sequence[str | BaseException], rows: Sequence[Mapping[str, Any]]
    ) -> list[PreparedChunks | RowError]:
        prepared: list[PreparedChunks | RowError] = []
        for text, row in zip(texts, rows, strict=True):
            if isinstance(text, RowError):
                prepared.append(text)
                continue
            assert isinstance(text, str)
            try:
                prepared.append(self.prepare_chunks(text, row))
            except RowError as exc:
                prepared.append(exc)
        return prepared

    async def load(self, row: Mapping[str, Any]) -> Payload:
        return await _guarded_async("loading", self._loader.load(row))

    async def parse(self, payload: Payload) -> str:
        """The text to chunk; a document waits for a parser process without blocking the loop."""
        return await _guarded_async("parsing", self._parse.parse(payload))

    def prepare_chunks(self, text: str, row: Mapping[str, Any]) -> PreparedChunks:
        """Chunk and format parsed text, with each chunk's metadata (tokens, offsets, headings,
        page). CPU only, safe to call from threads."""
        if not text:
            return PreparedChunks()
        chunks = _guarded("chunking", self._chunk, text)
        described = _guarded("chunking", self._describe, chunks, text)
        texts = _guarded("formatting", self._format_all, chunks, described, row)
        return PreparedChunks(texts, described)

    def _describe(self, chunks: list[Chunk], text: str) -> list[dict[str, Any]]:
        counter = self._counter
        return [
            metadata(
                chunk,
                text,
                chunk.tokens if chunk.tokens is not None else counter.count(chunk.text),
                estimated=not counter.exact,
            )
            for chunk in chunks
        ]

    def _format_all(
        self, chunks: list[Chunk], described: list[dict[str, Any]], row: Mapping[str, Any]
    ) -> list[str]:
        format_chunk = self._format
        if not self._with_context:
            return [format_chunk(chunk.text, row) for chunk in chunks]
        # $heading and $page; a source column of that name wins (pgai templates keep meaning)
        return [
            format_chunk(chunk.text, ChainMap(row, _context(meta)))
            for chunk, meta in zip(chunks, described, strict=True)
        ]


def _context(meta: dict[str, Any]) -> dict[str, str]:
    return {"heading": heading_text(meta), "page": page_text(meta)}


def _guarded(step: str, stage: Callable[..., T], *args: Any) -> T:
    try:
        return stage(*args)
    except _CLASSIFIED:
        raise
    except Exception as exc:
        raise _row_error(step, exc) from exc


async def _guarded_async(step: str, stage: Awaitable[T]) -> T:
    try:
        return await stage
    except _CLASSIFIED:
        raise
    except Exception as exc:
        raise _row_error(step, exc) from exc


def _row_error(step: str, exc: Exception) -> RowError:
    return RowError(step, str(exc) or type(exc).__name__)
