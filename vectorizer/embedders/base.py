"""The embedder contract shared by every provider, and the helpers providers classify with.

A provider subclasses `Embedder` and implements one low-level call, `_request`, that embeds a
list of texts or raises a classified exception:

* `TransientError` (5xx, timeouts, resets): the driver retries in place;
* `ThrottledError` (429): the driver pauses everyone sharing the provider's rate limiter, then
  retries in place;
* `VectorizerError` (auth, unknown model, invalid parameter): every row would fail;
* `BadInputError` (a 400 that one input may have caused): the driver isolates the input.

Everything above that (packing, concurrency, retries, poison isolation, dimension checks,
redaction) lives in `vectorizer.embedders.driver`, so providers stay small and behave alike.
Providers that see rate-limit headers on a response hand them to `self.limiter.observe`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from vectorizer import env
from vectorizer.embedders.driver import EmbedCall
from vectorizer.embedders.ratelimit import RateLimiter, shared_limiter
from vectorizer.embedders.ratelimit import ThrottledError as ThrottledError  # for providers
from vectorizer.embedders.results import BadInputError as BadInputError  # for providers
from vectorizer.embedders.results import EmbedResult, Vectors
from vectorizer.errors import VectorizerError
from vectorizer.observability.logging import register_secret

log = logging.getLogger(__name__)


class ApiKeyNotFoundError(VectorizerError):
    """The environment variable that should hold the provider's API key is unset or empty."""

    def __init__(self, api_key_name: str, *, vectorizer_id: int | None = None) -> None:
        # The "ApiKeyNotFoundError: api_key_name=<NAME>" prefix is what pgai users grep logs for.
        where = "" if vectorizer_id is None else f" vectorizer_id={vectorizer_id}"
        super().__init__(
            f"ApiKeyNotFoundError: api_key_name={api_key_name}{where}: no API key found; "
            f"set the environment variable {api_key_name} for the worker"
        )
        self.api_key_name = api_key_name


def _setting(variable: str, default: float) -> Any:
    """A policy field that VECTORIZER_<variable> may override (see `RequestPolicy.from_env`)."""
    return field(default=default, metadata={"env": f"VECTORIZER_{variable}"})


