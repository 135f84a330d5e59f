"""OpenAI embeddings (`implementation: openai`), and any OpenAI-compatible server via base_url.

The embedder POSTs `/embeddings` with httpx itself rather than through the openai SDK, whose
import alone costs most of a second (its `types` package builds hundreds of pydantic models)
in every once-run. It keeps the SDK's conventions, so a pgai user sees no difference:

* the server is `base_url`, else `OPENAI_BASE_URL`, else `https://api.openai.com/v1`;
  `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID` become the `OpenAI-Organization`/`OpenAI-Project`
  headers; redirects are followed and proxies come from the environment;
* error messages read as the SDK's (`Error code: 401 - {...}`, `Connection error.`,
  `Request timed out.`), with secrets masked.

Differences from pgai's worker, on purpose:

* nothing here retries: the shared driver does, with a budget, so a 429 never fails a row
  and an outage becomes one vectorizer-level error; 429s and the `x-ratelimit-*` headers feed
  the rate limiter shared by everything using the same key;
* vectors travel as base64 and are decoded straight into numpy, never via Python floats;
* the bytes move through `http_transport.AsyncioTransport` (bare asyncio, half the CPU of
  httpx's own transport per answer); `VECTORIZER_HTTP_TRANSPORT=httpcore` goes back to
  httpx's;
* `dimensions` goes only to models known to accept it (or when the config asks), so
  OpenAI-compatible servers that reject the parameter work (pgai #850).
"""

from __future__ import annotations

import binascii
import json
import logging
import os
import re
from typing import Any

import httpx
import numpy as np
import orjson
import pybase64

from vectorizer import env
from vectorizer.config import OpenAIEmbedding
from vectorizer.embedders.base import (
    BadInputError,
    Embedder,
    ThrottledError,
    parse_retry_after,
    redact,
    resolve_api_key,
)
from vectorizer.embedders.http_transport import AsyncioTransport, proxy_mounts
from vectorizer.embedders.results import Vectors
from vectorizer.errors import TransientError, VectorizerError
from vectorizer.version import __version__

log = logging.getLogger(__name__)

ADA_002 = "text-embedding-ada-002"
# OpenAI's own models: known context length and tokenizer (cl100k_base).
NATIVE_MODELS = frozenset({ADA_002, "text-embedding-3-small", "text-embedding-3-large"})
MAX_INPUT_TOKENS = 8191
MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000

DEFAULT_BASE_URL = "https://api.openai.com/v1"
USER_AGENT = f"vectorizer/{__version__} httpx/{httpx.__version__}"
# The SDK's pool size: batches of one vectorizer reuse keep-alive connections, and concurrent
# requests are capped by the driver, never by the pool.
CONNECTION_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
# `httpcore`: httpx's own transport instead of http_transport's, should a server need it.
TRANSPORT_ENV = "VECTORIZER_HTTP_TRANSPORT"
TRANSPORTS = ("asyncio", "httpcore")
# The SDK's texts for failures with no response, so error rows read as under pgai.
CONNECTION_ERROR = "Connection error."
TIMEOUT_ERROR = "Request timed out."

# Statuses the SDK itself would retry (besides 429); rare but harmless to retry.
_TRANSIENT_STATUSES = frozenset({408, 409})
# Statuses a single bad input can cause (compatible servers use 413/422 for over-long input).
_BAD_INPUT_STATUSES = frozenset({400, 413, 422})
_READ = httpx.ByteStream(b"")  # the stream of a response whose body is read: nothing left


