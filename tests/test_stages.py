"""Row stages (load → parse → chunk → format) and their pipeline; pure Python, no database."""

from __future__ import annotations

import io
import random
import string
import uuid
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from langchain_text_splitters import CharacterTextSplitter as LangchainCharacter
from langchain_text_splitters import RecursiveCharacterTextSplitter as LangchainRecursive
from pydantic import TypeAdapter

from tests import document_samples as samples
from vectorizer.config import (
    AutoParsing,
    CharacterTextSplitter,
    ChunkValue,
    ColumnLoading,
    Config,
    DoclingParsing,
    Loading,
    NoChunking,
    NoParsing,
    Parsing,
    PyMuPDFParsing,
    PythonTemplate,
    RecursiveCharacterTextSplitter,
)
from vectorizer.errors import RowError, VectorizerError
from vectorizer.stages.chunking import make_chunker
from vectorizer.stages.filetypes import guess_file_type
from vectorizer.stages.formatting import make_formatter, template_columns
from vectorizer.stages.loading import ColumnLoader, make_loader
from vectorizer.stages.parsing import make_parser
from vectorizer.stages.payload import Document, Payload
from vectorizer.stages.pipeline import PreparedChunks, RowPipeline

DEFAULT_SEPARATORS = ["\n\n", "\n", ".", "?", "!", " ", ""]

# --- sample documents ------------------------------------------------------------------------

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(17)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(16)
GIF = b"GIF89a\x01\x00\x01\x00" + bytes(8)


def _zip(members: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


DOCX = _zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"})
XLSX = _zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})
PPTX = _zip({"[Content_Types].xml": b"<Types/>", "ppt/presentation.xml": b"<p/>"})
EPUB = _zip({"mimetype": b"application/epub+zip", "META-INF/container.xml": b"<container/>"})
PLAIN_ZIP = _zip({"notes/readme.txt": b"hello"})


# --- file types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (PDF, "pdf"),
        (PNG, "png"),
        (JPEG, "jpg"),
        (GIF, "gif"),
        (DOCX, "docx"),
        (XLSX, "xlsx"),
        (PPTX, "pptx"),
        (EPUB, "epub"),
        (PLAIN_ZIP, "zip"),
        (b"PK\x03\x04 truncated archive", "zip"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "html"),
        (b"\xef\xbb\xbf\n  <html lang='en'><p>x</p></html>", "html"),
        (b"<!-- generated --><html></html>", "html"),
        (b"plain words\nacross lines", "txt"),
        ("caf\u00e9 \u2603 \u65e5\u672c".encode(), "txt"),
        (b"\x00\x01\x02\x03binary", None),
        (b"\xff\xfe\xfa not utf-8", None),
        (b"", None),
    ],
)
def test_guess_file_type_from_bytes(content: bytes, expected: str | None) -> None:
    assert guess_file_type(content) == expected


def test_guess_file_type_name_is_the_fallback_when_bytes_have_no_signature() -> None:
    assert guess_file_type(b"# Title\n\nbody", "notes.md") == "md"
    assert guess_file_type(b"a,b\n1,2\n", "s3://bucket/data/Table.CSV?versionId=3") == "csv"
    # Magic bytes beat a misleading name.
    assert guess_file_type(PDF, "report.txt") == "pdf"
    # A name without an extension leaves the decision to the content.
    assert guess_file_type(b"just text", "README") == "txt"


# --- loading ---------------------------------------------------------------------------------


def _column_loader(column: str = "body") -> ColumnLoader:
    loader = make_loader(ColumnLoading(implementation="column", column_name=column))
    assert isinstance(loader, ColumnLoader)
    return loader


async def test_column_loader_returns_text_as_is() -> None:
    assert await _column_loader().load({"id": 1, "body": "some text"}) == "some text"


async def test_column_loader_null_and_empty_become_empty_text() -> None:
    loader = _column_loader()
    assert await loader.load({"body": None}) == ""
    assert await loader.load({"body": b""}) == ""


