"""Ollama embeddings (`implementation: ollama`): `/api/embed` of a local or remote Ollama server.

* The server is `base_url`, else `OLLAMA_HOST`, else `http://localhost:11434` (the SDK's rule).
* Setup asks the server about the model (`/api/show`) and pulls it when it is missing; a pull
  that fails is a vectorizer-level error naming the model and the server.
* Context length: the request's `options.num_ctx`, else the Modelfile's `num_ctx`, else the
  model's trained `<arch>.context_length`, never above the trained one. Ollama truncates
  over-long inputs itself unless `truncate` is false, in which case the server rejects them and
  the driver makes that input's row error alone. We never cut what Ollama would keep: only
  inputs far beyond the context (`MAX_BYTES_PER_TOKEN` bytes a token) are trimmed locally, so
  megabyte chunks stay off the wire.
* Token counts are estimates (`vectorizer.embedders.estimates`): Ollama has no per-request
  token cap, so they only feed the rate limiter.
* Inputs per request: `VECTORIZER_OLLAMA_MAX_INPUTS_PER_REQUEST`, else pgai's
  `PGAI_VECTORIZER_OLLAMA_MAX_CHUNKS_PER_BATCH`, else 64: Ollama computes a request in one go,
  and with several requests queued at the server a large batch on a slow CPU would outlast the
  request timeout.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
import ollama

from vectorizer.config import OllamaEmbedding
from vectorizer.embedders.base import (
    BadInputError,
    Embedder,
    ThrottledError,
    env_limit,
)
from vectorizer.embedders.estimates import (
    MAX_BYTES_PER_TOKEN,
    cut_utf8,
    estimate_tokens,
    utf8_size,
)
from vectorizer.errors import TransientError, VectorizerError
from vectorizer.observability.logging import register_secret

log = logging.getLogger(__name__)

DEFAULT_HOST = "http://localhost:11434"
DEFAULT_MAX_INPUTS_PER_REQUEST = 64
MAX_INPUTS_ENV = (
    "VECTORIZER_OLLAMA_MAX_INPUTS_PER_REQUEST",
    "PGAI_VECTORIZER_OLLAMA_MAX_CHUNKS_PER_BATCH",
)

_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)
# Some servers answer 500 rather than 400 for an input over the context length (and some do so
# even with truncation on); either way that input is the problem, not the server.
_TOO_LONG = re.compile(r"(context|input) length|too long", re.IGNORECASE)


class OllamaEmbedder(Embedder):
    provider = "ollama"

    _config: OllamaEmbedding

    def _configure(self) -> None:
        config = self._config
        self.max_inputs_per_request = env_limit(MAX_INPUTS_ENV, DEFAULT_MAX_INPUTS_PER_REQUEST)
        self.host = config.base_url or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        self._truncates = config.truncate is not False
        self.context_length: int | None = None
        self._client: ollama.AsyncClient | None = None

    async def _setup(self) -> None:
        # The SDK sends OLLAMA_API_KEY (ollama.com's hosted API) by itself; mask it in logs.
        key = os.environ.get("OLLAMA_API_KEY") or None
        register_secret(key)
        client = ollama.AsyncClient(host=self._config.base_url, timeout=self.policy.request_timeout)
        try:
            info = await self._show_or_pull(client)
        except BaseException:
            await client.close()
            raise
        self.context_length = context_length(info.modelinfo, info.parameters, self._config.options)
        self._client = client
        self.use_limiter(key, self.host)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._ready = False

    async def _show_or_pull(self, client: ollama.AsyncClient) -> ollama.ShowResponse:
        where = display_host(self.host)
        try:
            return await client.show(self.model)
        except ollama.ResponseError as exc:
            if exc.status_code != 404:
                raise VectorizerError(
                    f"ollama: cannot look up model {self.model!r} on {where}: {exc}"
                ) from None
        except (ConnectionError, httpx.TransportError) as exc:
            raise VectorizerError(f"ollama: cannot reach the server at {where}: {exc}") from None
        log.warning("ollama: model %r is not on %s; pulling it", self.model, where)
        await self._pull(client)
        try:
            return await client.show(self.model)
        except (ollama.ResponseError, ConnectionError, httpx.TransportError) as exc:
            raise VectorizerError(
                f"ollama: model {self.model!r} was pulled but {where} can't show it: {exc}"
            ) from None

    async def _pull(self, client: ollama.AsyncClient) -> None:
        where = display_host(self.host)
        status = None
        try:
            async for progress in await client.pull(self.model, stream=True):
                if progress.status != status:  # one line per phase, not one per chunk
                    status = progress.status
                    log.info("ollama: pulling %s: %s", self.model, status)
        except (ollama.ResponseError, ConnectionError, httpx.TransportError) as exc:
            message = exc.error if isinstance(exc, ollama.ResponseError) else str(exc)
            raise VectorizerError(
                f"ollama: model {self.model!r} is not on {where} and pulling it failed: {message}"
            ) from None
        if status != "success":
            raise VectorizerError(
                f"ollama: pulling model {self.model!r} from {where} ended without success "
                f"(last status: {status!r})"
            )

    def prepare_input(self, text: str) -> tuple[str, int]:
        size = utf8_size(text)
        context = self.context_length
        if context is None:
            return text, estimate_tokens(size)
        if self._truncates:
            limit = context * MAX_BYTES_PER_TOKEN
            if size > limit:
                log.debug("ollama: trimming a %d-byte input to %d bytes", size, limit)
                text = cut_utf8(text, limit)
            # The server cuts the rest: never more than the context is embedded.
            return text, min(estimate_tokens(size), context)
        return text, estimate_tokens(size)

    async def _request(self, texts: list[str]) -> tuple[list[np.ndarray], int]:
        if self._client is None:
            raise VectorizerError("the Ollama embedder was used before setup()")
        try:
            response = await self._client.embed(
                model=self.model,
                input=texts,
                truncate=self._config.truncate,
                options=self._config.options,
                keep_alive=self._config.keep_alive,
            )
        except ollama.ResponseError as exc:
            raise classify(exc) from None
        except (ConnectionError, httpx.TransportError) as exc:
            # TransportError covers timeouts and resets; the SDK turns refusals into
            # ConnectionError. A server that is restarting comes back: retry in place.
            kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
            raise TransientError(
                f"ollama: request to {display_host(self.host)} {kind}: {exc}"
            ) from None
        vectors = [np.asarray(vector, dtype=np.float32) for vector in response.embeddings]
        return vectors, response.prompt_eval_count or 0


def context_length(
    model_info: Mapping[str, Any] | None,
    parameters: str | None,
    options: Mapping[str, Any] | None,
) -> int | None:
    """The tokens the server embeds per input, from `/api/show` and the request options."""
    info = model_info or {}
    trained = None
    architecture = info.get("general.architecture")
    if isinstance(architecture, str):
        trained = _positive(info.get(f"{architecture}.context_length"))
    if trained is None:
        trained = next(
            (_positive(v) for k, v in info.items() if k.endswith(".context_length")), None
        )
    runtime = _positive((options or {}).get("num_ctx"))
    if runtime is None and parameters:
        match = _NUM_CTX.search(parameters)
        runtime = _positive(match.group(1)) if match else None
    if runtime is not None and trained is not None:
        return min(runtime, trained)
    return runtime or trained


def classify(exc: ollama.ResponseError) -> Exception:
    """Map an SDK error to the driver's kinds by HTTP status."""
    status = exc.status_code
    message = f"ollama: {exc.error} (status {status})"
    if status == 429:
        return ThrottledError(message)
    if status == 400 or (status == 500 and _TOO_LONG.search(str(exc.error))):
        return BadInputError(message)
    if status in (408, 500, 502, 503, 504) or status > 500:
        # 503: the server's queue is full (OLLAMA_MAX_QUEUE); 500: a runner crashed or is
        # reloading the model. Both pass.
        return TransientError(message)
    return VectorizerError(message)  # 401/403/404 and an error inside a stream (-1)


def display_host(host: str) -> str:
    """`host` without any credentials in it, for messages."""
    parsed = urllib.parse.urlsplit(host if "://" in host else f"http://{host}")
    if parsed.username is None and parsed.password is None:
        return host
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def _positive(value: object) -> int | None:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