@dataclass(frozen=True)
class RequestPolicy:
    """How hard the driver pushes one provider: concurrency, timeouts and in-place retries."""

    max_concurrent_requests: int = _setting("MAX_CONCURRENT_REQUESTS", 4)
    # An outage (5xx, timeouts, resets) is retried in place for at most this many tries or
    # seconds, whichever comes first; then it is the vectorizer's error (nothing charged, the
    # breaker backs off), so a dead provider neither holds a batch open nor stalls a once-run.
    retry_budget: float = _setting("TRANSIENT_RETRY_BUDGET", 30.0)
    transient_attempts: int = _setting("TRANSIENT_MAX_ATTEMPTS", 5)
    # 429s only slow the worker down; a quota that never recovers still ends after this long.
    throttle_budget: float = _setting("THROTTLE_RETRY_BUDGET", 300.0)
    max_wait: float = 60.0
    base_wait: float = 1.0
    request_timeout: float = _setting("REQUEST_TIMEOUT", 120.0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RequestPolicy:
        """The defaults, each overridden by its VECTORIZER_* variable when set to a positive
        number (a whole one for counts); anything else is logged and ignored (`env`)."""
        values: dict[str, Any] = {}
        for setting in fields(cls):
            variable = setting.metadata.get("env")
            if variable is None:
                continue
            if isinstance(setting.default, int):
                found: float | None = env.positive_int([variable], environ)
            else:
                found = env.positive_number(variable, environ)
            if found is not None:
                values[setting.name] = found
        return cls(**values)


def env_limit(names: Sequence[str], default: int, environ: Mapping[str, str] | None = None) -> int:
    """The first of `names` set in the environment, as a positive whole number, else `default`."""
    found = env.positive_int(names, environ)
    return default if found is None else found


class ModelConfig(Protocol):
    """What every embedding config has (config.py's `*Embedding` classes)."""

    @property
    def model(self) -> str: ...

    @property
    def dimensions(self) -> int: ...


class Embedder(ABC):
    """One configured embedding model. Subclasses implement `_request` and maybe the hooks."""

    provider: str = ""
    max_inputs_per_request: int = 2048
    max_tokens_per_request: int | None = None
    # A tiny input that any working configuration embeds; used to tell a bad input from a
    # bad configuration when the provider rejects a request.
    canary_text: str = "ok"
    # Packages the provider imports on first use (in setup, in a thread, at request time):
    # imported up front by `provider_class`, so no import runs alongside another provider's
    # requests.
    lazy_imports: tuple[str, ...] = ()
    # Whether its answers are freed when a request ends, not left in reference cycles for
    # the garbage collector (SDKs on httpx leave them): see vectorizer.collector.
    frees_answers: bool = False

    def __init__(
        self,
        config: ModelConfig,
        *,
        api_key: str | None = None,
        policy: RequestPolicy | None = None,
    ) -> None:
        """`api_key` overrides the one the config names; `policy` the environment's."""
        self._config = config
        self._api_key = api_key
        self.model = config.model
        self.dimensions = config.dimensions
        self.policy = policy or RequestPolicy.from_env()
        self._secrets: tuple[str, ...] = ()
        # Unshared and unlimited until `_setup` knows the key and endpoint (`use_limiter`).
        self.limiter = RateLimiter()
        self._ready = False
        self._setup_lock = asyncio.Lock()
        # told of every 429 and transient failure (the adaptive concurrency backs off)
        self.on_pushback: Callable[[str], None] | None = None
        self._configure()

    def _configure(self) -> None:
        """The provider's own state, derived from `self._config` (no I/O: that is `_setup`)."""
        return  # a provider without state of its own has nothing to derive

    def __repr__(self) -> str:
        # Never include keys or clients here: reprs end up in logs and tracebacks.
        return (
            f"{type(self).__name__}(provider={self.provider!r}, model={self.model!r}, "
            f"dimensions={self.dimensions})"
        )

    async def setup(self) -> None:
        """Resolve credentials and build clients; idempotent. May raise VectorizerError."""
        async with self._setup_lock:
            if not self._ready:
                await self._setup()
                self._ready = True

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        """Embed `texts`; row-level failures land in `errors`, config-level ones raise."""
        if not texts:
            return EmbedResult(vectors=[], errors={}, tokens=0, requests=0)
        await self.setup()
        return await EmbedCall(self, texts).run()

    async def aclose(self) -> None:
        """Release clients and connections."""
        return  # providers without clients have nothing to release

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def pushed_back(self, reason: str) -> None:
        if self.on_pushback is not None:
            self.on_pushback(reason)

    def prepare_input(self, text: str) -> tuple[str, int]:
        """The text to send for one input and its token count for packing.

        Providers that truncate return the truncated text; an input the provider can't take
        raises BadInputError, which charges that input only.
        """
        return text, 0

    async def _setup(self) -> None:
        """Provider-specific setup, run once by `setup`."""
        return  # providers without credentials or clients need none

    def use_limiter(self, api_key: str | None, endpoint: str | None, provider: str = "") -> None:
        """Share the process-wide limiter of (provider, key, endpoint) from now on."""
        self.limiter = shared_limiter(provider or self.provider, api_key, endpoint)

    @abstractmethod
    async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
        """One HTTP request: the vectors in input order and the tokens the provider reported."""


def resolve_api_key(api_key_name: str, api_key: str | None = None) -> str:
    """The given key, else the one in the environment variable `api_key_name`."""
    key = (api_key or os.environ.get(api_key_name, "")).strip()
    if not key:
        raise ApiKeyNotFoundError(api_key_name)
    register_secret(key)  # masked in every log line from now on
    return key


_MASK = "***"
# OpenAI-style keys, whole or as providers echo them partly masked ("sk-proj-****abcd").
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}")
# Other partly masked keys as providers echo them back ("abcd********wxyz").
_PARTLY_MASKED = re.compile(r"[A-Za-z0-9_\-]*\*{4,}[A-Za-z0-9_\-]*")


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret, and anything that looks like an API key, masked."""
    # Longest first, so a key that contains another secret is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    text = _KEY_LIKE.sub("sk-" + _MASK, text)
    return _PARTLY_MASKED.sub(_MASK, text)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    raw = headers.get("retry-after")
    seconds = _number(raw)
    if seconds is not None or not raw:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