@pytest.mark.parametrize(
    ("raw", "file_type"),
    [
        (PDF, "pdf"),
        (memoryview(PNG), "png"),
        (bytearray(DOCX), "docx"),
        (b"hello plain text", "txt"),
    ],
)
async def test_column_loader_bytea_becomes_document(raw: Any, file_type: str) -> None:
    payload = await _column_loader().load({"body": raw})
    assert payload == Document(content=bytes(raw), file_type=file_type, source=None)
    assert type(payload.content) is bytes


async def test_column_loader_missing_column_is_a_vectorizer_error_at_loading() -> None:
    with pytest.raises(VectorizerError) as caught:
        await _column_loader("content").load({"id": 1, "body": "x"})
    assert caught.value.step == "loading"
    assert '"content"' in caught.value.message


async def test_column_loader_rejects_non_text_values() -> None:
    with pytest.raises(RowError) as caught:
        await _column_loader().load({"body": 42})
    assert caught.value.step == "loading"
    assert "int" in caught.value.message


def test_make_loader_accepts_a_validated_loading_union() -> None:
    config = TypeAdapter(Loading).validate_python({"implementation": "column", "column_name": "b"})
    assert isinstance(make_loader(config), ColumnLoader)


# --- parsing ---------------------------------------------------------------------------------

AUTO = AutoParsing(implementation="auto")
NONE = NoParsing(implementation="none")
PYMUPDF = PyMuPDFParsing(implementation="pymupdf")
DOCLING = DoclingParsing(implementation="docling")


async def parse(payload: Payload, config: Parsing) -> str:
    return await make_parser(config).parse(payload)


@pytest.mark.parametrize("config", [AUTO, NONE])
async def test_text_passes_through_auto_and_none(config: Parsing) -> None:
    assert await parse("  keep\n me  ", config) == "  keep\n me  "


async def test_parsing_none_rejects_documents() -> None:
    with pytest.raises(RowError) as caught:
        await parse(Document(b"hi", "txt"), NONE)
    assert caught.value.step == "parsing"
    assert caught.value.message == (
        "Cannot chunk Document with parsing_none, use parsing_auto or parsing_pymupdf"
    )


@pytest.mark.parametrize("file_type", ["txt", "md"])
async def test_parsing_auto_decodes_text_documents(file_type: str) -> None:
    content = "\ufeffcaf\u00e9 \u2014 r\u00e9sum\u00e9".encode()
    assert await parse(Document(content, file_type), AUTO) == "caf\u00e9 \u2014 r\u00e9sum\u00e9"


async def test_parsing_auto_names_the_utf8_problem() -> None:
    with pytest.raises(RowError) as caught:
        await parse(Document(b"ok \xff\xfe bad", "txt"), AUTO)
    assert caught.value.step == "parsing"
    assert "not valid UTF-8" in caught.value.message
    assert "0xff" in caught.value.message


async def test_parsing_unknown_document_type_is_a_row_error() -> None:
    with pytest.raises(RowError) as caught:
        await parse(Document(b"\x00\x01", None), AUTO)
    assert caught.value.step == "parsing"
    assert "No file extension could be determined" in caught.value.message


@pytest.mark.parametrize(("config", "name"), [(PYMUPDF, "pymupdf"), (DOCLING, "docling")])
async def test_document_parsers_reject_text(config: Parsing, name: str) -> None:
    with pytest.raises(RowError) as caught:
        await parse("plain text", config)
    assert caught.value.step == "parsing"
    assert caught.value.message == (
        f"Column content must be a document to be parsed by {name}, "
        "use parsing_auto or parsing_none instead"
    )


async def test_document_parsers_decode_text_documents_like_pgai() -> None:
    # pgai's shared document path decodes txt/md before handing anything to the parser.
    assert await parse(Document(b"# heading", "md"), PYMUPDF) == "# heading"


async def test_make_parser_is_reusable() -> None:
    parser = make_parser(AUTO)
    assert await parser.parse("a") == "a"
    assert await parser.parse(Document(b"b", "txt")) == "b"


# --- chunking --------------------------------------------------------------------------------

