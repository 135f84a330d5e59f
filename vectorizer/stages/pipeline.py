"""One vectorizer's row pipeline: load → parse → chunk → format, ahead of embedding.

Every stage is built once from the config, so a config no row could pass (unsupported loader,
overlap larger than size, malformed template) raises VectorizerError at construction. After
that, a failure belongs to the row: it surfaces as a RowError tagged with the failing step.

`load` is the only I/O; `transform` is pure CPU and holds no shared mutable state, so the worker
may run it in a thread for many rows at once.
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
        """Load and transform one row; [] when it has nothing to embed."""
        payload = await self.load(row)
        return self.transform(payload, row)

    async def load(self, row: Mapping[str, Any]) -> Payload:
        try:
            return await self._loader.load(row)
        except _CLASSIFIED:
            raise
        except Exception as exc:
            raise _row_error("loading", exc) from exc

    def transform(self, payload: Payload, row: Mapping[str, Any]) -> list[str]:
        """Parse, chunk and format a loaded payload (CPU only, safe to call from threads)."""
        # An empty payload (NULL or empty column) is skipped without error, as in pgai.
        if isinstance(payload, str) and not payload:
            return []
        text = _guarded("parsing", self._parse, payload)
        chunks = _guarded("chunking", self._chunk, text)
        return _guarded("formatting", self._format_all, chunks, row)

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
