"""Parsing: turn a loaded payload into the text that gets chunked.

Text passes through, and text documents (txt, md) are decoded, in-process and at once. Other
documents go to a parser, pymupdf (parse_pymupdf.py) or docling (parse_docling.py), which
runs in a parser process under a time limit (parse_pool.py). Which parser a document gets:

* `parsing_none`: none; a document is an error telling which parser to use.
* `parsing_pymupdf` / `parsing_docling`: that one, for the types it reads.
* `parsing_auto`: e-books → pymupdf; office, HTML and images → docling; PDF → docling when
  its models are in the cache. A type both read goes to pymupdf while docling cannot take it
  (PDF without models, or docling not installed), said once per worker in the log.

Every failure is a RowError("parsing", ...) for the row's key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vectorizer.config import (
    AutoParsing,
    DoclingParsing,
    NoParsing,
    Parsing,
    PyMuPDFParsing,
)
from vectorizer.errors import RowError, VectorizerError
from vectorizer.registry import Registry
from vectorizer.stages import document_settings, parse_docling, parse_pool
from vectorizer.stages.filetypes import describe_guess
from vectorizer.stages.parse_pymupdf import PYMUPDF_TYPES
from vectorizer.stages.payload import Document, Payload

log = logging.getLogger(__name__)

# Text-like documents are decoded as they are under every parser, as pgai does.
_TEXT_TYPES = frozenset({"txt", "md"})

PYMUPDF = "pymupdf"
DOCLING = "docling"

# Where `parsing_auto` sends each document type; PDF is decided per worker (see `_auto`).
_AUTO_ROUTES: dict[str, str] = {
    **{file_type: PYMUPDF for file_type in PYMUPDF_TYPES},
    **{file_type: DOCLING for file_type in parse_docling.DOCLING_TYPES},
}

_PARSER_FUNCTIONS = {
    PYMUPDF: "vectorizer.stages.parse_pymupdf:to_markdown",
    DOCLING: "vectorizer.stages.parse_docling:to_markdown",
}
_PARSER_MODULES = {PYMUPDF: "pymupdf4llm", DOCLING: "docling"}

# File types whose fallback to pymupdf was already logged by this worker.
_fallbacks_logged: set[str] = set()


@dataclass(frozen=True)
class _Job:
    """A document to hand to a parser process."""

    implementation: str
    document: Document
    file_type: str

    def call(self) -> tuple[str, tuple[object, ...]]:
        args: tuple[object, ...] = (self.document.content, self.file_type)
        if self.implementation == DOCLING:
            args = (*args, str(document_settings.docling_cache_dir()))
        return _PARSER_FUNCTIONS[self.implementation], args


class Parser:
    """The parse step of one vectorizer: text passes through (or is refused), a document is
    parsed in a parser process under a time limit, awaited without blocking the loop."""

    def __init__(self, implementation: str) -> None:
        self.implementation = implementation

    @property
    def timeout(self) -> float:
        # Read when a document needs it, so text-only vectorizers never depend on it.
        return document_settings.parse_timeout()

    def parse_now(self, payload: Payload) -> str | None:
        """The text, when no parser process is needed (text, or a text document); else None."""
        planned = self._plan(payload)
        return planned if isinstance(planned, str) else None

    async def parse(self, payload: Payload) -> str:
        planned = self._plan(payload)
        if isinstance(planned, str):
            return planned
        function, args = planned.call()
        try:
            return await parse_pool.get_pool().run_async(function, args, self.timeout)
        except parse_pool.ParserFailure as exc:
            raise self._failure(planned, exc) from exc

    def _plan(self, payload: Payload) -> str | _Job:
        # An empty payload (NULL or empty column) is skipped without error, as in pgai.
        if isinstance(payload, str) and not payload:
            return ""
        if self.implementation == "none":
            return _parse_none(payload)
        if isinstance(payload, str):
            if self.implementation == "auto":
                return payload
            raise RowError(
                "parsing",
                f"Column content must be a document to be parsed by {self.implementation}, "
                "use parsing_auto or parsing_none instead",
            )
        file_type = _known_file_type(payload)
        if file_type in _TEXT_TYPES:
            return _decode_text(payload)
        implementation = _auto(file_type) if self.implementation == "auto" else self.implementation
        _check_available(implementation, file_type)
        return _Job(implementation, payload, file_type)

    def _failure(self, job: _Job, exc: parse_pool.ParserFailure) -> RowError:
        what = f"the {job.file_type} document"
        if isinstance(exc, parse_pool.ParserTimedOut):
            message = (
                f"{job.implementation} took longer than {self.timeout:g}s to parse {what} "
                f"(limit set by {document_settings.PARSE_TIMEOUT_ENV}); "
                "its parser process was stopped"
            )
        elif isinstance(exc, parse_pool.ParserCrashed):
            message = f"{job.implementation} crashed while parsing {what}: {exc.message}"
        else:
            message = f"{job.implementation} could not parse {what}: {exc.message}"
        return RowError("parsing", message)


def make_parser(config: Parsing) -> Parser:
    """The parser for a vectorizer's `parsing` config, reusable across rows."""
    return _PARSERS.build(config)


