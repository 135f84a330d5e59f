"""CPU per embeddings request: the openai SDK against the worker's own httpx paths.

    python bench/openai_http.py [--requests 60] [--inputs 200] [--dimensions 1536]

Starts the fake OpenAI server as a separate process (its CPU is not counted), then times, in
this process, one `/embeddings` request and its decoding (`parse_response`) for base64 answers
of `--inputs` vectors, four ways, alternated round by round:

* the SDK's generic POST (`AsyncOpenAI.post(cast_to=httpx.Response)`, what the worker used
  before it dropped the SDK), with httpcore's 64 KB reads and with 1 MB reads;
* the worker's embedder (`OpenAIEmbedder._request`: its own `httpx.AsyncClient`) on httpx's
  transport (`VECTORIZER_HTTP_TRANSPORT=httpcore`), with the 1 MB reads it then sets
  (`vectorizer.embedders.openai.widen_http_reads`);
* the embedder as it runs by default, on `vectorizer.embedders.http_transport`'s asyncio
  transport (the read size is httpcore's only).

Prints CPU ms per request; the openai SDK comes with the dev extra. The process's malloc is
tuned as the worker command's is (`vectorizer.allocator`) unless `--glibc-malloc`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KB = 1024
TRANSPORT_ENV = "VECTORIZER_HTTP_TRANSPORT"
MODEL = "text-embedding-3-small"

Run = Callable[[str, list[str], int, int], Awaitable[None]]


async def through_sdk(base_url: str, texts: list[str], dimensions: int, count: int) -> None:
    import httpx
    import openai
    import orjson

    from vectorizer.embedders.openai import parse_response

    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)
    body: dict[str, Any] = {
        "input": texts,
        "model": MODEL,
        "encoding_format": "base64",
        "dimensions": dimensions,
    }
    try:
        for _ in range(count):
            response = await client.post(
                "/embeddings",
                cast_to=httpx.Response,
                content=orjson.dumps(body),
                options={"headers": {"Content-Type": "application/json"}},
            )
            parse_response(await response.aread())
    finally:
        await client.close()


async def through_embedder(base_url: str, texts: list[str], dimensions: int, count: int) -> None:
    os.environ.pop(TRANSPORT_ENV, None)
    await embed_requests(base_url, texts, dimensions, count)


async def through_embedder_on_httpcore(
    base_url: str, texts: list[str], dimensions: int, count: int
) -> None:
    os.environ[TRANSPORT_ENV] = "httpcore"
    try:
        await embed_requests(base_url, texts, dimensions, count)
    finally:
        del os.environ[TRANSPORT_ENV]


async def embed_requests(base_url: str, texts: list[str], dimensions: int, count: int) -> None:
    from vectorizer.config import OpenAIEmbedding
    from vectorizer.embedders import make_embedder

    settings = OpenAIEmbedding(
        implementation="openai", model=MODEL, dimensions=dimensions, base_url=base_url
    )
    embedder = make_embedder(settings, api_key="sk-bench")
    await embedder.setup()
    try:
        for _ in range(count):
            await embedder._request(texts)  # one HTTP request, no batching or retries
    finally:
        await embedder.aclose()


def cpu_per_request(
    run: Run, base_url: str, texts: list[str], dimensions: int, count: int
) -> float:
    asyncio.run(run(base_url, texts, dimensions, 3))  # warm: connection, imports
    started = time.process_time()
    asyncio.run(run(base_url, texts, dimensions, count))
    return (time.process_time() - started) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--glibc-malloc",
        action="store_true",
        help="keep glibc's own malloc thresholds (the worker command fixes them: allocator.py)",
    )
    args = parser.parse_args()
    if not args.glibc_malloc:
        from vectorizer import allocator

        allocator.tune()

    from httpcore._async.http11 import AsyncHTTP11Connection

    from vectorizer.embedders.openai import HTTP_READ_BYTES

    os.environ.pop("OPENAI_BASE_URL", None)  # every client goes where it is told
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--no-log-inputs"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    base_url = fake.stdout.readline().strip()
    texts = [f"chunk {i} of a benchmark request" for i in range(args.inputs)]
    ways: dict[tuple[str, int], Run] = {
        ("openai SDK, httpcore 64 KB reads", 64 * KB): through_sdk,
        ("openai SDK, httpcore 1 MB reads", HTTP_READ_BYTES): through_sdk,
        ("embedder, httpcore 1 MB reads", HTTP_READ_BYTES): through_embedder_on_httpcore,
        ("embedder, asyncio transport", HTTP_READ_BYTES): through_embedder,  # size unused
    }
    results: dict[tuple[str, int], list[float]] = {way: [] for way in ways}
    try:
        for _ in range(args.rounds):
            for (name, size), run in ways.items():
                AsyncHTTP11Connection.READ_NUM_BYTES = size
                cpu = cpu_per_request(run, base_url, texts, args.dimensions, args.requests)
                results[(name, size)].append(cpu)
    finally:
        fake.terminate()
        fake.wait()
    for (name, _), figures in results.items():
        best = min(figures)
        print(
            f"{name:<32} {best:.2f} ms CPU per request (best of "
            f"{len(figures)}), {best / args.inputs * 1000:.1f} ms per 1k chunks"
        )


if __name__ == "__main__":
    main()
