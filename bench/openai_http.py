"""CPU per embeddings request of the OpenAI SDK path the worker uses, by httpcore read size.

    python bench/openai_http.py [--requests 60] [--inputs 200] [--dimensions 1536]

Starts the fake OpenAI server as a separate process (its CPU is not counted), then times, in
this process, `client.post("/embeddings")` + `parse_response` for base64 answers of
`--inputs` vectors: with httpcore's 64 KB reads and with the worker's 1 MB reads
(`vectorizer.embedders.openai.widen_http_reads`), alternated. Prints CPU ms per request.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


async def requests(base_url: str, body: bytes, count: int) -> None:
    import httpx
    import openai

    from vectorizer.embedders.openai import parse_response

    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)
    try:
        for _ in range(count):
            response = await client.post(
                "/embeddings",
                cast_to=httpx.Response,
                content=body,
                options={"headers": {"Content-Type": "application/json"}},
            )
            parse_response(await response.aread())
    finally:
        await client.close()


def cpu_per_request(base_url: str, body: bytes, count: int) -> float:
    asyncio.run(requests(base_url, body, 3))  # warm: connection, imports
    started = time.process_time()
    asyncio.run(requests(base_url, body, count))
    return (time.process_time() - started) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import orjson
    from httpcore._async.http11 import AsyncHTTP11Connection

    from vectorizer.embedders.openai import HTTP_READ_BYTES

    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--no-log-inputs"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    base_url = fake.stdout.readline().strip()
    texts = [f"chunk {i} of a benchmark request" for i in range(args.inputs)]
    body = orjson.dumps(
        {
            "input": texts,
            "model": "text-embedding-3-small",
            "encoding_format": "base64",
            "dimensions": args.dimensions,
        }
    )
    results: dict[int, list[float]] = {64 * 1024: [], HTTP_READ_BYTES: []}
    try:
        for _ in range(args.rounds):
            for size, figures in results.items():
                AsyncHTTP11Connection.READ_NUM_BYTES = size
                figures.append(cpu_per_request(base_url, body, args.requests))
    finally:
        fake.terminate()
        fake.wait()
    for size, figures in results.items():
        best = min(figures)
        print(
            f"reads of {size // 1024:>5} KB: {best:.2f} ms CPU per request (best of "
            f"{len(figures)}), {best / args.inputs * 1000:.1f} ms per 1k chunks"
        )


if __name__ == "__main__":
    main()
