"""CPU time of the character splitters against LangChain's, on the backfill benchmark's corpus.

    python bench/character_splitting.py --docs 2000 --size 800 --overlap 100

Splits every document with our splitter and with LangChain's (needs the dev extra), checks the
chunks are identical, and prints the best CPU seconds of `--repeats` passes for each, plus what
importing LangChain costs (the worker no longer pays it).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backfill import document  # noqa: E402

from vectorizer.config import CharacterTextSplitter, RecursiveCharacterTextSplitter  # noqa: E402
from vectorizer.stages.chunking import make_chunker  # noqa: E402

Split = Callable[[str], list[str]]


def splitters(kind: str, size: int, overlap: int) -> tuple[Split, Split]:
    import langchain_text_splitters as reference

    if kind == "recursive":
        ours = RecursiveCharacterTextSplitter(
            implementation="recursive_character_text_splitter",
            chunk_size=size,
            chunk_overlap=overlap,
        )
        theirs = reference.RecursiveCharacterTextSplitter(
            separators=ours.separators, chunk_size=size, chunk_overlap=overlap
        )
        return make_chunker(ours), theirs.split_text
    config = CharacterTextSplitter(
        implementation="character_text_splitter", chunk_size=size, chunk_overlap=overlap
    )
    other = reference.CharacterTextSplitter(
        separator=config.separator, chunk_size=size, chunk_overlap=overlap
    )
    return make_chunker(config), other.split_text


def cpu_seconds(split: Split, docs: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for text in docs:
            split(text)
        best = min(best, time.process_time() - started)
    return best


def import_seconds() -> float:
    code = "import time;t=time.perf_counter();import langchain_text_splitters;"
    code += "print(time.perf_counter()-t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--overlap", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    docs = [document(rng) for _ in range(args.docs)]
    megabytes = sum(len(text.encode()) for text in docs) / 1e6
    print(f"{args.docs} documents, {megabytes:.1f} MB, size {args.size} overlap {args.overlap}")
    for kind in ("recursive", "character"):
        ours, theirs = splitters(kind, args.size, args.overlap)
        same = all(ours(text) == theirs(text) for text in docs)
        mine, reference = (cpu_seconds(split, docs, args.repeats) for split in (ours, theirs))
        print(
            f"{kind:<10} ours {mine:.3f} s  langchain {reference:.3f} s  "
            f"({reference / mine:.1f}x)  identical chunks: {same}"
        )
    print(f"import langchain_text_splitters: {import_seconds():.3f} s (not paid by the worker)")


if __name__ == "__main__":
    main()