class OpenAIEmbedder(Embedder):
    provider = "openai"
    frees_answers = True  # unlink()
    max_inputs_per_request = MAX_INPUTS_PER_REQUEST
    max_tokens_per_request = MAX_TOKENS_PER_REQUEST

    _config: OpenAIEmbedding

    def _configure(self) -> None:
        config = self._config
        if config.model == ADA_002 and config.dimensions != 1536:
            raise VectorizerError("dimensions must be 1536 for text-embedding-ada-002")
        self._options = request_options(config)
        self._truncates = config.model in NATIVE_MODELS
        self._client: httpx.AsyncClient | None = None

    async def _setup(self) -> None:
        key = resolve_api_key(self._config.api_key_name, self._api_key)
        self._secrets = (key,)
        self._client = http_client(
            base_url=base_url(self._config.base_url),
            headers=request_headers(key),
            timeout=self.policy.request_timeout,
            follow_redirects=True,
        )
        self.use_limiter(key, str(self._client.base_url))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._ready = False

    def prepare_input(self, text: str) -> tuple[str, int]:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise BadInputError(
                "the input is not valid Unicode (it has a lone surrogate)"
            ) from None
        if self._truncates:
            if not text:
                raise BadInputError("the input is empty; OpenAI rejects empty inputs")
            # A token is at least one byte, so only inputs over the limit in bytes can be
            # over it in tokens: typical chunks never reach the tokenizer.
            if size > MAX_INPUT_TOKENS:
                text, size = truncate(text)
        return text, estimate_tokens(size)

    async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
        if self._client is None:
            raise VectorizerError("the OpenAI embedder was used before setup()")
        body = {"input": texts, "model": self.model, "encoding_format": "base64", **self._options}
        try:
            # httpx's base_url keeps its path: "embeddings" lands at <base_url>/embeddings.
            response = await self._client.post("embeddings", content=orjson.dumps(body))
        except httpx.TimeoutException as exc:
            raise self._no_response(TIMEOUT_ERROR, exc) from None
        except httpx.HTTPError as exc:
            raise self._no_response(CONNECTION_ERROR, exc) from None
        unlink(response)
        self.limiter.observe(response.headers)
        if not response.is_success:
            raise classify(response, self._secrets)
        return parse_response(response.content)

    def _no_response(self, message: str, exc: httpx.HTTPError) -> TransientError:
        # The message is the SDK's; what httpx saw goes to the debug log, not the error row.
        log.debug("embeddings request failed: %s", self.redact(f"{type(exc).__name__}: {exc}"))
        return TransientError(message)


def http_client(**options: Any) -> httpx.AsyncClient:
    """An httpx client on http_transport's asyncio transport, unless VECTORIZER_HTTP_TRANSPORT
    asks for httpx's own; proxies come from the environment either way."""
    if env.choice(TRANSPORT_ENV, TRANSPORTS) == "httpcore":
        widen_http_reads()
        return httpx.AsyncClient(limits=CONNECTION_LIMITS, **options)
    mounts = proxy_mounts(limits=CONNECTION_LIMITS)
    if any(mounts.values()):
        widen_http_reads()  # the proxies' transports are httpcore's
    transport = AsyncioTransport(max_idle_connections=CONNECTION_LIMITS.max_keepalive_connections)
    return httpx.AsyncClient(transport=transport, mounts=mounts, **options)


def unlink(response: httpx.Response) -> None:
    """Cut the reference cycle httpx's client makes between a read response and its stream.

    With it, every answer (a few MB of base64 at 400 inputs) outlived the request until the
    cyclic GC found it: the worker grew by hundreds of MB between collections and the GC did
    the freeing. The body is read whole (`client.post`), so the stream has nothing left.
    """
    response.stream = _READ


def base_url(configured: str | None) -> str:
    """Where requests go: the config's base_url, else OPENAI_BASE_URL, else OpenAI's API."""
    return configured or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL


def request_headers(api_key: str) -> dict[str, str]:
    """Headers of every request: auth, JSON both ways, and the SDK's organization/project."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    for header, variable in (
        ("OpenAI-Organization", "OPENAI_ORG_ID"),
        ("OpenAI-Project", "OPENAI_PROJECT_ID"),
    ):
        value = os.environ.get(variable)
        if value:
            headers[header] = value
    return headers


# httpcore (VECTORIZER_HTTP_TRANSPORT=httpcore, and proxies) reads a response 64 KB per call,
# each call a trip through anyio and h11; a batch's answer is ~1.6 MB of base64 (200 vectors of
# 1536 floats). Reading up to 1 MB per call saves 5-20 % of the CPU per such request
# (bench/openai_http.py); asyncio hands back what has arrived, so no read waits for a fuller
# buffer.
HTTP_READ_BYTES = 1 << 20


def widen_http_reads() -> None:
    """Raise httpcore's per-read size for every HTTP/1.1 connection of this process."""
    from httpcore._async.http11 import AsyncHTTP11Connection

    if getattr(AsyncHTTP11Connection, "READ_NUM_BYTES", HTTP_READ_BYTES) < HTTP_READ_BYTES:
        AsyncHTTP11Connection.READ_NUM_BYTES = HTTP_READ_BYTES


