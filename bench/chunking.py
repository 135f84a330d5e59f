"""Chunk sizes in tokens: the token splitter against the character splitters, on the backfill
benchmark's synthetic corpus.

    python bench/chunking.py --docs 2000 --budget 512 --overlap 64

For each splitter it prints, measured with the model's tokenizer (cl100k_base, as
text-embedding-3-small uses): how many chunks, the largest, the median (and as a share of the
token budget), the 10th/90th percentiles, how many exceed the budget, and the median of the
chunks that are not a document's last (a last chunk holds whatever remains of its document, so
short documents pull the overall median down whatever the splitter). Also the splitting speed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backfill import document  # noqa: E402

from vectorizer.config import RECURSIVE_SEPARATORS, RecursiveCharacterTextSplitter  # noqa: E402
from vectorizer.stages.chunking import make_chunker  # noqa: E402
from vectorizer.stages.token_chunking import TokenSplitter  # noqa: E402
from vectorizer.stages.token_counting import cl100k_counter  # noqa: E402


def character_splitter(size: int, overlap: int) -> Callable[[str], list[str]]:
    config = RecursiveCharacterTextSplitter(
        implementation="recursive_character_text_splitter", chunk_size=size, chunk_overlap=overlap
    )
    return make_chunker(config)


def percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def report(
    name: str, split: Callable[[str], list[str]], docs: list[str], budget: int
) -> dict[str, float]:
    count = cl100k_counter().count
    started = time.perf_counter()
    per_doc = [split(text) for text in docs]
    seconds = time.perf_counter() - started
    tokens = [count(chunk) for chunks in per_doc for chunk in chunks]
    full = [count(chunk) for chunks in per_doc for chunk in chunks[:-1]]
    megabytes = sum(len(text.encode()) for text in docs) / 1e6
    median = statistics.median(tokens)
    print(
        f"{name:<34} chunks {len(tokens):>6}  max {max(tokens):>5}  median {median:>6.0f} "
        f"({100 * median / budget:5.1f}% of {budget})  p10 {percentile(tokens, 0.1):>4}  "
        f"p90 {percentile(tokens, 0.9):>5}  over budget {sum(t > budget for t in tokens):>5}  "
        f"median of non-last chunks {statistics.median(full) if full else 0:>5.0f} "
        f"({100 * (statistics.median(full) if full else 0) / budget:5.1f}%)  "
        f"{megabytes / seconds:6.2f} MB/s"
    )
    return {"max": max(tokens), "median": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--budget", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    docs = [document(rng) for _ in range(args.docs)]
    counter = cl100k_counter()
    doc_tokens = [counter.count(text) for text in docs]
    print(
        f"corpus: {len(docs)} documents (bench/backfill.py's generator, seed {args.seed}), "
        f"median {statistics.median(doc_tokens):.0f} tokens, "
        f"{100 * sum(t <= args.budget for t in doc_tokens) / len(docs):.0f}% of them fit "
        f"in one {args.budget}-token chunk; tokens by cl100k_base"
    )
    chars_per_token = sum(len(text) for text in docs) / sum(doc_tokens)
    equivalent = int(args.budget * chars_per_token)
    token = TokenSplitter(counter, args.budget, args.overlap, RECURSIVE_SEPARATORS)
    result = report(f"token {args.budget}/{args.overlap}", token, docs, args.budget)
    report("character 800/100 (backfill's)", character_splitter(800, 100), docs, args.budget)
    report(
        f"character {equivalent}/{int(args.overlap * chars_per_token)} (same size in chars)",
        character_splitter(equivalent, int(args.overlap * chars_per_token)),
        docs,
        args.budget,
    )
    verdict = "ok" if result["max"] <= args.budget else "OVER BUDGET"
    print(f"token splitter: largest chunk {result['max']} tokens <= {args.budget}: {verdict}")


if __name__ == "__main__":
    main()