TEXTS = [
    "",
    "short",
    "Hello world. How are you? Fine! Thanks.",
    "Paragraph one has a few sentences. It ends here.\n\nParagraph two? Yes!\nA new line.",
    ("The quick brown fox jumps over the lazy dog. " * 60).strip(),
    "\n\n".join(f"Section {i}.\n" + "word " * (i * 37 % 250) for i in range(1, 12)),
    "x" * 2500,
    "Unicode \u00e9t\u00e9 \u2603 \u65e5\u672c\u8a9e. " * 90,
    "# Title\n\nIntro line.\n## Part A\nalpha beta | gamma|delta  |  epsilon\n## Part B\nend",
    "lines\nonly\nhere\n" * 200,
]

CHARACTER_CONFIGS: list[dict[str, Any]] = [
    {},
    {"chunk_size": 50, "chunk_overlap": 10},
    {"chunk_size": 20, "chunk_overlap": 0, "separator": " "},
    {"chunk_size": 120, "chunk_overlap": 30, "separator": "\n"},
    {"chunk_size": 15, "chunk_overlap": 5, "separator": ""},
    {"chunk_size": 30, "chunk_overlap": 0, "separator": r"\s*\|\s*", "is_separator_regex": True},
    {"chunk_size": 60, "chunk_overlap": 10, "separator": r"(?=## )", "is_separator_regex": True},
    {"chunk_size": 100, "chunk_overlap": 20, "separator": r"\n\s*\n", "is_separator_regex": True},
]

RECURSIVE_CONFIGS: list[dict[str, Any]] = [
    {},
    {"chunk_size": 50, "chunk_overlap": 10},
    {"chunk_size": 12, "chunk_overlap": 0},
    {"chunk_size": 200, "chunk_overlap": 199},
    {"chunk_size": 40, "chunk_overlap": 5, "separators": ["\n", " "]},
    {
        "chunk_size": 25,
        "chunk_overlap": 5,
        "separators": [r"(?=#)", r"\s+", ""],
        "is_separator_regex": True,
    },
    {
        "chunk_size": 80,
        "chunk_overlap": 0,
        "separators": [r"[.!?]\s+", " "],
        "is_separator_regex": True,
    },
]


def _character(options: Mapping[str, Any]) -> CharacterTextSplitter:
    return CharacterTextSplitter(implementation="character_text_splitter", **options)


def _recursive(options: Mapping[str, Any]) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        implementation="recursive_character_text_splitter", **options
    )


def test_chunking_defaults_are_pgais() -> None:
    character, recursive = _character({}), _recursive({})
    assert (character.chunk_size, character.chunk_overlap, character.separator) == (
        800,
        400,
        "\n\n",
    )
    assert (recursive.chunk_size, recursive.chunk_overlap) == (800, 400)
    assert recursive.separators == DEFAULT_SEPARATORS


@pytest.mark.parametrize("options", CHARACTER_CONFIGS)
def test_character_splitter_matches_langchain(options: dict[str, Any]) -> None:
    config = _character(options)
    reference = LangchainCharacter(
        separator=config.separator,
        chunk_size=config.chunk_size,
        chunk_overlap=config.chunk_overlap,
        is_separator_regex=config.is_separator_regex,
    )
    chunker = make_chunker(config)
    for text in TEXTS:
        assert chunker(text) == reference.split_text(text), text[:40]


@pytest.mark.parametrize("options", RECURSIVE_CONFIGS)
def test_recursive_splitter_matches_langchain(options: dict[str, Any]) -> None:
    config = _recursive(options)
    reference = LangchainRecursive(
        separators=config.separators,
        chunk_size=config.chunk_size,
        chunk_overlap=config.chunk_overlap,
        is_separator_regex=config.is_separator_regex,
    )
    chunker = make_chunker(config)
    for text in TEXTS:
        assert chunker(text) == reference.split_text(text), text[:40]


