"""Document parsing: each parser on each format it claims, routing, the parser processes'
time limit and crash handling, file-type guessing, and docling without its models.

Documents are built by tests/document_samples.py. Parsers run in real parser processes with
the Hugging Face hub offline; docling's model cache points at an empty directory, so the
PDF and image paths take their "models missing" branch, never the network.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import document_samples as samples
from vectorizer.config import AutoParsing, DoclingParsing, NoParsing, PyMuPDFParsing
from vectorizer.errors import RowError, VectorizerError
from vectorizer.stages import parse_docling, parse_pool, parsing
from vectorizer.stages.filetypes import guess_file_type
from vectorizer.stages.loading import Document
from vectorizer.stages.parsing import Parser, make_parser

AUTO = make_parser(AutoParsing(implementation="auto"))
NONE = make_parser(NoParsing(implementation="none"))
PYMUPDF = make_parser(PyMuPDFParsing(implementation="pymupdf"))
DOCLING = make_parser(DoclingParsing(implementation="docling"))


@pytest.fixture(autouse=True)
def empty_model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No docling models, whatever the machine has in ~/.cache."""
    cache = tmp_path / "docling-models"
    monkeypatch.setenv("VECTORIZER_DOCLING_CACHE_DIR", str(cache))
    return cache


def _document(file_type: str) -> Document:
    content = samples.build(file_type)
    return Document(content=content, file_type=guess_file_type(content, f"sample.{file_type}"))


def _assert_words(text: str, file_type: str) -> None:
    lowered = text.lower()
    for word in samples.words(file_type):
        assert word.lower() in lowered, f"{word!r} missing from the {file_type} text: {text!r}"


# --- each parser on its formats --------------------------------------------------------------


@pytest.mark.parametrize("file_type", ["pdf", "epub", "fb2", "svg", "docx", "pptx", "html"])
async def test_pymupdf_reads_its_formats(file_type: str) -> None:
    document = _document(file_type)
    assert document.file_type == file_type
    _assert_words(await PYMUPDF.parse(document), file_type)


@pytest.mark.parametrize("file_type", ["docx", "pptx", "xlsx", "html"])
async def test_docling_reads_office_and_html_without_models(file_type: str) -> None:
    document = _document(file_type)
    assert document.file_type == file_type
    text = await DOCLING.parse(document)
    _assert_words(text, file_type)
    assert "#" in text or "|" in text  # Markdown structure, not bare text


async def test_docling_markdown_and_text_documents_are_decoded() -> None:
    assert (await DOCLING.parse(Document(samples.markdown(), "md"))).startswith("# Pangolin guide")
    assert (await PYMUPDF.parse(Document(samples.text(), "txt"))).startswith("Capybara")


@pytest.mark.parametrize(
    "file_type", ["pdf", "epub", "fb2", "svg", "docx", "pptx", "xlsx", "html", "md", "txt"]
)
async def test_parsing_auto_routes_every_format(file_type: str) -> None:
    _assert_words(await AUTO.parse(_document(file_type)), file_type)


async def test_async_parse_gives_the_same_text_and_keeps_the_loop_free() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        text = await PYMUPDF.parse(_document("pdf"))
    finally:
        task.cancel()
    _assert_words(text, "pdf")
    assert ticks > 0


# --- docling without its models ----------------------------------------------------------


@pytest.mark.parametrize("file_type", ["pdf", "png"])
async def test_docling_without_models_names_them_and_the_command(
    file_type: str, empty_model_cache: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(RowError) as caught:
        await DOCLING.parse(_document(file_type))
    assert time.monotonic() - started < 2.0  # decided from the file system, no download
    error = caught.value
    assert error.step == "parsing"
    assert "the layout model" in error.message
    assert "vectorizer download-models" in error.message
    assert str(empty_model_cache) in error.message
    if file_type == "png":
        assert "RapidOCR" in error.message
    # fetching the models fixes the row without touching it, so it is worth retrying later
    assert error.retryable


async def test_auto_sends_pdfs_to_pymupdf_when_docling_has_no_models(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "_fallbacks_logged", set())
    with caplog.at_level("INFO", logger="vectorizer.stages.parsing"):
        _assert_words(await AUTO.parse(_document("pdf")), "pdf")
        _assert_words(await AUTO.parse(_document("pdf")), "pdf")
    said = [
        r.getMessage() for r in caplog.records if "pdf documents go to pymupdf" in r.getMessage()
    ]
    assert len(said) == 1  # once per worker
    assert "vectorizer download-models" in said[0]


async def test_auto_falls_back_to_pymupdf_for_office_files_without_docling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parse_docling, "installed", lambda: False)
    _assert_words(await AUTO.parse(_document("docx")), "docx")
    with pytest.raises(RowError, match=r"docling is not installed"):
        await AUTO.parse(_document("xlsx"))