def request_options(config: OpenAIEmbedding) -> dict[str, Any]:
    """The optional request fields this config sends."""
    options: dict[str, Any] = {}
    if sends_dimensions(config):
        options["dimensions"] = config.dimensions
    if config.user:
        options["user"] = config.user
    return options


def sends_dimensions(config: OpenAIEmbedding) -> bool:
    if config.model == ADA_002:
        return False  # OpenAI rejects the parameter for ada-002
    if config.send_dimensions is not None:
        return config.send_dimensions
    return config.model.startswith("text-embedding-3")


def estimate_tokens(utf8_bytes: int) -> int:
    """OpenAI's server-side estimate of an input's tokens (0.25 per UTF-8 byte), rounded up."""
    return (utf8_bytes + 3) // 4


def truncate(text: str) -> tuple[str, int]:
    """`text` cut to MAX_INPUT_TOKENS cl100k tokens, and its UTF-8 size."""
    from vectorizer.embedders.tokenizers import cl100k_base

    encoding = cl100k_base()
    tokens = encoding.encode_ordinary(text)
    if len(tokens) <= MAX_INPUT_TOKENS:
        return text, len(text.encode("utf-8"))
    limit = MAX_INPUT_TOKENS
    while True:
        # Dropping a split multi-byte character keeps the cut from growing a U+FFFD token.
        cut = encoding.decode_bytes(tokens[:limit]).decode("utf-8", errors="ignore")
        count = len(encoding.encode_ordinary(cut))
        if count <= MAX_INPUT_TOKENS:
            break
        limit -= count - MAX_INPUT_TOKENS  # re-tokenising a prefix can add a token or two
    log.warning("chunk truncated from %d to %d tokens", len(tokens), count)
    return cut, len(cut.encode("utf-8"))


# An embedding's base64 follows `"embedding"`, a colon and a quote; base64 has no quote or
# backslash, so the value ends at the next quote. (The key is found with bytes.find: a regex
# scanning 3 MB for it cost twice the search.)
_EMBEDDING_KEY = b'"embedding"'
_STRING_VALUE = re.compile(rb'\s*:\s*"')


def parse_response(body: bytes) -> tuple[Vectors, int]:
    """Vectors (in input order) and prompt tokens from a `/embeddings` response body."""
    try:
        cut = _parse_without_base64(body)
        if cut is None:
            document = orjson.loads(body)
            items = sorted(document["data"], key=lambda item: item.get("index", 0))
            vectors = decode_embeddings([item["embedding"] for item in items])
        else:
            document, vectors = cut
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise VectorizerError(
            f"the provider returned a malformed embeddings response: {exc}"
        ) from None
    return vectors, usage_tokens(document)