def test_recursive_splitter_known_output() -> None:
    # Worked out by hand from LangChain's rules: separators kept at the start of the next piece.
    chunker = make_chunker(_recursive({"chunk_size": 12, "chunk_overlap": 0}))
    assert chunker("Hello world. How are you? Fine!") == [
        "Hello world",
        ". How are",
        "you",
        "? Fine!",
    ]


def test_character_splitter_known_output() -> None:
    chunker = make_chunker(_character({"separator": " ", "chunk_size": 12, "chunk_overlap": 6}))
    assert chunker("one two three four five") == ["one two", "two three", "three four", "four five"]


def test_default_splitters_keep_short_text_whole() -> None:
    text = "A short note. Under eight hundred characters."
    assert make_chunker(_recursive({}))(text) == [text]
    assert make_chunker(_character({}))(text) == [text]


@pytest.mark.parametrize(
    "config",
    [
        NoChunking(implementation="none"),
        CharacterTextSplitter(implementation="character_text_splitter"),
        RecursiveCharacterTextSplitter(implementation="recursive_character_text_splitter"),
    ],
    ids=["none", "character", "recursive"],
)
@pytest.mark.parametrize("blank", ["", " ", "\n\n\t  \n", "\u3000\u00a0"])
def test_blank_text_gives_no_chunks(config: Any, blank: str) -> None:
    assert make_chunker(config)(blank) == []


def test_none_chunking_returns_the_whole_text() -> None:
    text = "  whole text,\n\nkept exactly  " * 100
    assert make_chunker(NoChunking(implementation="none"))(text) == [text]


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (_character({"chunk_size": 10, "chunk_overlap": 20}), "larger chunk overlap (20)"),
        (_recursive({"chunk_size": 0, "chunk_overlap": 0}), "chunk_size must be > 0"),
        (_recursive({"chunk_size": 10, "chunk_overlap": -1}), "chunk_overlap must be >= 0"),
        (_character({"separator": "(", "is_separator_regex": True}), "not a valid regex"),
        (_recursive({"separators": ["\n", "[a-"], "is_separator_regex": True}), "'[a-'"),
    ],
)
def test_bad_chunking_config_is_a_vectorizer_error(config: Any, needle: str) -> None:
    with pytest.raises(VectorizerError) as caught:
        make_chunker(config)
    assert caught.value.step == "chunking"
    assert needle in caught.value.message


# --- formatting ------------------------------------------------------------------------------

ROW: dict[str, Any] = {
    "id": 7,
    "title": "Post",
    "published": datetime(2024, 1, 6, tzinfo=UTC),
    "day": date(2024, 1, 6),
    "price": Decimal("12.50"),
    "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "note": None,
}


def _template(template: str) -> PythonTemplate:
    return PythonTemplate(implementation="python_template", template=template)


def test_default_template_returns_the_chunk() -> None:
    formatter = make_formatter(PythonTemplate(implementation="python_template"))
    assert formatter("the chunk", ROW) == "the chunk"


def test_template_renders_values_with_str() -> None:
    formatter = make_formatter(
        _template("$title #$id at ${published} on $day: ${price} $ref $note\n$chunk")
    )
    assert formatter("body", ROW) == (
        "Post #7 at 2024-01-06 00:00:00+00:00 on 2024-01-06: 12.50 "
        "12345678-1234-5678-1234-567812345678 None\nbody"
    )


@pytest.mark.parametrize(
    "template", ["$chunk", "${chunk}", "title: $title\n\n$chunk", "$$${price} ($id)", "no fields"]
)
def test_template_matches_string_template_substitute(template: str) -> None:
    expected = string.Template(template).substitute(chunk="a chunk", **ROW)
    assert make_formatter(_template(template))("a chunk", ROW) == expected