async def test_auto_images_need_docling_models() -> None:
    with pytest.raises(RowError, match="the layout model"):
        await AUTO.parse(_document("png"))


async def test_docling_with_a_broken_model_cache_fails_the_row_without_a_download(
    empty_model_cache: Path,
) -> None:
    # The folder is there (so the check passes) but holds no usable model: docling must fail
    # from its artifacts path, never fall back to fetching from the hub.
    folder = empty_model_cache / parse_docling.LAYOUT_MODEL_FOLDER
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(RowError) as caught:
        await DOCLING.parse(_document("pdf"))
    assert caught.value.message.startswith("docling could not parse the pdf document")


def test_model_folder_names_match_docling() -> None:
    names = parse_pool.get_pool().run(f"{__name__}:docling_folder_names", (), 60.0)
    assert names.split(",") == [
        parse_docling.LAYOUT_MODEL_FOLDER,
        parse_docling.TABLE_MODEL_FOLDER,
        parse_docling.OCR_MODEL_FOLDER,
    ]


def docling_folder_names() -> str:
    """Runs in a parser process, where docling is imported anyway."""
    from docling.datamodel.pipeline_options import LayoutObjectDetectionOptions
    from docling.models.stages.ocr.rapid_ocr_model import RapidOcrModel
    from docling.models.stages.table_structure.table_structure_model import (
        TableStructureModel,
    )

    layout = LayoutObjectDetectionOptions().model_spec.repo_id.replace("/", "--")
    return ",".join(
        [layout, TableStructureModel._model_repo_folder, RapidOcrModel._model_repo_folder]
    )


# --- wrong parser, wrong input -----------------------------------------------------------


async def test_parsers_refuse_formats_they_do_not_read() -> None:
    with pytest.raises(RowError) as caught:
        await PYMUPDF.parse(_document("xlsx"))
    assert "parsing_pymupdf reads" in caught.value.message
    assert "not xlsx" in caught.value.message
    assert not caught.value.retryable
    with pytest.raises(RowError, match=r"parsing_docling reads .* not epub"):
        await DOCLING.parse(_document("epub"))


async def test_parsing_none_tells_which_parser_to_use() -> None:
    with pytest.raises(RowError, match="use parsing_auto or parsing_pymupdf"):
        await NONE.parse(_document("pdf"))


async def test_auto_has_no_parser_for_a_zip() -> None:
    with pytest.raises(RowError, match="parsing_auto has no parser for zip documents"):
        await AUTO.parse(Document(b"PK\x05\x06" + bytes(18), "zip"))


async def test_a_corrupt_pdf_is_a_row_error_from_the_parser() -> None:
    with pytest.raises(RowError) as caught:
        await AUTO.parse(Document(b"%PDF-1.7\n garbage \x00\xff", "pdf"))
    assert caught.value.step == "parsing"
    assert caught.value.message.startswith("pymupdf could not parse the pdf document: ")


async def test_unknown_type_says_what_was_looked_at() -> None:
    document = Document(
        b"\x00\x01\x02", None, source="https://host/blob", content_type="application/x-thing"
    )
    with pytest.raises(RowError) as caught:
        await AUTO.parse(document)
    message = caught.value.message
    assert "No file extension could be determined" in message
    assert "leading bytes" in message
    assert "'https://host/blob'" in message
    assert "'application/x-thing'" in message


# --- the parser processes: time limit, crashes, replacement ------------------------------


def hang(*_: object) -> str:
    time.sleep(3600)
    return ""


def crash(*_: object) -> str:
    os.kill(os.getpid(), signal.SIGKILL)
    return ""


def echo_pid(*_: object) -> str:
    return str(os.getpid())


@pytest.fixture
def pool() -> Iterator[parse_pool.ParserPool]:
    own = parse_pool.ParserPool(1)
    yield own
    own.close()


def test_a_hung_parse_times_out_and_its_process_is_replaced(pool: parse_pool.ParserPool) -> None:
    first = pool.run(f"{__name__}:echo_pid", (), 30.0)
    started = time.monotonic()
    with pytest.raises(parse_pool.ParserTimedOut, match=r"longer than 0\.5s"):
        pool.run(f"{__name__}:hang", (), 0.5)
    assert time.monotonic() - started < 5.0
    second = pool.run(f"{__name__}:echo_pid", (), 30.0)
    assert second != first  # the stuck process is gone; a fresh one answers
    with pytest.raises(ProcessLookupError):
        os.kill(int(first), 0)


def test_a_crashing_parse_is_reported_and_the_next_one_works(pool: parse_pool.ParserPool) -> None:
    with pytest.raises(parse_pool.ParserCrashed, match="SIGKILL"):
        pool.run(f"{__name__}:crash", (), 30.0)
    assert pool.run(f"{__name__}:echo_pid", (), 30.0).isdigit()


