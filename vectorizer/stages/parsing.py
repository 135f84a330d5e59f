"""Parsing: turn a loaded payload into the text that gets chunked.

Text passes through; documents need a parser for their file type. Only plain text and markdown
documents are handled here: the PyMuPDF and Docling parsers arrive later, each in its own
module, and plug into `_DOCUMENT_PARSERS` without touching the rules below.
"""

from __future__ import annotations

from collections.abc import Callable

from vectorizer.config import (
    AutoParsing,
    DoclingParsing,
    NoParsing,
    Parsing,
    PyMuPDFParsing,
)
from vectorizer.errors import RowError, VectorizerError
from vectorizer.stages.loading import Document, Payload

Parser = Callable[[Payload], str]
DocumentParser = Callable[[Document], str]

# Text-like documents are decoded as they are under every parser, as pgai does.
_TEXT_TYPES = frozenset({"txt", "md"})

# Which parser `parsing_auto` sends each document type to (anything unlisted: docling).
_AUTO_ROUTES: dict[str, str] = {"epub": "pymupdf"}
_AUTO_DEFAULT = "docling"

# Parser implementations available in this worker; a later issue registers pymupdf/docling.
_DOCUMENT_PARSERS: dict[str, DocumentParser] = {}


def parse(payload: Payload, config: Parsing) -> str:
    """Return the text to chunk for `payload`, or raise RowError("parsing", ...)."""
    return make_parser(config)(payload)


def make_parser(config: Parsing) -> Parser:
    """The parse function for a vectorizer's `parsing` config, reusable across rows."""
    factory = _PARSERS.get(type(config))
    if factory is None:
        raise VectorizerError(
            f"parsing implementation {config.implementation!r} is not supported", step="parsing"
        )
    return factory()


def _parse_none(payload: Payload) -> str:
    if isinstance(payload, Document):
        raise RowError(
            "parsing",
            "Cannot chunk Document with parsing_none, use parsing_auto or parsing_pymupdf",
        )
    return payload


def _parse_auto(payload: Payload) -> str:
    if isinstance(payload, str):
        return payload
    file_type = _known_file_type(payload)
    return _parse_document(payload, _AUTO_ROUTES.get(file_type, _AUTO_DEFAULT))


def _explicit(implementation: str) -> Parser:
    def parse_with(payload: Payload) -> str:
        if isinstance(payload, str):
            raise RowError(
                "parsing",
                f"Column content must be a document to be parsed by {implementation}, "
                "use parsing_auto or parsing_none instead",
            )
        _known_file_type(payload)
        return _parse_document(payload, implementation)

    return parse_with


def _known_file_type(document: Document) -> str:
    if document.file_type is None:
        raise RowError(
            "parsing", "No file extension could be determined: the document's type is unknown"
        )
    return document.file_type


def _parse_document(document: Document, implementation: str) -> str:
    if document.file_type in _TEXT_TYPES:
        return _decode_text(document)
    parser = _DOCUMENT_PARSERS.get(implementation)
    if parser is None:
        raise RowError(
            "parsing",
            f"a {document.file_type} document needs the {implementation} parser; "
            "document parsing is not available in this worker yet",
        )
    return parser(document)


def _decode_text(document: Document) -> str:
    try:
        # utf-8-sig drops a leading byte-order mark, which would otherwise end up in the chunk.
        return document.content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RowError(
            "parsing", f"the {document.file_type} document is not valid UTF-8: {exc}"
        ) from exc


_PARSERS: dict[type, Callable[[], Parser]] = {
    AutoParsing: lambda: _parse_auto,
    NoParsing: lambda: _parse_none,
    PyMuPDFParsing: lambda: _explicit("pymupdf"),
    DoclingParsing: lambda: _explicit("docling"),
}