def _parse_without_base64(body: bytes) -> tuple[dict[str, Any], Vectors] | None:
    """The answer parsed with its base64 vectors cut out, and the vectors decoded straight from
    the body's bytes: JSON-parsing 3 MB of base64 into str objects was over half an answer's
    cost. None when the cut-out answer is not a list of items that each had a base64
    embedding (float lists, escaped characters, another shape): the whole body is parsed then.

    Every pass over a fresh 3 MB answer costs memory bandwidth, so there are two: the decoder
    checks the characters, and once one vector's length is known the next one's closing quote
    is looked for there first (a quote inside the guessed span fails the decoding)."""
    decoded: list[bytes] = []
    skeleton: list[bytes] = []
    resumed = width = 0
    with memoryview(body) as view:
        key = body.find(_EMBEDDING_KEY)
        while key >= 0:
            value = _STRING_VALUE.match(body, key + len(_EMBEDDING_KEY))
            if value is None:  # a value ("object": "embedding"), or a key with another value
                key = body.find(_EMBEDDING_KEY, key + 1)
                continue
            start = value.end()
            end = start + width
            if not width or view[end : end + 1] != b'"':
                end = body.find(b'"', start)
                if end < 0:
                    return None
            try:
                decoded.append(pybase64.b64decode(view[start:end], validate=True))
            except binascii.Error:
                return None  # escaped characters, or not base64: the whole parse says which
            skeleton.append(body[resumed:start])
            resumed, width = end, end - start
            key = body.find(_EMBEDDING_KEY, end)
    if not decoded:
        return None
    skeleton.append(body[resumed:])
    try:
        document = orjson.loads(b"".join(skeleton))
    except orjson.JSONDecodeError:
        return None
    items = document.get("data") if isinstance(document, dict) else None
    if not isinstance(items, list) or len(items) != len(decoded):
        return None
    if not all(isinstance(item, dict) and item.get("embedding") == "" for item in items):
        return None
    order = sorted(range(len(items)), key=lambda i: items[i].get("index", 0))
    return document, _vectors([decoded[i] for i in order])


def decode_embeddings(values: list[Any]) -> Vectors:
    """The vectors as one (n x d) matrix when all are base64 of one length (the driver then
    checks them in one numpy call), else one array each."""
    if values and all(isinstance(value, str) for value in values):
        return _vectors([pybase64.b64decode(value, validate=True) for value in values])
    return [decode_embedding(value) for value in values]


def _vectors(raw: list[bytes]) -> Vectors:
    size = len(raw[0])
    if size and size % 4 == 0 and all(len(vector) == size for vector in raw):
        matrix = np.frombuffer(b"".join(raw), dtype="<f4").reshape(len(raw), -1)
        return matrix.astype(np.float32, copy=False)
    return [np.frombuffer(vector, dtype="<f4").astype(np.float32, copy=False) for vector in raw]


def decode_embedding(value: str | list[float]) -> np.ndarray:
    # Servers that ignore encoding_format=base64 send float lists; take those too.
    if isinstance(value, str):
        # pybase64's SIMD decoder is ~25x faster than binascii on 8 KB vectors
        return np.frombuffer(pybase64.b64decode(value, validate=True), dtype="<f4").astype(
            np.float32, copy=False
        )
    return np.asarray(value, dtype=np.float32)


def usage_tokens(document: dict[str, Any]) -> int:
    usage = document.get("usage") or {}
    tokens = usage.get("prompt_tokens") or usage.get("total_tokens") or 0
    return tokens if isinstance(tokens, int) else 0


def classify(response: httpx.Response, secrets: tuple[str, ...]) -> Exception:
    """Map an error response to the driver's kinds, with the SDK's message, redacted."""
    text, body = status_error(response)
    message = redact(text, secrets)
    status = response.status_code
    if status == 429 and error_code(body) == "insufficient_quota":
        return VectorizerError(message)  # billing, not throttling: waiting will not help
    if status == 429:
        return ThrottledError(message, retry_after=parse_retry_after(response.headers))
    if status in _TRANSIENT_STATUSES or status >= 500:
        return TransientError(message, retry_after=parse_retry_after(response.headers))
    if status in _BAD_INPUT_STATUSES:
        return BadInputError(message)
    return VectorizerError(message)


def status_error(response: httpx.Response) -> tuple[str, object]:
    """The SDK's message for an error response, and the body it parsed.

    A JSON body is shown as the Python value it decodes to (`Error code: 400 - {'error': ...}`);
    any other body is the message by itself, and an empty one leaves just the status.
    """
    text = response.text.strip()
    try:
        # The stdlib's parser, as the SDK: the message shows what it decodes to, NaN included.
        body = json.loads(text)
    except (ValueError, RecursionError):
        return text or f"Error code: {response.status_code}", text
    return f"Error code: {response.status_code} - {body}", body


def error_code(body: object) -> object:
    """OpenAI's `code` of an error body: `{"error": {"code": ...}}`, or a bare error object."""
    error = body.get("error", body) if isinstance(body, dict) else body
    return error.get("code") if isinstance(error, dict) else None
