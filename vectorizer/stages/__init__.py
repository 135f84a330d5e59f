"""The row stages of a vectorizer: load → parse → chunk → format (embedding lives elsewhere).

Each stage is picked from its config's `implementation` through a registry in its own module;
`RowPipeline` composes them for one vectorizer.
"""

from __future__ import annotations

from vectorizer.stages.chunking import Chunker, make_chunker
from vectorizer.stages.filetypes import guess_file_type
from vectorizer.stages.formatting import Formatter, make_formatter
from vectorizer.stages.loading import ColumnLoader, Document, Loader, Payload, make_loader
from vectorizer.stages.parsing import Parser, make_parser, parse
from vectorizer.stages.pipeline import RowPipeline

__all__ = [
    "Chunker",
    "ColumnLoader",
    "Document",
    "Formatter",
    "Loader",
    "Parser",
    "Payload",
    "RowPipeline",
    "guess_file_type",
    "make_chunker",
    "make_formatter",
    "make_loader",
    "make_parser",
    "parse",
]
