"""LiteLLM embeddings (`implementation: litellm`): any of LiteLLM's providers, `provider/model`.

* The call is pgai's: `litellm.aembedding(model=, input=, api_key=<key or None>,
  **extra_options)`, with `api_base`, `num_retries`, `timeout` and the provider's own options
  passed through `extra_options`. LiteLLM itself does not retry (`num_retries=0`, and the
  OpenAI client under it gets no retries either) unless `extra_options` says otherwise: the
  shared driver and rate limiter do.
* litellm takes seconds to import and fetches a price list at import unless told not to: it is
  imported on first use, on a worker thread (the event loop keeps serving other vectorizers),
  with `LITELLM_LOCAL_MODEL_COST_MAP=True` unless the environment says otherwise.
* Limits per request by provider (`MAX_INPUTS`, `MAX_TOKENS`; Voyage's by model). An unknown
  provider gets `UNKNOWN_PROVIDER_MAX_INPUTS` and a warning, once. The environment overrides:
  `VECTORIZER_LITELLM_MAX_INPUTS_PER_REQUEST` (or pgai's `PGAI_LITELLM_MAX_CHUNKS_PER_BATCH`) and
  `VECTORIZER_LITELLM_MAX_TOKENS_PER_REQUEST`.
* Token counts: OpenAI's own request estimate for openai/azure, Voyage's tokenizer for voyage
  (when it can be loaded), otherwise the estimate in `vectorizer.embedders.estimates`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from vectorizer.config import LiteLLMEmbedding
from vectorizer.embedders.base import (
    BadInputError,
    Embedder,
    ThrottledError,
    Vectors,
    env_limit,
    parse_retry_after,
    redact,
    resolve_api_key,
)
from vectorizer.embedders.estimates import estimate_tokens, utf8_size
from vectorizer.embedders.hf_tokenizers import load_tokenizer, loaded_tokenizer
from vectorizer.embedders.voyageai import context_tokens
from vectorizer.embedders.voyageai import max_tokens_per_request as voyage_max_tokens
from vectorizer.errors import TransientError, VectorizerError
from vectorizer.imports import import_module
from vectorizer.observability.logging import register_secret

log = logging.getLogger(__name__)

# Inputs per request, by LiteLLM provider (pgai's table; Voyage's API takes 1000, Ollama as our
# own Ollama embedder).
MAX_INPUTS = {
    "cohere": 96,
    "openai": 2048,
    "azure": 2048,
    "bedrock": 96,
    "gemini": 250,
    "huggingface": 2048,
    "mistral": 128,
    "vertex_ai": 250,
    "voyage": 1000,
    "ollama": 64,
}
UNKNOWN_PROVIDER_MAX_INPUTS = 16
# Tokens per request, by provider; Voyage's depend on the model. OpenAI counts its 300K with
# the same quarter-token-per-byte estimate we use for it.
MAX_TOKENS = {"mistral": 16_000, "vertex_ai": 20_000, "openai": 300_000, "azure": 300_000}
OPENAI_BYTES_PER_TOKEN = 4

MAX_INPUTS_ENV = ("VECTORIZER_LITELLM_MAX_INPUTS_PER_REQUEST", "PGAI_LITELLM_MAX_CHUNKS_PER_BATCH")
MAX_TOKENS_ENV = "VECTORIZER_LITELLM_MAX_TOKENS_PER_REQUEST"
# LiteLLM's provider names that are another embedder's provider: they share its rate limiter.
_LIMITER_PROVIDERS = {"voyage": "voyageai"}
_HEADER_PREFIX = "llm_provider-"

_warned_providers: set[str] = set()
_warned_lock = threading.Lock()


class LiteLLMEmbedder(Embedder):
    provider = "litellm"
    lazy_imports = ("litellm", "tokenizers", "huggingface_hub")

    _config: LiteLLMEmbedding

    def _configure(self) -> None:
        config = self._config
        self.llm_provider = ""
        self._model_name = config.model
        self._tokenizer_repo: str | None = None
        self._litellm: ModuleType | None = None

    async def _setup(self) -> None:
        config = self._config
        key = None
        if config.api_key_name:
            key = resolve_api_key(config.api_key_name, self._api_key)
        elif isinstance(config.extra_options.get("api_key"), str):
            key = config.extra_options["api_key"]
            register_secret(key)
        self._api_key = key
        self._secrets = tuple(s for s in (key,) if s)
        litellm = await asyncio.to_thread(import_litellm)
        try:
            model_name, provider, _, default_base = litellm.get_llm_provider(
                model=config.model,
                custom_llm_provider=config.extra_options.get("custom_llm_provider"),
                api_base=config.extra_options.get("api_base"),
            )
        except Exception as exc:
            raise VectorizerError(
                f"litellm: can't tell which provider serves model {config.model!r}: "
                f"{redact(str(exc), self._secrets)}"
            ) from None
        self.llm_provider = provider
        self._model_name = model_name
        if key is None:
            # LiteLLM finds the key itself (OPENAI_API_KEY, COHERE_API_KEY...): mask those too.
            self._secrets = provider_env_secrets(provider)
        self.max_inputs_per_request, self.max_tokens_per_request = request_limits(
            provider, model_name
        )
        endpoint = config.extra_options.get("api_base") or default_base
        self.use_limiter(key, endpoint, _LIMITER_PROVIDERS.get(provider, provider))
        if provider == "voyage":
            self._tokenizer_repo = f"voyageai/{model_name}"
            await load_tokenizer(self._tokenizer_repo)
        self._litellm = litellm

    async def aclose(self) -> None:
        self._ready = False  # litellm keeps its own client pools; nothing of ours stays open

    def prepare_input(self, text: str) -> tuple[str, int]:
        size = utf8_size(text)
        provider = self.llm_provider
        if provider in ("openai", "azure"):
            return text, estimate_tokens(size, OPENAI_BYTES_PER_TOKEN)
        if provider == "voyage":
            tokenizer = loaded_tokenizer(self._tokenizer_repo or "")
            count = len(tokenizer.encode(text).ids) if tokenizer else estimate_tokens(size)
            # Voyage truncates each input before counting the request's tokens.
            return text, min(count, context_tokens(self._model_name))
        return text, estimate_tokens(size)

    async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
        litellm = self._litellm
        if litellm is None:
            raise VectorizerError("the LiteLLM embedder was used before setup()")
        arguments = self._arguments(texts)
        timeout = arguments["timeout"]
        try:
            # LiteLLM does not enforce `timeout` for every provider: bound it here too.
            async with asyncio.timeout(timeout + 1.0 if isinstance(timeout, int | float) else None):
                response = await litellm.aembedding(**arguments)
        except TimeoutError:
            raise TransientError(f"litellm: no answer within {timeout}s") from None
        except Exception as exc:
            self._observe_error(exc)
            raise classify(exc, self._secrets) from None
        self._observe(response)
        return parse_response(response)

    def _arguments(self, texts: list[str]) -> dict[str, Any]:
        arguments: dict[str, Any] = {"num_retries": 0, "timeout": self.policy.request_timeout}
        arguments.update(self._config.extra_options)
        arguments.update(model=self.model, input=texts, api_key=self._api_key)
        return arguments

    def _observe(self, response: Any) -> None:
        hidden = getattr(response, "_hidden_params", None) or {}
        headers = hidden.get("additional_headers") if isinstance(hidden, Mapping) else None
        if headers:
            self.limiter.observe(provider_headers(headers))

    def _observe_error(self, exc: Exception) -> None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers:
            self.limiter.observe(headers)


# Without this, importing litellm downloads a price list (and stalls offline). Set when this
# module is imported, which is always before litellm is (see `LiteLLMEmbedder.lazy_imports`).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def import_litellm() -> ModuleType:
    """litellm, imported without network access at import time and quiet by default."""
    litellm = import_module("litellm")

    litellm.suppress_debug_info = True
    # LiteLLM hands the OpenAI client `max_retries or DEFAULT_MAX_RETRIES`, so an explicit 0
    # still meant 2 hidden retries (a 429 retried behind the limiter's back). The worker is
    # the only litellm user in its process; a user's own `max_retries` still applies.
    litellm.DEFAULT_MAX_RETRIES = 0  # type: ignore[misc]  # Final in litellm, on purpose here
    return litellm


def request_limits(provider: str, model: str) -> tuple[int, int | None]:
    """(inputs, tokens) per request for a LiteLLM provider, the environment's first."""
    default_inputs = MAX_INPUTS.get(provider)
    if default_inputs is None:
        default_inputs = UNKNOWN_PROVIDER_MAX_INPUTS
        with _warned_lock:
            first = provider not in _warned_providers
            _warned_providers.add(provider)
        if first and not any(os.environ.get(name) for name in MAX_INPUTS_ENV):
            log.warning(
                "litellm: unknown provider %r, falling back to %d inputs per request; set "
                "VECTORIZER_LITELLM_MAX_INPUTS_PER_REQUEST to its real limit",
                provider,
                default_inputs,
            )
    inputs = env_limit(MAX_INPUTS_ENV, default_inputs)
    tokens = voyage_max_tokens(model) if provider == "voyage" else MAX_TOKENS.get(provider)
    if os.environ.get(MAX_TOKENS_ENV, "").strip():
        tokens = env_limit((MAX_TOKENS_ENV,), tokens or 0) or None
    return inputs, tokens


