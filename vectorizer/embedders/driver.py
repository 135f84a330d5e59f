"""The provider-independent half of `Embedder.embed`.

One `EmbedCall` per `embed` call: prepare each input (truncate, or reject it alone), pack the
rest into requests under the provider's limits, run them concurrently under the provider's
shared rate limiter, retry transient failures in place, isolate poison inputs by bisection,
check dimensions, and reassemble everything in input order.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from vectorizer.backoff import Backoff
from vectorizer.embedders.batching import pack
from vectorizer.embedders.ratelimit import ThrottledError
from vectorizer.embedders.results import BadInputError, EmbedResult, Vectors
from vectorizer.errors import TransientError, VectorizerError
from vectorizer.observability import tracing

if TYPE_CHECKING:  # the provider base class imports this module to run its calls
    from vectorizer.embedders.base import Embedder

log = logging.getLogger(__name__)

# pgvector refuses NaN and infinity; failing the input charges only its row
NON_FINITE = "the model returned a non-finite value (NaN or infinity)"


def backoff_delay(
    attempt: int,
    retry_after: float | None,
    *,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    The provider's own hint wins; otherwise exponential backoff with full jitter, so workers
    that failed together do not retry together.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    return Backoff(base, cap, "full").delay(attempt, rng)


class EmbedCall:
    """The state of one `embed` call; `run` fills it in and returns the result."""

    def __init__(self, embedder: Embedder, texts: Sequence[str]) -> None:
        self._embedder = embedder
        self._texts = texts
        self._sent: list[str] = [""] * len(texts)
        self._counts: list[int] = [0] * len(texts)
        self._vectors: list[np.ndarray | None] = [None] * len(texts)
        self._errors: dict[int, str] = {}
        self._tokens = 0
        self._requests = 0
        self._semaphore = asyncio.Semaphore(embedder.policy.max_concurrent_requests)
        self._canary_lock = asyncio.Lock()
        self._canary_checked = False

    async def run(self) -> EmbedResult:
        indices, counts = self._prepare()
        groups = pack(
            counts,
            max_inputs=self._embedder.max_inputs_per_request,
            max_tokens=self._embedder.max_tokens_per_request,
        )
        await _gather(self._embed_group([indices[k] for k in group]) for group in groups)
        return EmbedResult(
            vectors=self._vectors,
            errors=dict(sorted(self._errors.items())),
            tokens=self._tokens,
            requests=self._requests,
        )

    def _prepare(self) -> tuple[list[int], list[int]]:
        """Fill in the texts to send; return the inputs still in the running and their tokens."""
        indices: list[int] = []
        counts: list[int] = []
        for index, text in enumerate(self._texts):
            if not isinstance(text, str):
                self._errors[index] = f"the input is {type(text).__name__}, not text"
                continue
            try:
                self._sent[index], count = self._embedder.prepare_input(text)
            except BadInputError as exc:
                self._errors[index] = self._embedder.redact(exc.message)
                continue
            self._counts[index] = count
            indices.append(index)
            counts.append(count)
        return indices, counts

    async def _embed_group(self, indices: list[int]) -> None:
        try:
            vectors, tokens = await self._request(
                [self._sent[i] for i in indices], sum(self._counts[i] for i in indices)
            )
        except BadInputError as exc:
            await self._isolate(indices, exc)
            return
        self._accept(indices, vectors, tokens)

    async def _isolate(self, indices: list[int], exc: BadInputError) -> None:
        """Find which inputs of a rejected request are to blame: bisect down to single ones."""
        await self._check_configuration()
        if len(indices) == 1:
            self._errors[indices[0]] = self._embedder.redact(exc.message)
            return
        middle = len(indices) // 2
        await _gather([self._embed_group(indices[:middle]), self._embed_group(indices[middle:])])

    async def _check_configuration(self) -> None:
        """Raise VectorizerError when even a trivial input is rejected: the config is at fault.

        Run once per call, before bisecting, so an invalid parameter costs two requests rather
        than one per input.
        """
        async with self._canary_lock:
            if self._canary_checked:
                return
            try:
                canary, count = self._embedder.prepare_input(self._embedder.canary_text)
                await self._request([canary], count)
            except BadInputError as exc:
                raise VectorizerError(self._embedder.redact(exc.message)) from None
            self._canary_checked = True

    async def _request(self, texts: list[str], tokens: int) -> tuple[Vectors, int]:
        """One request, retried in place while the provider fails transiently.

        Every attempt first waits for the shared limiter's budget (`tokens` is the packing
        estimate). A 429 pauses the limiter, so the retry waits there, with everyone else
        using the same key, rather than in a private backoff of its own. Other transient
        failures back off here, for a bounded number of tries (see `RequestPolicy`).
        """
        limiter = self._embedder.limiter
        retries = _Retries(self._embedder)
        while True:
            self._requests += 1
            try:
                async with self._semaphore, limiter.request(tokens):
                    with tracing.span(
                        "vectorizer.embed_request",
                        provider=self._embedder.provider,
                        model=self._embedder.model,
                        inputs=len(texts),
                        attempt=retries.attempts,
                    ):
                        return await self._embedder._request(texts)
            except ThrottledError as exc:
                # The limiter has paused itself; the next attempt waits there.
                self._embedder.pushed_back("429")
                retries.throttled(exc)
                continue
            except TransientError as exc:
                self._embedder.pushed_back("transient error")
                wait = retries.failed(exc)
            except VectorizerError as exc:
                self._reraise_redacted(exc)
            await asyncio.sleep(wait)

    def _reraise_redacted(self, exc: VectorizerError) -> NoReturn:
        # Providers redact already; this is the last line of defence before the worker logs.
        message = self._embedder.redact(exc.message)
        if message == exc.message:
            raise exc
        raise VectorizerError(message, step=exc.step) from None

    def _accept(self, indices: list[int], vectors: Vectors, tokens: int) -> None:
        if len(vectors) != len(indices):
            raise VectorizerError(
                f"the provider returned {len(vectors)} embeddings for {len(indices)} inputs"
            )
        self._tokens += max(int(tokens), 0)
        expected = self._embedder.dimensions
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.shape[1] == expected:
            self._accept_matrix(indices, vectors)
            return
        sizes = [_size(vector) for vector in vectors]
        if all(size != expected for size in sizes):
            raise VectorizerError(
                f"dimension mismatch: the model returned {sizes[0]} dimensions, "
                f"the vectorizer expects {expected}"
            )
        for index, vector, size in zip(indices, vectors, sizes, strict=True):
            self._accept_one(index, vector, size)

    def _accept_matrix(self, indices: list[int], matrix: np.ndarray) -> None:
        # one finiteness test for the whole answer: per vector it cost ~3 us of numpy overhead
        finite = np.isfinite(matrix).all(axis=1)
        vectors = np.asarray(matrix, dtype=np.float32)
        for index, vector, ok in zip(indices, vectors, finite.tolist(), strict=True):
            if ok:
                self._vectors[index] = vector
            else:
                self._errors[index] = NON_FINITE

    def _accept_one(self, index: int, vector: np.ndarray, size: int) -> None:
        expected = self._embedder.dimensions
        if size != expected:
            self._errors[index] = (
                f"dimension mismatch: the model returned {size} dimensions for this input, "
                f"the vectorizer expects {expected}"
            )
            return
        vector = np.asarray(vector, dtype=np.float32)
        if not np.isfinite(vector).all():
            self._errors[index] = NON_FINITE
            return
        self._vectors[index] = vector


class _Retries:
    """The in-place retries of one request: how long to wait, and when to give up."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._started = time.monotonic()
        self.attempts = 0  # every try so far
        # only outages count towards the outage budget: 429s between them slow the request
        # down but say nothing about the provider being gone (a storm of both gave up early)
        self.failures = 0

    def throttled(self, exc: ThrottledError) -> None:
        self.attempts += 1
        if time.monotonic() - self._started >= self._embedder.policy.throttle_budget:
            self._give_up(exc)

    def failed(self, exc: TransientError) -> float:
        """Seconds to wait before the next try; raises VectorizerError past the budget."""
        policy = self._embedder.policy
        self.attempts += 1
        self.failures += 1
        remaining = policy.retry_budget - (time.monotonic() - self._started)
        if self.failures >= policy.transient_attempts or remaining <= 0:
            self._give_up(exc)
        wait = backoff_delay(
            self.failures - 1, exc.retry_after, base=policy.base_wait, cap=policy.max_wait
        )
        wait = min(wait, remaining)
        log.info(
            "%s: transient error, retrying in %.2fs: %s",
            self._embedder.provider,
            wait,
            self._embedder.redact(exc.message),
        )
        return wait

    def _give_up(self, exc: TransientError) -> NoReturn:
        elapsed = time.monotonic() - self._started
        raise VectorizerError(
            f"embedding provider unavailable: {self._embedder.redact(exc.message)} "
            f"({self._embedder.provider}: {self.attempts} failed tries in {elapsed:.1f}s)"
        ) from None


def _size(vector: np.ndarray) -> int:
    return int(vector.shape[0]) if vector.ndim == 1 else -1


async def _gather(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run concurrently; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as failures:
        raise _most_relevant(failures) from None


def _most_relevant(group: BaseExceptionGroup[BaseException]) -> BaseException:
    # A configuration problem says more than whatever it caused in sibling requests.
    leaves = list(_leaves(group))
    for leaf in leaves:
        if isinstance(leaf, VectorizerError):
            return leaf
    return leaves[0]


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterable[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
