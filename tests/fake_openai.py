"""A fake OpenAI-compatible embeddings server speaking real HTTP on 127.0.0.1.

In-process (tests):

    with FakeOpenAI() as server:          # or the `fake_openai` fixture (tests/conftest_openai.py)
        server.base_url                   # "http://127.0.0.1:<port>/v1"
        server.fail_next(429, count=2, retry_after_ms="50")   # also 500, 401, ...
        server.stall_next(3.0)            # a client timeout
        server.drop_next()                # a connection reset
        server.configure(latency=0.2, extra_dimensions=2, api_key="sk-...")
        server.configure(budget_rps=20, budget_tps=50_000)   # enforce a per-second budget
        server.requests                   # what the client sent (status -1: dropped)

As a process (benchmarks):

    python -m tests.fake_openai --port 8765 --latency-ms 20 [--budget-rps 50 --budget-tps 1e5]

prints its base URL on stdout and serves until SIGTERM/SIGINT. `POST /_control` with
`{"action": "fail" | "stall" | "drop" | "configure", ...keyword arguments}` changes behaviour,
`GET /_requests` reads the log, `POST /_reset` clears both.

Vectors are derived from each input's text (`expected_vector`), so a test can recompute what
it should have received. The server enforces OpenAI's limits (2048 inputs, 300k estimated
tokens per request, 8192 tokens per input for OpenAI's own models) so a client that breaks
them fails the way it would against the real API.

With a budget set, the server is rate limited like OpenAI: two token buckets (requests and
estimated tokens per second, one second of burst); a request over either gets 429 with
`Retry-After`/`retry-after-ms`, and every answer carries `x-ratelimit-limit/remaining/reset-*`
headers unless `rate_limit_headers` is off.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import math
import random
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from tests.fake_http import DROP, STALL, Failure, ThreadedServer

DEFAULT_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
FALLBACK_DIMENSIONS = 1536
NATIVE_CONTEXT_TOKENS = 8192
MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000
TEST_API_KEY = "sk-test-0123456789abcdefTESTKEY"


def expected_vector(text: str, dimensions: int) -> np.ndarray:
    """The unit-length float32 vector the fake returns for `text`."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    generator = np.random.Generator(np.random.SFC64(int.from_bytes(digest, "little")))
    vector = generator.standard_normal(dimensions, dtype=np.float32)
    vector /= np.sqrt(np.dot(vector, vector))
    return vector


def estimated_tokens(text: str) -> int:
    """OpenAI's request-size estimate: a quarter token per UTF-8 byte."""
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)


@dataclass(frozen=True)
class Storm:
    """Random failures drawn per request (chaos runs): each rate is a fraction of requests."""

    rate_limited: float = 0.0  # 429 with Retry-After: `retry_after` seconds
    server_error: float = 0.0  # 500
    stalled: float = 0.0  # held `stall_seconds`, past the client's timeout
    retry_after: str = "1"
    stall_seconds: float = 3.0
    seed: int = 0

    def draw(self, rng: random.Random) -> Failure | None:
        roll = rng.random()
        if roll < self.rate_limited:
            return Failure(429, 1, retry_after=self.retry_after)
        roll -= self.rate_limited
        if roll < self.server_error:
            return Failure(500, 1)
        roll -= self.server_error
        if roll < self.stalled:
            return Failure(STALL, 1, stall=self.stall_seconds)
        return None


@dataclass
class Behaviour:
    """What the server does; change it between requests (fields are read per request)."""

    api_key: str | None = None  # when set, any other bearer token gets 401
    poison_marker: str | None = "POISON"  # an input containing it makes the request 400
    latency: float = 0.0  # seconds added to every embeddings request
    dimensions_override: int | None = None  # always return this many values
    extra_dimensions: int = 0  # return D+k values...
    extra_dimensions_marker: str | None = None  # ...only for inputs containing this, if set
    dimensions_unsupported: frozenset[str] = frozenset({"text-embedding-ada-002"})
    enforce_limits: bool = True
    ignore_encoding_format: bool = False  # answer float lists even when base64 is asked for
    log_inputs: bool = True  # False keeps only counts (long benchmarks)
    budget_rps: float | None = None  # requests per second before 429s
    budget_tps: float | None = None  # estimated tokens per second before 429s
    rate_limit_headers: bool = True  # send x-ratelimit-* headers when a budget is set
    storm: Storm | None = None  # random failures, when no queued one applies


