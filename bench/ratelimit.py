"""Rate-limit benchmark: how much of a provider's budget does the shared limiter use, and how
many 429s does it cost?

    python bench/ratelimit.py --budget-rps 40 --seconds 10 --executors 8

Starts the fake OpenAI server as a separate process with an enforced budget (requests, and
optionally estimated tokens, per second; 429 + Retry-After above it), then runs `--executors`
concurrent embedding loops, each its own embedder as a worker's executors are, all sharing one
API key and so one limiter. Three ways of knowing the budget are measured:

* headers: the server sends x-ratelimit-* headers (as OpenAI does);
* static:  no headers, VECTORIZER_OPENAI_RPM/TPM set to the budget;
* none:    no headers, no static budget: the limiter only sees 429s and Retry-After.

For each it prints the successful requests per second, the achieved fraction of the budget
(successes / what the budget admits in that time, one second of burst included) and the 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fake_openai import TEST_API_KEY  # noqa: E402
from vectorizer.config import OpenAIEmbedding  # noqa: E402
from vectorizer.embedders import RequestPolicy, make_embedder  # noqa: E402
from vectorizer.embedders.ratelimit import forget_limiters  # noqa: E402


def start_fake(args: argparse.Namespace, headers: bool) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable,
        "-m",
        "tests.fake_openai",
        "--port",
        "0",
        "--no-log-inputs",
        "--budget-rps",
        str(args.budget_rps),
    ]
    if args.budget_tps:
        command += ["--budget-tps", str(args.budget_tps)]
    if not headers:
        command.append("--no-rate-limit-headers")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def answered(base_url: str) -> list[tuple[int, int]]:
    """(status, estimated tokens) of every embeddings request the fake answered."""
    url = base_url.removesuffix("/v1") + "/_requests"
    with urllib.request.urlopen(url, timeout=30) as response:
        log = json.loads(response.read())
    return [(entry["status"], entry["tokens"]) for entry in log["requests"]]


async def drive(base_url: str, args: argparse.Namespace) -> tuple[float, int]:
    """Embed until time is up; returns (elapsed seconds, inputs that failed)."""
    settings = OpenAIEmbedding(
        implementation="openai",
        model="text-embedding-3-small",
        dimensions=8,
        base_url=base_url,
    )
    policy = RequestPolicy(max_concurrent_requests=args.concurrency, request_timeout=30)
    embedders = [
        make_embedder(settings, api_key=TEST_API_KEY, policy=policy) for _ in range(args.executors)
    ]
    for embedder in embedders:
        embedder.max_inputs_per_request = args.inputs_per_request
    failures = 0
    started = time.monotonic()
    deadline = started + args.seconds

    async def executor(number: int) -> None:
        nonlocal failures
        batch = 0
        while time.monotonic() < deadline:
            texts = [
                f"executor {number} batch {batch} text {i} " + "lorem ipsum " * args.words
                for i in range(args.batch)
            ]
            result = await embedders[number].embed(texts)
            failures += len(result.errors)
            batch += 1

    await asyncio.gather(*(executor(n) for n in range(args.executors)))
    elapsed = time.monotonic() - started
    for embedder in embedders:
        await embedder.aclose()
    return elapsed, failures


def run_mode(mode: str, args: argparse.Namespace) -> None:
    forget_limiters()
    for name in ("VECTORIZER_OPENAI_RPM", "VECTORIZER_OPENAI_TPM"):
        os.environ.pop(name, None)
    if mode == "static":
        os.environ["VECTORIZER_OPENAI_RPM"] = str(args.budget_rps * 60)
        if args.budget_tps:
            os.environ["VECTORIZER_OPENAI_TPM"] = str(args.budget_tps * 60)
    process, base_url = start_fake(args, headers=mode == "headers")
    try:
        elapsed, failures = asyncio.run(drive(base_url, args))
        log = answered(base_url)
    finally:
        process.terminate()
        process.wait(10)
    ok = sum(1 for status, _ in log if status == 200)
    tokens = sum(count for status, count in log if status == 200)
    throttled = sum(1 for status, _ in log if status == 429)
    # What the budget admits in `elapsed` seconds, one second of burst included; the
    # fraction is of whichever budget binds.
    fraction = ok / (args.budget_rps * (elapsed + 1.0))
    if args.budget_tps:
        fraction = max(fraction, tokens / (args.budget_tps * (elapsed + 1.0)))
    print(
        f"{mode:8s} {elapsed:6.1f}s  {ok / elapsed:7.1f} req/s  {tokens / elapsed:9.0f} tokens/s"
        f"  {fraction:6.1%} of budget  {throttled:5d} x 429"
        f"  ({throttled / max(ok, 1):.1%} of successes)  failed inputs: {failures}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-rps", type=float, default=40.0)
    parser.add_argument("--budget-tps", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--executors", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4, help="requests per embed call")
    parser.add_argument("--batch", type=int, default=16, help="inputs per embed call")
    parser.add_argument("--inputs-per-request", type=int, default=4)
    parser.add_argument("--words", type=int, default=10, help="filler words per input")
    parser.add_argument("--modes", default="headers,static,none")
    args = parser.parse_args()
    print(
        f"budget: {args.budget_rps:g} requests/s"
        + (f", {args.budget_tps:g} tokens/s" if args.budget_tps else "")
        + f"; {args.executors} executors x {args.concurrency} concurrent requests"
    )
    for mode in args.modes.split(","):
        run_mode(mode, args)


if __name__ == "__main__":
    main()
