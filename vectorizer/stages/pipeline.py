"""One vectorizer's row pipeline: load → parse → chunk → format, ahead of embedding.

Every stage is built once from the config, so a config no row could pass (unsupported loader,
overlap larger than size, malformed template) raises VectorizerError at construction. After
that, a failure belongs to the row: it surfaces as a RowError tagged with the failing step.

Per row the worker calls `load` (I/O), then `parse` (awaited: a document is parsed in a parser
process under a time limit, text passes through in-process), then `chunk_and_format` (pure CPU,
no shared mutable state, so it may run in a thread for many rows at once). `transform` does
parse + chunk + format in one blocking call, for callers that hold a payload in a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from vectorizer.config import Config
from vectorizer.errors import RowError, TransientError, VectorizerError
from vectorizer.stages.chunking import make_chunker
from vectorizer.stages.formatting import make_formatter
from vectorizer.stages.loading import Payload, make_loader
from vectorizer.stages.parsing import make_parser

T = TypeVar("T")

# Errors that already say what kind of failure they are; everything else is the row's.
_CLASSIFIED = (RowError, VectorizerError, TransientError)


class RowPipeline:
    """Turns a source row into its formatted chunk texts, index = chunk_seq."""

    def __init__(self, config: Config) -> None:
        self._loader = make_loader(config.loading)
        self._parse = make_parser(config.parsing)
        self._chunk = make_chunker(config.chunking)
        self._format = make_formatter(config.formatting)

    async def prepare(self, row: Mapping[str, Any]) -> list[str]:
        """Load, parse, chunk and format one row; [] when it has nothing to embed."""
        payload = await self.load(row)
        if isinstance(payload, str):
            # Text never leaves the process: parse, chunk and format in one go, as always.
            return self.transform(payload, row)
        text = await self.parse(payload)
        return self.chunk_and_format(text, row)

    async def load(self, row: Mapping[str, Any]) -> Payload:
        try:
            return await self._loader.load(row)
        except _CLASSIFIED:
            raise
        except Exception as exc:
            raise _row_error("loading", exc) from exc

    async def parse(self, payload: Payload) -> str:
        """The text to chunk; a document waits for a parser process without blocking the loop."""
        # An empty payload (NULL or empty column) is skipped without error, as in pgai.
        if isinstance(payload, str) and not payload:
            return ""
        try:
            return await self._parse.parse_async(payload)
        except _CLASSIFIED:
            raise
        except Exception as exc:
            raise _row_error("parsing", exc) from exc

    def chunk_and_format(self, text: str, row: Mapping[str, Any]) -> list[str]:
        """Chunk and format parsed text (CPU only, safe to call from threads)."""
        if not text:
            return []
        chunks = _guarded("chunking", self._chunk, text)
        return _guarded("formatting", self._format_all, chunks, row)

    def transform(self, payload: Payload, row: Mapping[str, Any]) -> list[str]:
        """Parse, chunk and format a loaded payload; blocks while a document is parsed."""
        if isinstance(payload, str) and not payload:
            return []
        text = _guarded("parsing", self._parse, payload)
        return self.chunk_and_format(text, row)

    def _format_all(self, chunks: list[str], row: Mapping[str, Any]) -> list[str]:
        format_chunk = self._format
        return [format_chunk(chunk, row) for chunk in chunks]


def _guarded(step: str, stage: Callable[..., T], *args: Any) -> T:
    try:
        return stage(*args)
    except _CLASSIFIED:
        raise
    except Exception as exc:
        raise _row_error(step, exc) from exc


def _row_error(step: str, exc: Exception) -> RowError:
    return RowError(step, str(exc) or type(exc).__name__)