def test_template_matches_string_template_on_generated_templates() -> None:
    # templates built from every piece the syntax has, next to each other in any order
    pieces = ["$title", "${id}", "$$", "$chunk", "${chunk}", "$$title", "$ ", "x$", "é", " ", "\n"]
    rng = random.Random(5)
    row = {**ROW, "weird name": 1}
    for _ in range(2000):
        template = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        reference = string.Template(template)
        if not reference.is_valid():
            continue
        formatter = make_formatter(_template(template))
        try:
            expected = reference.substitute(row, chunk="the chunk")
        except KeyError as missing:  # e.g. "$$" then "$title" reads "$" then "$title"
            with pytest.raises(VectorizerError, match=f'column "{missing.args[0]}"'):
                formatter("the chunk", row)
            continue
        assert formatter("the chunk", row) == expected, template


def test_template_missing_column_names_it() -> None:
    # every row has every source column: a missing one fails them all, so it is the vectorizer's
    formatter = make_formatter(_template("$title by $author: $chunk"))
    with pytest.raises(VectorizerError) as caught:
        formatter("c", ROW)
    assert caught.value.step == "formatting"
    assert caught.value.message == (
        'template references column "author" which the source table does not have'
    )


def test_template_columns_are_the_placeholders_but_chunk() -> None:
    assert template_columns(_template("$title by ${author}: $chunk $$x")) == {"title", "author"}
    assert template_columns(_template("$chunk")) == frozenset()


def test_template_ignores_columns_that_are_not_identifiers() -> None:
    row = {"my col": 1, 'quo"ted': 2, "title": "T", 3: "non-string key"}
    assert make_formatter(_template("${title}|$chunk"))("c", row) == "T|c"


def test_template_chunk_placeholder_is_the_chunk_even_with_a_chunk_column() -> None:
    assert make_formatter(_template("[$chunk]"))("real", {"chunk": "column"}) == "[real]"


def test_malformed_template_is_a_vectorizer_error() -> None:
    with pytest.raises(VectorizerError) as caught:
        make_formatter(_template("price: $ 5 $chunk"))
    assert caught.value.step == "formatting"
    assert "invalid placeholder" in caught.value.message


def test_chunk_value_returns_chunk_unchanged() -> None:
    formatter = make_formatter(ChunkValue(implementation="chunk_value"))
    assert formatter("  $title stays  ", ROW) == "  $title stays  "


# --- pipeline --------------------------------------------------------------------------------


def _config(**stages: Any) -> Config:
    raw: dict[str, Any] = {
        "version": "0.12.1",
        "loading": {"implementation": "column", "column_name": "body"},
        "parsing": {"implementation": "auto"},
        "embedding": {"implementation": "openai", "model": "m", "dimensions": 3},
        "chunking": {
            "implementation": "recursive_character_text_splitter",
            "chunk_size": 40,
            "chunk_overlap": 10,
        },
        "formatting": {"implementation": "python_template", "template": "$title: $chunk"},
        "destination": {"implementation": "table", "target_schema": "s", "target_table": "t"},
    }
    raw.update(stages)
    return Config.model_validate(raw)


BODY = "First sentence here. Second one follows! A third? " * 4


async def test_pipeline_formats_every_chunk_in_order() -> None:
    chunks = LangchainRecursive(
        separators=DEFAULT_SEPARATORS, chunk_size=40, chunk_overlap=10
    ).split_text(BODY)
    assert len(chunks) > 3
    prepared = await RowPipeline(_config()).prepare_row({"id": 1, "title": "T", "body": BODY})
    assert prepared.texts == [f"T: {chunk}" for chunk in chunks]


async def test_pipeline_reads_text_documents_from_bytea() -> None:
    pipeline = RowPipeline(_config(chunking={"implementation": "none"}))
    row = {"title": "Doc", "body": "r\u00e9sum\u00e9 text".encode()}
    assert (await pipeline.prepare_row(row)).texts == ["Doc: r\u00e9sum\u00e9 text"]


@pytest.mark.parametrize("body", [None, "", "   \n\t "])
async def test_pipeline_rows_without_content_give_no_chunks(body: str | None) -> None:
    assert (await RowPipeline(_config()).prepare_row({"title": "T", "body": body})).texts == []