def provider_env_secrets(provider: str) -> tuple[str, ...]:
    """Values of the environment's `<PROVIDER>...KEY/TOKEN` variables, registered for masking."""
    prefix = provider.upper().split("_")[0]
    secrets = []
    for name, value in os.environ.items():
        upper = name.upper()
        if upper.startswith(prefix) and upper.endswith(("KEY", "TOKEN")) and value.strip():
            register_secret(value.strip())
            secrets.append(value.strip())
    return tuple(secrets)


def provider_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """The provider's response headers as LiteLLM passes them on (prefixed), lower-cased."""
    return {
        str(name).lower().removeprefix(_HEADER_PREFIX): str(value)
        for name, value in headers.items()
    }


def parse_response(response: Any) -> tuple[Vectors, int]:
    try:
        items = list(response.data)
        if all(isinstance(item, Mapping) and "index" in item for item in items):
            items.sort(key=lambda item: item["index"])
        rows = [item["embedding"] for item in items]
    except (AttributeError, KeyError, TypeError) as exc:
        raise VectorizerError(f"litellm returned a malformed embeddings response: {exc}") from None
    usage = getattr(response, "usage", None)
    tokens = getattr(usage, "prompt_tokens", None) or getattr(usage, "total_tokens", None) or 0
    try:
        vectors: Vectors = np.asarray(rows, dtype=np.float32)
    except ValueError:
        vectors = [np.asarray(row, dtype=np.float32) for row in rows]
    return vectors, int(tokens)