def _installed(implementation: str) -> Callable[[Parsing], Parser]:
    """A parser factory that refuses, at build time, a parser this worker does not have:
    every document row would fail on it."""

    def build(_: Parsing) -> Parser:
        if not parse_docling.has_module(_PARSER_MODULES[implementation]):
            raise VectorizerError(
                f"parsing_{implementation} is configured but the {implementation} parser is "
                f"not installed in this worker ({parse_docling.INSTALL_HINT})",
                step="parsing",
            )
        return Parser(implementation)

    return build


def _parse_none(payload: Payload) -> str:
    if isinstance(payload, Document):
        raise RowError(
            "parsing",
            "Cannot chunk Document with parsing_none, use parsing_auto or parsing_pymupdf",
        )
    return payload


def _auto(file_type: str) -> str:
    route = _AUTO_ROUTES.get(file_type)
    if route is None:
        raise RowError(
            "parsing",
            f"parsing_auto has no parser for {file_type} documents; it reads "
            f"{', '.join(sorted(_AUTO_ROUTES.keys() | _TEXT_TYPES))}",
            retryable=False,
        )
    if route == DOCLING and file_type in PYMUPDF_TYPES:
        # pymupdf reads it too: better its Markdown than an error while docling cannot.
        reason = parse_docling.unavailable_reason(file_type, document_settings.docling_cache_dir())
        if reason is not None:
            _log_fallback(file_type, reason)
            return PYMUPDF
    return route


def _log_fallback(file_type: str, reason: str) -> None:
    if file_type not in _fallbacks_logged:
        _fallbacks_logged.add(file_type)
        log.info("parsing_auto: %s documents go to pymupdf, because %s", file_type, reason)


def _check_available(implementation: str, file_type: str) -> None:
    readable = PYMUPDF_TYPES.keys() if implementation == PYMUPDF else parse_docling.DOCLING_TYPES
    if file_type not in readable:
        other = "parsing_docling" if implementation == PYMUPDF else "parsing_pymupdf"
        raise RowError(
            "parsing",
            f"parsing_{implementation} reads {', '.join(sorted(readable))} documents, "
            f"not {file_type}; use parsing_auto or {other} for it",
            retryable=False,
        )
    if not parse_docling.has_module(_PARSER_MODULES[implementation]):
        raise RowError(
            "parsing",
            f"the {implementation} parser is not installed in this worker "
            f"({parse_docling.INSTALL_HINT})",
        )
    if implementation == DOCLING:
        cache_dir: Path = document_settings.docling_cache_dir()
        reason = parse_docling.unavailable_reason(file_type, cache_dir)
        if reason is not None:
            # Retryable: once the models are fetched the same rows parse, with no change.
            raise RowError("parsing", reason)


def _known_file_type(document: Document) -> str:
    if document.file_type is None:
        tried = describe_guess(document.source, document.content_type)
        raise RowError(
            "parsing",
            "No file extension could be determined: the document's type is unknown "
            f"(looked at {tried})",
            retryable=False,
        )
    return document.file_type


def _decode_text(document: Document) -> str:
    try:
        # utf-8-sig drops a leading byte-order mark, which would otherwise end up in the chunk.
        return document.content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RowError(
            "parsing", f"the {document.file_type} document is not valid UTF-8: {exc}"
        ) from exc


_PARSERS: Registry[Callable[[Parsing], Parser]] = Registry(
    "parsing",
    {
        AutoParsing: lambda _: Parser("auto"),
        NoParsing: lambda _: Parser("none"),
        PyMuPDFParsing: _installed(PYMUPDF),
        DoclingParsing: _installed(DOCLING),
    },
)
