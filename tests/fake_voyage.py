"""A fake Voyage AI embeddings server speaking real HTTP on 127.0.0.1, for the voyageai SDK
(and LiteLLM's `voyage/` provider).

    with FakeVoyage() as server:
        server.base_url                   # "http://127.0.0.1:<port>/v1", for base_url= / api_base=
        server.fail_next(429, retry_after="1")   # also 401, 500, 503...; stall_next, drop_next
        server.requests_to("/v1/embeddings")

`POST /v1/embeddings` takes Voyage's request (`input`, `model`, `input_type`, `truncation`,
`output_dimension`, `output_dtype`, `encoding_format`) and answers
`{object, data: [{object, embedding, index}], model, usage: {total_tokens}}`, embeddings as
base64 of the dtype's bytes when `encoding_format` is base64, else as numbers. Errors are
`{"detail": ...}`: 401 for a wrong bearer token, 400 for more than 1000 inputs, more tokens
than the model's per-request cap, an over-long input with `truncation: false`, an unsupported
`output_dimension`, an unknown model, or an input holding the poison marker.

Tokens are counted as a token per 4 UTF-8 bytes (rounded up); truncation keeps the first
`4 * context` bytes. Vectors are `expected_voyage_vector(text, dimensions, dtype)`.
"""

from __future__ import annotations

import base64
import math
import time
from typing import Any

import numpy as np
from aiohttp import web

from tests.fake_http import FakeHTTPServer, json_response
from tests.fake_openai import expected_vector

TEST_API_KEY = "pa-test-voyage-0123456789abcdef"
BYTES_PER_TOKEN = 4
MAX_INPUTS = 1000
CONTEXT_TOKENS = 32_000

DEFAULT_DIMENSIONS = {
    "voyage-3-lite": 512,
    "voyage-3": 1024,
    "voyage-3.5": 1024,
    "voyage-3.5-lite": 1024,
    "voyage-3-large": 1024,
    "voyage-4": 1024,
    "voyage-4-lite": 1024,
    "voyage-4-large": 1024,
    "voyage-code-3": 1024,
    "voyage-2": 1024,
    "voyage-law-2": 1024,
    "voyage-finance-2": 1024,
    "voyage-multilingual-2": 1024,
}
FLEXIBLE_DIMENSIONS = frozenset(
    {"voyage-3.5", "voyage-3.5-lite", "voyage-3-large", "voyage-code-3"}
    | {"voyage-4", "voyage-4-lite", "voyage-4-large"}
)
REQUEST_TOKEN_CAPS = {
    "voyage-4-lite": 1_000_000,
    "voyage-3.5-lite": 1_000_000,
    "voyage-3-lite": 1_000_000,
    "voyage-4": 320_000,
    "voyage-3.5": 320_000,
    "voyage-2": 320_000,
    "voyage-3": 320_000,
}
DEFAULT_REQUEST_TOKEN_CAP = 120_000


def tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def truncate(text: str, context: int = CONTEXT_TOKENS) -> str:
    return text.encode("utf-8")[: context * BYTES_PER_TOKEN].decode("utf-8", errors="ignore")


def quantized(text: str, dimensions: int, dtype: str | None) -> np.ndarray:
    """The vector in the dtype the server sends: float32, int8 or uint8."""
    vector = expected_vector(text, dimensions)
    if dtype == "int8":
        return np.clip(np.round(vector * 127), -128, 127).astype(np.int8)
    if dtype == "uint8":
        return np.clip(np.round(vector * 127) + 128, 0, 255).astype(np.uint8)
    return vector


def expected_voyage_vector(text: str, dimensions: int, dtype: str | None = None) -> np.ndarray:
    """What the embedder should store for `text` (already truncated): float32 values."""
    return quantized(text, dimensions, dtype).astype(np.float32)


def voyage_error(status: int, message: str) -> dict[str, Any]:
    return {"detail": message}


class FakeVoyage(FakeHTTPServer):
    def __init__(self, *, port: int = 0, api_key: str | None = TEST_API_KEY) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.poison_marker = "POISON"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/embeddings", self._embeddings)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body = await self.read_json(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and token != self.api_key:
            self.record(request, body, 401, started)
            return json_response(401, voyage_error(401, "Provided API key is invalid."))
        status, response = await self.injected(request, voyage_error)
        if response is None:
            status, response = self._answer(body)
        # The client's address and port: the same for requests on one kept-alive connection.
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.record(request, body, status, started, peer=peer)
        return response

    def _answer(self, body: dict[str, Any] | None) -> tuple[int, web.Response]:
        if body is None:
            return 400, json_response(400, voyage_error(400, "Invalid JSON body."))
        problem = self._validate(body)
        if problem is not None:
            return 400, json_response(400, voyage_error(400, problem))
        model = body["model"]
        dimensions = body.get("output_dimension") or DEFAULT_DIMENSIONS[model]
        dtype = body.get("output_dtype")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        kept = [truncate(text) for text in body["input"]]
        for index, text in enumerate(kept):
            vector = quantized(text, dimensions, dtype)
            embedding: Any = base64.b64encode(vector.tobytes()).decode() if as_base64 else vector
            data.append({"object": "embedding", "embedding": embedding, "index": index})
        document = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"total_tokens": sum(tokens(text) for text in kept)},
        }
        return 200, json_response(200, document)

    def _validate(self, body: dict[str, Any]) -> str | None:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = body["input"] = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            return "Input must be a string or a list of strings."
        model = body.get("model")
        if model not in DEFAULT_DIMENSIONS:
            return f"Model {model} is not supported."
        if not 1 <= len(inputs) <= MAX_INPUTS:
            return f"The batch size limit is {MAX_INPUTS}. Your batch size is {len(inputs)}."
        if body.get("input_type") not in (None, "query", "document"):
            return "input_type must be None, 'query' or 'document'."
        dimension = body.get("output_dimension")
        if dimension is not None and (
            model not in FLEXIBLE_DIMENSIONS or dimension not in (256, 512, 1024, 2048)
        ):
            return f"output_dimension {dimension} is not supported for {model}."
        if body.get("output_dtype") not in (None, "float", "int8", "uint8", "binary", "ubinary"):
            return "output_dtype is invalid."
        if any(self.poison_marker in text for text in inputs):
            return "This input was flagged as invalid."
        if body.get("truncation") is False and any(tokens(t) > CONTEXT_TOKENS for t in inputs):
            return f"An input exceeds the context length of {CONTEXT_TOKENS} tokens."
        cap = REQUEST_TOKEN_CAPS.get(model, DEFAULT_REQUEST_TOKEN_CAP)
        total = sum(tokens(truncate(text)) for text in inputs)
        if total > cap:
            return f"Request to model '{model}' failed. The max allowed tokens per submitted batch is {cap}. Your batch has {total} tokens after truncation."  # noqa: E501
        return None
