"""Voyage AI embeddings (`implementation: voyageai`).

* Endpoint: `base_url`, else `VOYAGE_BASE_URL`, else the SDK's default for the key (keys issued
  by MongoDB Atlas, `al-...`, go to ai.mongodb.com). The SDK does not retry (`max_retries=0`):
  the shared driver and rate limiter do. Requests share one kept-alive HTTP session (the SDK
  would open a connection per request).
* Request: `input_type`, `output_dimension` and `output_dtype` as configured; `truncation` is
  on, so Voyage cuts an over-long input to the model's context. int8/uint8 embeddings are
  stored as their values in float32 (vector columns hold float4).
* Limits per request: 1000 inputs, and by model 1M tokens (voyage-4-lite, voyage-3.5-lite,
  voyage-3-lite), 320K (voyage-4, voyage-3.5, voyage-2, voyage-3) or 120K (the rest).
* Token counts come from Voyage's tokenizer (`voyageai/<model>` on the HuggingFace hub) when it
  can be loaded (`vectorizer.embedders.hf_tokenizers`), otherwise from an estimate, so an
  offline worker still runs.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import aiohttp
import numpy as np
import voyageai
import voyageai.error
import voyageai.util

from vectorizer.config import VoyageAIEmbedding
from vectorizer.embedders.base import (
    BadInputError,
    Embedder,
    ThrottledError,
    Vectors,
    parse_retry_after,
    redact,
    resolve_api_key,
)
from vectorizer.embedders.estimates import (
    MAX_BYTES_PER_TOKEN,
    cut_utf8,
    estimate_tokens,
    utf8_size,
)
from vectorizer.embedders.hf_tokenizers import load_tokenizer, loaded_tokenizer
from vectorizer.errors import TransientError, VectorizerError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

MAX_INPUTS_PER_REQUEST = 1000
DEFAULT_MAX_TOKENS_PER_REQUEST = 120_000
MAX_TOKENS_PER_REQUEST = {
    "voyage-4-lite": 1_000_000,
    "voyage-3.5-lite": 1_000_000,
    "voyage-3-lite": 1_000_000,
    "voyage-4": 320_000,
    "voyage-3.5": 320_000,
    "voyage-2": 320_000,
    "voyage-3": 320_000,
}
# Tokens per input that Voyage embeds (it truncates the rest); 32K for current models.
DEFAULT_CONTEXT_TOKENS = 32_000
CONTEXT_TOKENS = {
    "voyage-law-2": 16_000,
    "voyage-code-2": 16_000,
    "voyage-large-2": 16_000,
    "voyage-large-2-instruct": 16_000,
    "voyage-2": 4_000,
}


def max_tokens_per_request(model: str) -> int:
    return MAX_TOKENS_PER_REQUEST.get(model, DEFAULT_MAX_TOKENS_PER_REQUEST)


def context_tokens(model: str) -> int:
    return CONTEXT_TOKENS.get(model, DEFAULT_CONTEXT_TOKENS)


class VoyageAIEmbedder(Embedder):
    provider = "voyageai"
    lazy_imports = ("tokenizers", "huggingface_hub")  # the tokenizer loads in a thread
    max_inputs_per_request = MAX_INPUTS_PER_REQUEST

    _config: VoyageAIEmbedding

    def _configure(self) -> None:
        config = self._config
        self.max_tokens_per_request = max_tokens_per_request(config.model)
        self.context_tokens = context_tokens(config.model)
        self.tokenizer_repo = f"voyageai/{config.model}"
        self._tokenizer: Tokenizer | None = None
        self._client: voyageai.AsyncClient | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _setup(self) -> None:
        key = resolve_api_key(self._config.api_key_name, self._api_key)
        self._secrets = (key,)
        base_url = self._config.base_url or os.environ.get("VOYAGE_BASE_URL") or None
        self._client = voyageai.AsyncClient(
            api_key=key, max_retries=0, timeout=self.policy.request_timeout, base_url=base_url
        )
        self.use_limiter(key, base_url or voyageai.util.get_default_base_url(key))
        self._tokenizer = await load_tokenizer(self.tokenizer_repo)
        self._session = aiohttp.ClientSession()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._client = None
        self._ready = False

    @property
    def tokenizer(self) -> Tokenizer | None:
        if self._tokenizer is None:
            # A download that outlasted setup's wait may have finished since.
            self._tokenizer = loaded_tokenizer(self.tokenizer_repo)
        return self._tokenizer

    def prepare_input(self, text: str) -> tuple[str, int]:
        size = utf8_size(text)
        context = self.context_tokens
        tokenizer = self.tokenizer
        if tokenizer is None:
            if size > context * MAX_BYTES_PER_TOKEN:
                text = cut_utf8(text, context * MAX_BYTES_PER_TOKEN)
            # Voyage counts a request's tokens after truncating each input.
            return text, min(estimate_tokens(size), context)
        encoding = tokenizer.encode(text)
        count = len(encoding.ids)
        if count > context:
            # Cut where Voyage would: a smaller request, the same embedding.
            ends = [end for _, end in encoding.offsets[:context] if end > 0]
            text = text[: max(ends, default=len(text))]
            count = context
        return text, count

    async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
        if self._client is None:
            raise VectorizerError("the Voyage AI embedder was used before setup()")
        config = self._config
        # The SDK takes a session from this context variable, for this task only.
        session = voyageai.aiosession.set(self._session)
        try:
            result = await self._client.embed(
                texts,
                model=self.model,
                input_type=config.input_type,
                truncation=True,
                output_dtype=config.output_dtype,
                output_dimension=config.output_dimension,
            )
        except voyageai.error.VoyageError as exc:
            raise classify(exc, self._secrets) from None
        finally:
            voyageai.aiosession.reset(session)
        return as_vectors(result.embeddings), int(result.total_tokens or 0)


def as_vectors(embeddings: list[list[float]] | list[list[int]]) -> Vectors:
    try:
        return np.asarray(embeddings, dtype=np.float32)
    except ValueError:
        # Rows of different lengths: hand them over one by one, the driver charges the odd.
        return [np.asarray(row, dtype=np.float32) for row in embeddings]


def classify(exc: voyageai.error.VoyageError, secrets: tuple[str, ...]) -> Exception:
    """Map an SDK exception to the driver's kinds, with a redacted message."""
    status = exc.http_status
    detail = f"voyageai: {exc}" + (f" (status {status})" if status else "")
    message = redact(detail, secrets)
    errors = voyageai.error
    if isinstance(exc, errors.RateLimitError):
        return ThrottledError(message, retry_after=parse_retry_after(exc.headers))
    if isinstance(exc, errors.AuthenticationError):
        return VectorizerError(message)
    if isinstance(exc, errors.InvalidRequestError | errors.MalformedRequestError):
        return BadInputError(message)
    transient = (
        errors.ServerError,
        errors.ServiceUnavailableError,
        errors.Timeout,
        errors.APIConnectionError,
        errors.TryAgain,
    )
    if isinstance(exc, transient) or (status is not None and (status >= 500 or status == 408)):
        return TransientError(message, retry_after=parse_retry_after(exc.headers))
    if status == 413:
        return BadInputError(message)
    return VectorizerError(message)
