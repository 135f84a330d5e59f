"""Our character splitters against the installed LangChain, over thousands of generated texts.

pgai chunks with LangChain; a chunk boundary that moves costs a pgai user re-embedding after
switching workers, so every output must be LangChain's exactly, and where LangChain fails on a
text (a separator with groups of its own) ours fails too. The worker itself never imports
LangChain (it costs ~0.3 s per run); the last tests hold that.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_text_splitters import CharacterTextSplitter as LangchainCharacter
from langchain_text_splitters import RecursiveCharacterTextSplitter as LangchainRecursive

from vectorizer.config import CharacterTextSplitter, RecursiveCharacterTextSplitter
from vectorizer.stages.character_splitting import merge
from vectorizer.stages.chunking import make_chunker

ROOT = Path(__file__).resolve().parent.parent
SEEDS = range(8)
CASES_PER_SEED = 400

WORDS = ["a", "an", "the", "fox", "jumps", "über", "naïve", "日本語", "☃", "emoji🙂", "x|y", "##"]
GAPS = [" ", " ", " ", "  ", "\t", "\n", "\n\n", "\n\n\n", " \n ", "\u3000", ". ", "? ", "! "]
LITERALS = ["\n\n", "\n", " ", ".", "?", "!", ". ", "|", "##", "\t", "zzz", "\u3000"]
PATTERNS = [
    r"\s+",
    r"\n\s*\n",
    r"(?<=\. )",
    r"(?<=[.!?])\s",
    r"(?=## )",
    r"(?=#)",
    r"(?!\n)\s",
    r"(?<!\n)\n",
    r"[.!?]\s+",
    r"\s*\|\s*",
    r"x?",
    r"(\. )",
    r"(\n)(\n)",
    r"(a)?b",
    r"q{3}",
]


def text(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.05:
        return rng.choice(["", " ", "\n\n", " \t\n\u3000 ", "x"])
    if shape < 0.15:  # long unbroken words: only the last separators can cut them
        return " ".join("w" * rng.randint(1, 400) for _ in range(rng.randint(1, 6)))
    parts = []
    for _ in range(rng.choice([3, 10, 40, 200, 700])):
        parts.append(rng.choice(WORDS) if rng.random() < 0.8 else "".join(rng.choices("ab", k=30)))
        parts.append(rng.choice(GAPS))
    if rng.random() < 0.3:
        parts.insert(0, rng.choice(GAPS))
    return "".join(parts)


def sizes(rng: random.Random) -> tuple[int, int]:
    size = rng.choice([1, 2, 3, rng.randint(4, 40), rng.randint(40, 300), rng.randint(300, 2000)])
    overlap = rng.choice([0, 0, size, size - 1, rng.randint(0, size), size // 2])
    return size, max(overlap, 0)


def character_options(rng: random.Random) -> dict[str, Any]:
    regex = rng.random() < 0.4
    separator = rng.choice(PATTERNS if regex else [*LITERALS, ""])
    return {"separator": separator, "is_separator_regex": regex}


def recursive_options(rng: random.Random) -> dict[str, Any]:
    regex = rng.random() < 0.3
    pool = PATTERNS[:11] if regex else LITERALS
    if regex and rng.random() < 0.2:
        pool = PATTERNS  # group-bearing separators: LangChain fails on some texts, so must we
    separators = rng.sample(pool, rng.randint(0, 4))
    if rng.random() < 0.6:
        separators.append("")
    return {"separators": separators, "is_separator_regex": regex}


def outcome(split: Callable[[str], list[str]], sample: str) -> list[str] | str:
    try:
        return split(sample)
    except Exception as exc:  # LangChain's own failures: ours must fail the same way
        return f"raised {type(exc).__name__}"


def check(
    ours: Callable[[str], list[str]], theirs: Callable[[str], list[str]], sample: str
) -> None:
    expected = outcome(theirs, sample)
    assert outcome(ours, sample) == expected, repr(sample[:200])


@pytest.mark.parametrize("seed", SEEDS)
def test_character_splitter_matches_langchain_fuzzed(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(CASES_PER_SEED):
        size, overlap = sizes(rng)
        options = character_options(rng)
        config = CharacterTextSplitter(
            implementation="character_text_splitter",
            chunk_size=size,
            chunk_overlap=overlap,
            **options,
        )
        reference = LangchainCharacter(chunk_size=size, chunk_overlap=overlap, **options)
        check(make_chunker(config), reference.split_text, text(rng))


@pytest.mark.parametrize("seed", SEEDS)
def test_recursive_splitter_matches_langchain_fuzzed(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(CASES_PER_SEED):
        size, overlap = sizes(rng)
        options = recursive_options(rng)
        config = RecursiveCharacterTextSplitter(
            implementation="recursive_character_text_splitter",
            chunk_size=size,
            chunk_overlap=overlap,
            **options,
        )
        reference = LangchainRecursive(chunk_size=size, chunk_overlap=overlap, **options)
        check(make_chunker(config), reference.split_text, text(rng))


def test_fuzz_reaches_the_interesting_cases() -> None:
    # The comparison above proves little if the generator never makes LangChain cut a word,
    # carry an overlap, fail, or see text shorter than a chunk.
    rng = random.Random(0)
    seen = {"long piece kept whole": 0, "overlap": 0, "failure": 0, "single chunk": 0}
    for _ in range(CASES_PER_SEED):
        size, overlap = sizes(rng)
        options = recursive_options(rng)
        sample = text(rng)
        chunks = outcome(
            LangchainRecursive(chunk_size=size, chunk_overlap=overlap, **options).split_text, sample
        )
        if isinstance(chunks, str):
            seen["failure"] += 1
            continue
        seen["long piece kept whole"] += any(len(chunk) > size for chunk in chunks)
        seen["single chunk"] += len(chunks) == 1
        # chunks are disjoint spans of the text unless an overlap repeats some of it
        seen["overlap"] += sum(map(len, chunks)) > len(sample)
    assert all(count > 0 for count in seen.values()), seen


@pytest.mark.parametrize(
    ("pieces", "size", "overlap", "expected"),
    [
        # a piece longer than the size stands alone and is pushed out by the next one
        (["aaaa", "b", "c"], 3, 1, ["aaaa", "b c"]),
        # the overlap carries the last pieces that fit in it into the next chunk
        (["a", "b", "c", "d"], 3, 1, ["a b", "b c", "c d"]),
        (["a", "b", "c", "d"], 5, 0, ["a b c", "d"]),
        ([" ", "\n"], 5, 0, []),
    ],
)
def test_merge_by_hand(pieces: list[str], size: int, overlap: int, expected: list[str]) -> None:
    assert merge(pieces, " ", size, overlap) == expected


def test_chunking_never_imports_langchain() -> None:
    code = (
        "import sys\n"
        "from vectorizer.config import CharacterTextSplitter, RecursiveCharacterTextSplitter\n"
        "from vectorizer.stages.chunking import make_chunker\n"
        "text = 'One sentence. Another one?\\n\\nA paragraph! ' * 200\n"
        "for config in (\n"
        "    CharacterTextSplitter(implementation='character_text_splitter', separator=' '),\n"
        "    RecursiveCharacterTextSplitter(implementation='recursive_character_text_splitter'),\n"
        "):\n"
        "    assert len(make_chunker(config)(text)) > 1\n"
        "print(sorted(m for m in sys.modules if m.startswith(('langchain', 'langchain_core'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_module_of_the_package_names_langchain_in_an_import() -> None:
    # Catches a lazy import on a path the subprocess test above does not take.
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "vectorizer").rglob("*.py")
        if any(
            line.lstrip().startswith(("import langchain", "from langchain"))
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    ]
    assert offenders == []