@dataclass
class LoggedRequest:
    model: str
    inputs: list[str]
    input_count: int
    tokens: int  # estimated, as the budget counts them
    dimensions: int | None
    encoding_format: str | None
    user: str | None
    headers: dict[str, str]
    status: int
    started: float
    finished: float


class FakeOpenAI(ThreadedServer):
    """The server; `start()` runs it on a background thread with its own event loop."""

    def __init__(self, behaviour: Behaviour | None = None, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.behaviour = behaviour or Behaviour()
        self._initial_behaviour = self.behaviour
        self._lock = threading.Lock()
        self._failures: list[Failure] = []
        self._log: list[LoggedRequest] = []
        self._in_flight = 0
        self.max_in_flight = 0
        self._budget = _Budget()
        self._storm_rng = random.Random(0)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/_control", self._control)
        app.router.add_get("/_requests", self._requests)
        app.router.add_post("/_reset", self._reset)

    # --- controls (thread-safe) --------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: str | None = None,
        retry_after_ms: str | None = None,
        code: str | None = None,
        body: str | None = None,
    ) -> None:
        """Answer the next `count` embeddings requests with `status` (e.g. 429, 500).

        The answer is OpenAI's JSON error object, or `body` verbatim (a proxy's HTML page).
        """
        failure = Failure(
            status,
            count,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
            code=code,
            message=body,
        )
        with self._lock:
            self._failures.append(failure)

    def stall_next(self, seconds: float, count: int = 1) -> None:
        """Hold the next `count` requests for `seconds` before answering (client timeouts)."""
        with self._lock:
            self._failures.append(Failure(STALL, count, stall=seconds))

    def drop_next(self, count: int = 1) -> None:
        """Close the connection of the next `count` requests without answering (resets)."""
        with self._lock:
            self._failures.append(Failure(DROP, count))

    def configure(self, **changes: Any) -> None:
        with self._lock:
            self.behaviour = dataclasses.replace(self.behaviour, **changes)
            if self.behaviour.storm is not None:
                self._storm_rng = random.Random(self.behaviour.storm.seed)

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self._log.clear()
            self.max_in_flight = 0
            self.behaviour = self._initial_behaviour
            self._budget = _Budget()

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    @property
    def embedded_requests(self) -> list[LoggedRequest]:
        """The requests answered with 200."""
        return [request for request in self.requests if request.status == 200]

    # --- the embeddings endpoint -------------------------------------------------------------

    async def _embeddings(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        with self._lock:
            behaviour = self.behaviour
            failure = self._take_failure()
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if behaviour.latency:
                await asyncio.sleep(behaviour.latency)
            payload = _json_body(await request.read())
            status, body, headers = await self._answer(payload, request, behaviour, failure)
        finally:
            with self._lock:
                self._in_flight -= 1
        self._record(payload, request, behaviour, status, started)
        # A dropped connection answers nothing; the 500 only keeps aiohttp's types happy.
        return web.Response(
            status=500 if status == DROP else status,
            body=body,
            headers=headers,
            content_type="application/json",
        )

    def _take_failure(self) -> Failure | None:
        if not self._failures:
            storm = self.behaviour.storm
            return storm.draw(self._storm_rng) if storm is not None else None
        failure = self._failures[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            self._failures.pop(0)
        return failure

    async def _answer(
        self,
        payload: dict[str, Any] | None,
        request: web.Request,
        behaviour: Behaviour,
        failure: Failure | None,
    ) -> tuple[int, bytes, dict[str, str]]:
        auth_error = _check_auth(request, behaviour)
        if auth_error is not None:
            return 401, auth_error, {}
        if failure is not None and failure.status == STALL:
            await asyncio.sleep(failure.stall)
        elif failure is not None and failure.status == DROP:
            if request.transport is not None:
                request.transport.abort()
            return DROP, b"", {}
        elif failure is not None and failure.message is not None:
            return failure.status, failure.message.encode(), _retry_headers(failure)
        elif failure is not None:
            return failure.status, _injected_error(failure), _retry_headers(failure)
        if payload is None:
            return 400, _error("We could not parse the JSON body of your request."), {}
        problem = _validate(payload, behaviour)
        if problem is not None:
            return 400, problem, {}
        limited, headers = self._spend_budget(payload, behaviour)
        if limited:
            return 429, _error("Rate limit reached.", code="rate_limit_exceeded"), headers
        return 200, _success(payload, behaviour), headers

    def _spend_budget(
        self, payload: Mapping[str, Any], behaviour: Behaviour
    ) -> tuple[bool, dict[str, str]]:
        if behaviour.budget_rps is None and behaviour.budget_tps is None:
            return False, {}
        tokens = sum(estimated_tokens(text) for text in _inputs(payload) or [])
        with self._lock:
            return self._budget.spend(behaviour, tokens, time.monotonic())

    def _record(
        self,
        payload: dict[str, Any] | None,
        request: web.Request,
        behaviour: Behaviour,
        status: int,
        started: float,
    ) -> None:
        payload = payload or {}
        inputs = _inputs(payload) or []
        entry = LoggedRequest(
            model=str(payload.get("model")),
            inputs=inputs if behaviour.log_inputs else [],
            input_count=len(inputs),
            tokens=sum(estimated_tokens(text) for text in inputs),
            dimensions=payload.get("dimensions"),
            encoding_format=payload.get("encoding_format"),
            user=payload.get("user"),
            headers={str(k): v for k, v in request.headers.items() if k.lower() != "authorization"},
            status=status,
            started=started,
            finished=time.monotonic(),
        )
        with self._lock:
            self._log.append(entry)

    # --- control endpoints (subprocess mode) -------------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        command = _json_body(await request.read()) or {}
        action = command.pop("action", "configure")
        if action == "fail":
            self.fail_next(**command)
        elif action == "stall":
            self.stall_next(**command)
        elif action == "drop":
            self.drop_next(**command)
        elif action == "configure":
            if "dimensions_unsupported" in command:
                command["dimensions_unsupported"] = frozenset(command["dimensions_unsupported"])
            self.configure(**command)
        else:
            return web.json_response({"error": f"unknown action {action!r}"}, status=400)
        return web.json_response({"ok": True})

    async def _requests(self, request: web.Request) -> web.Response:
        entries = [dataclasses.asdict(entry) for entry in self.requests]
        body = orjson.dumps({"requests": entries, "max_in_flight": self.max_in_flight})
        return web.Response(body=body, content_type="application/json")

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


# --- the enforced budget ----------------------------------------------------------------------


class _Budget:
    """Requests and tokens per second as two buckets with one second of burst."""

    def __init__(self) -> None:
        self.levels: dict[str, float] = {}
        self.updated: float | None = None

    def spend(self, behaviour: Behaviour, tokens: int, now: float) -> tuple[bool, dict[str, str]]:
        rates = {"requests": behaviour.budget_rps, "tokens": behaviour.budget_tps}
        costs = {"requests": 1.0, "tokens": float(tokens)}
        elapsed = 0.0 if self.updated is None else now - self.updated
        self.updated = now
        waits: list[float] = []
        for kind, rate in rates.items():
            if rate is None:
                continue
            level = min(rate, self.levels.get(kind, rate) + elapsed * rate)
            self.levels[kind] = level
            # A request bigger than the whole bucket is let through when the bucket is full.
            needed = min(costs[kind], rate)
            if level < needed:
                waits.append((needed - level) / rate)
        if not waits:
            for kind, rate in rates.items():
                if rate is not None:
                    self.levels[kind] -= costs[kind]
        headers = self._headers(behaviour, rates) if behaviour.rate_limit_headers else {}
        if waits:
            wait = max(waits)
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return bool(waits), headers

    def _headers(self, behaviour: Behaviour, rates: Mapping[str, float | None]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, rate in rates.items():
            if rate is None:
                continue
            level = self.levels[kind]
            headers[f"x-ratelimit-limit-{kind}"] = str(int(rate))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
            headers[f"x-ratelimit-reset-{kind}"] = format_duration((rate - level) / rate)
        return headers


def format_duration(seconds: float) -> str:
    """Like OpenAI's reset headers: "12ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{math.ceil(max(seconds, 0.0) * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


# --- request handling helpers ----------------------------------------------------------------


def _json_body(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _inputs(payload: Mapping[str, Any]) -> list[str] | None:
    value = payload.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _error(message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return orjson.dumps({"error": error})


def _check_auth(request: web.Request, behaviour: Behaviour) -> bytes | None:
    if behaviour.api_key is None:
        return None
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if token == behaviour.api_key:
        return None
    # Like OpenAI for short keys: the key comes back verbatim, which clients must redact.
    return _error(f"Incorrect API key provided: {token}.", code="invalid_api_key")


def _injected_error(failure: Failure) -> bytes:
    if failure.status == 429:
        return _error(
            "Rate limit reached for requests.", code=failure.code or "rate_limit_exceeded"
        )
    return _error(f"The server had an error (injected {failure.status}).", code=failure.code)


def _retry_headers(failure: Failure) -> dict[str, str]:
    headers = {}
    if failure.retry_after is not None:
        headers["Retry-After"] = failure.retry_after
    if failure.retry_after_ms is not None:
        headers["retry-after-ms"] = failure.retry_after_ms
    return headers


def _validate(payload: Mapping[str, Any], behaviour: Behaviour) -> bytes | None:
    inputs = _inputs(payload)
    model = payload.get("model")
    if not isinstance(model, str) or inputs is None:
        return _error("'input' must be a string or an array of strings.", param="input")
    if payload.get("dimensions") is not None and model in behaviour.dimensions_unsupported:
        return _error("This model does not support specifying dimensions.", param="dimensions")
    if behaviour.poison_marker and any(behaviour.poison_marker in text for text in inputs):
        return _error("This input was flagged as invalid.", param="input")
    return _check_limits(model, inputs) if behaviour.enforce_limits else None


def _check_limits(model: str, inputs: list[str]) -> bytes | None:
    if not inputs or len(inputs) > MAX_INPUTS:
        return _error(f"'$.input' must hold 1 to {MAX_INPUTS} inputs.", param="input")
    if any(not text for text in inputs):
        return _error("'$.input' is invalid: empty string.", param="input")
    requested = sum(estimated_tokens(text) for text in inputs)
    if requested > MAX_REQUEST_TOKENS:
        return _error(f"Requested {requested} tokens, max {MAX_REQUEST_TOKENS} tokens per request")
    if model in DEFAULT_DIMENSIONS:
        return _check_context(inputs)
    return None


def _check_context(inputs: list[str]) -> bytes | None:
    for text in inputs:
        # Tokens never outnumber UTF-8 bytes: only long inputs need the tokenizer.
        if len(text.encode("utf-8")) <= NATIVE_CONTEXT_TOKENS:
            continue
        from vectorizer.embedders.tokenizers import cl100k_base

        tokens = len(cl100k_base().encode_ordinary(text))
        if tokens > NATIVE_CONTEXT_TOKENS:
            return _error(
                f"This model's maximum context length is {NATIVE_CONTEXT_TOKENS} tokens, "
                f"however you requested {tokens} tokens.",
                code="context_length_exceeded",
            )
    return None


def _dimensions_for(text: str, payload: Mapping[str, Any], behaviour: Behaviour) -> int:
    if behaviour.dimensions_override is not None:
        return behaviour.dimensions_override
    requested = payload.get("dimensions")
    dimensions = requested or DEFAULT_DIMENSIONS.get(payload["model"], FALLBACK_DIMENSIONS)
    marker = behaviour.extra_dimensions_marker
    if behaviour.extra_dimensions and (marker is None or marker in text):
        dimensions += behaviour.extra_dimensions
    return dimensions


def _success(payload: Mapping[str, Any], behaviour: Behaviour) -> bytes:
    inputs = _inputs(payload) or []
    as_base64 = payload.get("encoding_format") == "base64" and not behaviour.ignore_encoding_format
    data = []
    for index, text in enumerate(inputs):
        vector = expected_vector(text, _dimensions_for(text, payload, behaviour))
        embedding: Any = base64.b64encode(vector.tobytes()).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(estimated_tokens(text) for text in inputs)
    body = {
        "object": "list",
        "data": data,
        "model": payload["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


# --- subprocess mode ---------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--dimensions-override", type=int, default=None)
    parser.add_argument("--extra-dimensions", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--poison-marker", default="POISON")
    parser.add_argument("--no-log-inputs", action="store_true", help="log counts only")
    parser.add_argument("--budget-rps", type=float, default=None, help="requests per second")
    parser.add_argument("--budget-tps", type=float, default=None, help="tokens per second")
    parser.add_argument("--no-rate-limit-headers", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    behaviour = Behaviour(
        api_key=args.api_key,
        poison_marker=args.poison_marker or None,
        latency=args.latency_ms / 1000,
        dimensions_override=args.dimensions_override,
        extra_dimensions=args.extra_dimensions,
        log_inputs=not args.no_log_inputs,
        budget_rps=args.budget_rps,
        budget_tps=args.budget_tps,
        rate_limit_headers=not args.no_rate_limit_headers,
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    with FakeOpenAI(behaviour, port=args.port) as server:
        print(server.base_url, flush=True)
        stopping.wait()


if __name__ == "__main__":
    main()