@pytest.mark.parametrize(
    ("row", "step", "kind"),
    [
        # a column every row lacks is the vectorizer's error; a bad value is the row's
        ({"title": "T"}, "loading", VectorizerError),
        ({"title": "T", "body": PDF}, "parsing", RowError),
        ({"body": "text without a title column"}, "formatting", VectorizerError),
    ],
)
async def test_pipeline_errors_are_tagged_with_their_step(
    row: dict[str, Any], step: str, kind: type[RowError | VectorizerError]
) -> None:
    with pytest.raises(kind) as caught:
        await RowPipeline(_config()).prepare_row(row)
    assert caught.value.step == step


async def test_pipeline_wraps_unexpected_stage_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = RowPipeline(_config())

    def broken(text: str) -> list[str]:
        raise ValueError("splitter blew up")

    monkeypatch.setattr(pipeline, "_chunk", broken)
    with pytest.raises(RowError) as caught:
        await pipeline.prepare_row({"title": "T", "body": "text"})
    assert caught.value.step == "chunking"
    assert caught.value.message == "splitter blew up"
    assert isinstance(caught.value.__cause__, ValueError)


async def test_pipeline_lets_vectorizer_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = RowPipeline(_config())
    failure = VectorizerError("parser backend missing", step="parsing")

    def broken(payload: object) -> str:
        raise failure

    # what both the text-at-hand path and the awaited one ask first
    monkeypatch.setattr(pipeline._parse, "_plan", broken)
    with pytest.raises(VectorizerError) as caught:
        await pipeline.prepare_row({"title": "T", "body": "text"})
    assert caught.value is failure


async def test_a_batch_mixing_text_at_hand_and_parsed_documents_keeps_row_order() -> None:
    # text columns are taken at once, a PDF waits for a parser process: results in row order
    pipeline = RowPipeline(_config())
    rows = [
        {"title": "A", "body": "first text"},
        {"title": "B", "body": samples.pdf()},
        {"title": "C", "body": None},
        {"title": "D", "body": 42},
        {"title": "E", "body": b"plain bytes text"},
        {"title": "F", "body": "last text"},
    ]
    prepared = await pipeline.prepare(rows)

    assert isinstance(prepared[0], PreparedChunks)
    assert prepared[0].texts == ["A: first text"]
    assert isinstance(prepared[1], PreparedChunks)
    assert prepared[1].texts and all(text.startswith("B: ") for text in prepared[1].texts)
    assert " ".join(prepared[1].texts).count(samples.words("pdf")[0]) >= 1
    assert prepared[2] == PreparedChunks()
    assert isinstance(prepared[3], RowError)
    assert prepared[3].step == "loading"
    assert "holds a int value" in prepared[3].message
    assert isinstance(prepared[4], PreparedChunks)
    assert prepared[4].texts == ["E: plain bytes text"]
    assert isinstance(prepared[5], PreparedChunks)
    assert prepared[5].texts == ["F: last text"]


@pytest.mark.parametrize(
    ("stages", "step"),
    [
        (
            {
                "chunking": {
                    "implementation": "character_text_splitter",
                    "chunk_size": 5,
                    "chunk_overlap": 6,
                }
            },
            "chunking",
        ),
        ({"formatting": {"implementation": "python_template", "template": "$"}}, "formatting"),
    ],
)
def test_pipeline_bad_config_fails_at_construction(stages: dict[str, Any], step: str) -> None:
    with pytest.raises(VectorizerError) as caught:
        RowPipeline(_config(**stages))
    assert caught.value.step == step


async def test_pipeline_chunk_and_format_is_thread_safe() -> None:
    pipeline = RowPipeline(_config())
    rows = [{"title": f"T{i}", "body": BODY * (1 + i % 5)} for i in range(64)]
    sequential = [(await pipeline.prepare_row(row)).texts for row in rows]

    def chunk_and_format(row: dict[str, Any]) -> list[str]:
        return pipeline.prepare_chunks(row["body"], row).texts

    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(chunk_and_format, rows))
    assert threaded == sequential
    assert all(
        chunk.startswith(f"{row['title']}: ")
        for row, out in zip(rows, threaded, strict=True)
        for chunk in out
    )
