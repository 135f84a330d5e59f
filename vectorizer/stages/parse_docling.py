"""`parsing_docling`: office documents, HTML, PDF and images to Markdown with docling.

Two halves. `unavailable_reason` runs in the worker: it decides from the file system alone
(no docling import, which takes seconds) whether a document type can be parsed here, so a
PDF never reaches docling without its layout model. `to_markdown` runs in a parser process
(parse_pool.py), where docling's DocumentConverter is built once, lazily, and reused.

Models are never downloaded at parse time: the converter reads them from the cache directory
(VECTORIZER_DOCLING_CACHE_DIR) that `vectorizer download-models` fills, and parser processes
run with the Hugging Face hub offline.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DOWNLOAD_COMMAND = "vectorizer download-models"
INSTALL_HINT = "pip install 'vectorizer[docs]'"

# Converted by docling's format backends alone: no model, works offline out of the box.
MODEL_FREE_TYPES = frozenset({"docx", "pptx", "xlsx", "html", "md", "csv", "adoc", "asciidoc"})
# Need the layout model (PDF) and, for images, OCR as well.
PDF_TYPES = frozenset({"pdf"})
IMAGE_TYPES = frozenset({"png", "jpg", "tif", "bmp", "webp"})
DOCLING_TYPES = MODEL_FREE_TYPES | PDF_TYPES | IMAGE_TYPES

# Folder names docling's own downloader uses inside the cache directory (checked against
# docling by the tests, so an upgrade that renames them is noticed).
LAYOUT_MODEL_FOLDER = "docling-project--docling-layout-heron"
TABLE_MODEL_FOLDER = "docling-project--docling-models"
OCR_MODEL_FOLDER = "RapidOcr"

# The name docling sees for a stream picks its backend; ours come from the detected type.
_STREAM_EXTENSIONS = {"asciidoc": "adoc"}


@dataclass(frozen=True)
class _Requirement:
    what: str
    folder: str | None = None
    module: str | None = None


_LAYOUT = (
    _Requirement("the layout model", folder=LAYOUT_MODEL_FOLDER),
    _Requirement("torch (the CPU build)", module="torch"),
    _Requirement("transformers", module="transformers"),
)
_OCR = (
    _Requirement("the RapidOCR models", folder=OCR_MODEL_FOLDER),
    _Requirement("rapidocr", module="rapidocr"),
    _Requirement("onnxruntime", module="onnxruntime"),
)


def installed() -> bool:
    return has_module("docling")


def needs_models(file_type: str) -> bool:
    return file_type in PDF_TYPES or file_type in IMAGE_TYPES


def unavailable_reason(file_type: str, cache_dir: Path) -> str | None:
    """Why docling cannot parse `file_type` documents in this worker, or None if it can."""
    if not installed():
        return f"docling is not installed in this worker ({INSTALL_HINT})"
    requirements: tuple[_Requirement, ...] = ()
    if file_type in PDF_TYPES:
        requirements = _LAYOUT
    elif file_type in IMAGE_TYPES:
        requirements = _LAYOUT + _OCR
    missing_models = [r.what for r in requirements if r.folder and not _ready(cache_dir / r.folder)]
    missing_modules = [r.what for r in requirements if r.module and not has_module(r.module)]
    problems = []
    if missing_models:
        problems.append(
            f"its models are missing from {cache_dir} ({', '.join(missing_models)}); "
            f"fetch them with `{DOWNLOAD_COMMAND}` on a machine that can reach Hugging Face, "
            f"or point VECTORIZER_DOCLING_CACHE_DIR at a copy"
        )
    if missing_modules:
        problems.append(f"it needs {', '.join(missing_modules)} installed")
    if not problems:
        return None
    return f"docling cannot parse {file_type} documents here: " + "; ".join(problems)


def _ready(folder: Path) -> bool:
    try:
        return folder.is_dir() and any(folder.iterdir())
    except OSError:
        return False


@functools.cache
def has_module(name: str) -> bool:
    """Whether `name` is importable here."""
    # find_spec locates without importing, so the worker stays light.
    return importlib.util.find_spec(name) is not None


# --- inside a parser process ---------------------------------------------------------------


def to_markdown(content: bytes, file_type: str, cache_dir: str) -> str:
    """Markdown of `content` (a `file_type` document) via docling; runs in a parser process."""
    from docling.datamodel.base_models import DocumentStream

    extension = _STREAM_EXTENSIONS.get(file_type, file_type)
    stream = DocumentStream(name=f"document.{extension}", stream=io.BytesIO(content))
    result = _converter(cache_dir).convert(stream, raises_on_error=True)
    return paged_markdown(result.document)


def paged_markdown(document: Any) -> str:
    """The document's Markdown; for a paged one (PDF) a PagedText that knows its page starts.

    Docling's provenance says which page each item is on. Each page's own Markdown is found in
    the whole document's by its first line, in order; a page with nothing found there starts
    where the next found one does, so offsets map to the page that has text.
    """
    from vectorizer.stages.chunks import PagedText

    full = str(document.export_to_markdown())
    page_numbers = sorted(getattr(document, "pages", None) or {})
    if len(page_numbers) < 2 or page_numbers != list(range(1, len(page_numbers) + 1)):
        return full
    found: list[int | None] = []
    cursor = 0
    for page_no in page_numbers:
        page_text = str(document.export_to_markdown(page_no=page_no))
        first_line = next((line for line in page_text.splitlines() if line.strip()), None)
        position = full.find(first_line, cursor) if first_line else -1
        found.append(position if position >= 0 else None)
        if position >= 0:
            cursor = position
    starts: list[int] = []
    upcoming = len(full)
    for position in reversed(found):
        upcoming = position if position is not None else upcoming
        starts.append(upcoming)
    starts.reverse()
    starts[0] = 0
    return PagedText(full, tuple(starts))


@functools.cache
def _converter(cache_dir: str) -> Any:
    """Built once per parser process: building it takes seconds."""
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import PdfPipelineOptions, RapidOcrOptions
    from docling.document_converter import DocumentConverter, ImageFormatOption, PdfFormatOption

    tables = _ready(Path(cache_dir) / TABLE_MODEL_FOLDER) and has_module("docling_ibm_models")
    # Two option objects on purpose: sharing one (pgai's bug) turns OCR on for PDFs too,
    # which is slow and can replace good embedded text with recognised text.
    pdf_options = PdfPipelineOptions(
        artifacts_path=cache_dir, do_ocr=False, do_table_structure=tables
    )
    image_options = PdfPipelineOptions(
        artifacts_path=cache_dir,
        do_ocr=True,
        ocr_options=RapidOcrOptions(backend="onnxruntime"),
        do_table_structure=tables,
    )
    log.info("docling converter ready (models from %s, table structure %s)", cache_dir, tables)
    return DocumentConverter(
        allowed_formats=[
            InputFormat.PDF,
            InputFormat.IMAGE,
            InputFormat.DOCX,
            InputFormat.PPTX,
            InputFormat.XLSX,
            InputFormat.HTML,
            InputFormat.MD,
            InputFormat.CSV,
            InputFormat.ASCIIDOC,
        ],
        format_options={
            InputFormat.PDF: PdfFormatOption(pipeline_options=pdf_options),
            InputFormat.IMAGE: ImageFormatOption(pipeline_options=image_options),
        },
    )