def classify(exc: Exception, secrets: tuple[str, ...]) -> Exception:
    """Map a LiteLLM exception (or anything it let through) to the driver's kinds."""
    import litellm

    message = redact(str(exc), secrets)
    if isinstance(exc, litellm.ContextWindowExceededError):
        return BadInputError(message)  # whatever status the provider used for it
    # The HTTP status first: LiteLLM guesses the class from the error text, and a 5xx whose
    # body says "invalid_request_error" comes back as a BadRequestError.
    status = getattr(exc, "status_code", None)
    if status == 429 or isinstance(exc, litellm.RateLimitError):
        return ThrottledError(message, retry_after=_retry_after(exc))
    transient = (
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.ServiceUnavailableError,
        litellm.InternalServerError,
        litellm.BadGatewayError,
    )
    if isinstance(exc, transient) or (isinstance(status, int) and (status >= 500 or status == 408)):
        return TransientError(message, retry_after=_retry_after(exc))
    if isinstance(exc, litellm.BadRequestError | litellm.UnprocessableEntityError) or status in (
        400,
        413,
        422,
    ):
        # One input's fault or the configuration's: the driver's canary tells which.
        return BadInputError(message)
    return VectorizerError(message)  # authentication, permission, unknown model, the rest


def _retry_after(exc: Exception) -> float | None:
    for headers in (
        getattr(getattr(exc, "response", None), "headers", None),
        exc.__dict__.get("headers"),
    ):
        if headers:
            retry_after = parse_retry_after({str(k).lower(): str(v) for k, v in headers.items()})
            if retry_after is not None:
                return retry_after
    return None