def test_an_idle_process_is_reused(pool: parse_pool.ParserPool) -> None:
    assert pool.run(f"{__name__}:echo_pid", (), 30.0) == pool.run(f"{__name__}:echo_pid", (), 30.0)


async def test_a_cancelled_async_parse_frees_its_process(pool: parse_pool.ParserPool) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.run_async(f"{__name__}:hang", (), 60.0), 0.5)
    started = time.monotonic()
    # one slot only: this waits unless the hung parse was stopped when its caller gave up
    assert (await pool.run_async(f"{__name__}:echo_pid", (), 30.0)).isdigit()
    assert time.monotonic() - started < 10.0


def test_parser_errors_come_back_as_text(pool: parse_pool.ParserPool) -> None:
    with pytest.raises(parse_pool.ParserRaised, match="ModuleNotFoundError"):
        pool.run("no_such_module_here:parse", (), 30.0)


async def test_parse_timeout_is_a_row_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VECTORIZER_PARSE_TIMEOUT", "0.5")
    monkeypatch.setitem(parsing._PARSER_FUNCTIONS, parsing.PYMUPDF, f"{__name__}:hang")
    with pytest.raises(RowError) as caught:
        await Parser(parsing.PYMUPDF).parse(_document("pdf"))
    assert caught.value.step == "parsing"
    assert "longer than 0.5s" in caught.value.message
    assert "VECTORIZER_PARSE_TIMEOUT" in caught.value.message


async def test_async_parse_timeout_and_crash_are_row_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = Parser(parsing.PYMUPDF)
    monkeypatch.setitem(parsing._PARSER_FUNCTIONS, parsing.PYMUPDF, f"{__name__}:crash")
    with pytest.raises(RowError, match="pymupdf crashed while parsing the pdf document"):
        await parser.parse(_document("pdf"))
    monkeypatch.setenv("VECTORIZER_PARSE_TIMEOUT", "0.5")
    monkeypatch.setitem(parsing._PARSER_FUNCTIONS, parsing.PYMUPDF, f"{__name__}:hang")
    with pytest.raises(RowError, match=r"took longer than 0\.5s"):
        await parser.parse(_document("pdf"))


async def test_invalid_parse_timeout_is_a_vectorizer_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTORIZER_PARSE_TIMEOUT", "soon")
    with pytest.raises(VectorizerError, match="VECTORIZER_PARSE_TIMEOUT='soon'"):
        await PYMUPDF.parse(_document("pdf"))
    # text never needs the setting
    assert await AUTO.parse("plain") == "plain"


# --- file types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_type", "expected"),
    [
        ("pdf", "pdf"),
        ("png", "png"),
        ("docx", "docx"),
        ("pptx", "pptx"),
        ("xlsx", "xlsx"),
        ("epub", "epub"),
        ("html", "html"),
        ("fb2", "fb2"),
        ("svg", "svg"),
        ("txt", "txt"),
    ],
)
def test_samples_are_recognised_by_their_bytes(file_type: str, expected: str) -> None:
    assert guess_file_type(samples.build(file_type)) == expected


def test_mobi_is_recognised_at_its_offset() -> None:
    assert guess_file_type(bytes(60) + b"BOOKMOBI" + bytes(40)) == "mobi"


def _zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    return buffer.getvalue()


def test_xps_and_comic_book_archives_are_told_from_plain_zips() -> None:
    assert guess_file_type(_zip("FixedDocSeq.fdseq", "Documents/1/Pages/1.fpage")) == "xps"
    assert guess_file_type(_zip("001.png", "002.JPG")) == "cbz"
    assert guess_file_type(_zip("001.png", "notes.txt")) == "zip"


def test_extension_then_content_type_then_sniffing() -> None:
    markdown = samples.markdown()
    # no signature: the URI's extension decides, whatever the query string says
    assert guess_file_type(markdown, "https://h/notes.md?X-Amz-Signature=a.pdf") == "md"
    assert guess_file_type(markdown, "https://h/page.HTM") == "html"
    assert guess_file_type(markdown, "s3://b/doc.md.gz") == "md"
    # an extension that names no format we know falls through to the content type
    assert guess_file_type(samples.html(), "https://h/index.php", "text/html") == "html"
    assert guess_file_type(markdown, "https://h/doc", "text/markdown; charset=utf-8") == "md"
    # magic bytes beat both
    assert guess_file_type(samples.pdf(), "https://h/x.docx", "text/html") == "pdf"
    # nothing helps: plain UTF-8 is text, binary is unknown
    assert guess_file_type(markdown, "https://h/doc", "application/octet-stream") == "txt"
    assert guess_file_type(b"\x00\x01", "https://h/doc.bin", "application/x-thing") is None
