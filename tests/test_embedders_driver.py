"""The provider-independent embedding machinery: redaction, retry timing, policy, the driver.

The driver cases use a small in-test provider whose `_request` computes vectors locally; the
HTTP path is covered against the fake server in test_embedders_openai.py.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from dataclasses import dataclass

import numpy as np
import pytest

from vectorizer.embedders.base import (
    BadInputError,
    Embedder,
    RequestPolicy,
    ThrottledError,
    Vectors,
    parse_retry_after,
    redact,
    resolve_api_key,
)
from vectorizer.embedders.driver import backoff_delay
from vectorizer.errors import TransientError, VectorizerError

# --- redact ----------------------------------------------------------------------------------


def test_redact_masks_secrets_wherever_they_appear() -> None:
    text = "key=hunter2-long-secret; again hunter2-long-secret."
    assert redact(text, ["hunter2-long-secret"]) == "key=***; again ***."


def test_redact_masks_openai_style_keys_even_unknown_ones() -> None:
    text = "Incorrect API key provided: sk-proj-AbCd1234EfGh5678. Another: sk-abc**********wxyz"
    redacted = redact(text, [])
    assert "AbCd1234" not in redacted
    assert "wxyz" not in redacted
    assert redacted.startswith("Incorrect API key provided: sk-***")


def test_redact_masks_partly_masked_keys() -> None:
    assert redact("provided: abcd********wxyz.", []) == "provided: ***."


def test_redact_prefers_the_longest_secret() -> None:
    assert redact("token abcdef", ["abc", "abcdef"]) == "token ***"


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "Error code: 400 - {'error': {'message': 'bad input', 'param': None}}"
    assert redact(text, ["", "unrelated-secret"]) == text


# --- retry-after and backoff -----------------------------------------------------------------


def test_retry_after_ms_wins() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "7"}) == 0.25


def test_retry_after_seconds_and_fractions() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after({"retry-after": when}) or 0) <= 31


@pytest.mark.parametrize("value", ["", "soon", "-3", "nan"])
def test_retry_after_garbage_is_ignored(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) is None


def test_retry_after_absent() -> None:
    assert parse_retry_after({}) is None


def test_backoff_honours_retry_after_up_to_the_cap() -> None:
    assert backoff_delay(0, 3.0, base=1, cap=60) == 3.0
    assert backoff_delay(5, 600.0, base=1, cap=60) == 60.0
    assert backoff_delay(0, -1.0, base=1, cap=60) == 0.0


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(10.0, 0.5 * 2**attempt)
        waits = [backoff_delay(attempt, None, base=0.5, cap=10, rng=rng) for _ in range(200)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.8  # spread over the whole range, not a fixed step
        assert min(waits) < ceiling * 0.2


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert 0 <= backoff_delay(10_000, None, base=1, cap=60) <= 60


# --- policy from the environment -------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = RequestPolicy.from_env({})
    assert (policy.max_concurrent_requests, policy.retry_budget, policy.max_wait) == (4, 30, 60)
    assert (policy.transient_attempts, policy.throttle_budget) == (5, 300)


def test_policy_reads_the_environment() -> None:
    policy = RequestPolicy.from_env(
        {
            "VECTORIZER_MAX_CONCURRENT_REQUESTS": "9",
            "VECTORIZER_TRANSIENT_RETRY_BUDGET": "12.5",
            "VECTORIZER_REQUEST_TIMEOUT": "30",
        }
    )
    assert policy.max_concurrent_requests == 9
    assert policy.retry_budget == 12.5
    assert policy.request_timeout == 30


@pytest.mark.parametrize("value", ["zero", "0", "-2", "inf"])
def test_policy_ignores_bad_values_with_a_warning(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        policy = RequestPolicy.from_env({"VECTORIZER_TRANSIENT_RETRY_BUDGET": value})
    assert policy.retry_budget == RequestPolicy().retry_budget
    assert "VECTORIZER_TRANSIENT_RETRY_BUDGET" in caplog.text


def test_resolve_api_key_prefers_the_given_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_KEY", "from-env")
    assert resolve_api_key("SOME_KEY") == "from-env"
    assert resolve_api_key("SOME_KEY", "given") == "given"


# --- the driver, through an in-test provider -------------------------------------------------


def vector_for(text: str, dimensions: int) -> np.ndarray:
    return np.full(dimensions, float(len(text)), dtype=np.float32)


@dataclass(frozen=True)
class LocalModel:
    model: str
    dimensions: int


class LocalEmbedder(Embedder):
    """Embeds locally; behaviours are switched by markers in the input text."""

    provider = "local"

    def __init__(self, dimensions: int = 4, **policy: float) -> None:
        defaults = {"base_wait": 0.001, "max_wait": 0.01, "retry_budget": 1.0}
        super().__init__(
            LocalModel("local", dimensions), policy=RequestPolicy(**(defaults | policy))
        )
        self.calls: list[list[str]] = []
        self.flaky = 0
        self.canary_rejected = False
        self._secrets = ("local-secret-value",)

    def prepare_input(self, text: str) -> tuple[str, int]:
        if "TOO LONG" in text:
            raise BadInputError("input too long for local-secret-value")
        return text.upper(), len(text)

    async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
        self.calls.append(texts)
        if self.flaky:
            self.flaky -= 1
            raise TransientError("busy", retry_after=0.001)
        if any("BAD" in text for text in texts) or (self.canary_rejected and "OK" in texts):
            raise BadInputError("rejected by local-secret-value")
        vectors = [self._vector(text) for text in texts]
        return vectors, sum(len(text) for text in texts)

    def _vector(self, text: str) -> np.ndarray:
        if "NAN" in text:
            return np.full(self.dimensions, np.nan, dtype=np.float32)
        if "WIDE" in text:
            return vector_for(text, self.dimensions + 3)
        return vector_for(text, self.dimensions)


async def test_results_come_back_in_input_order_across_requests() -> None:
    embedder = LocalEmbedder()
    embedder.max_inputs_per_request = 3
    texts = ["a" * n for n in range(1, 12)]
    result = await embedder.embed(texts)

    assert len(embedder.calls) == 4
    assert result.errors == {}
    for text, vector in zip(texts, result.vectors, strict=True):
        np.testing.assert_array_equal(vector, vector_for(text, 4))
    assert result.tokens == sum(len(text) for text in texts)
    assert result.requests == 4


async def test_sent_text_is_the_prepared_text_and_packing_uses_its_count() -> None:
    embedder = LocalEmbedder()
    embedder.max_tokens_per_request = 5
    await embedder.embed(["abc", "de", "fgh"])
    assert embedder.calls == [["ABC", "DE"], ["FGH"]]


async def test_rejected_at_prepare_time_is_a_row_error_without_a_request() -> None:
    embedder = LocalEmbedder()
    result = await embedder.embed(["fine", "TOO LONG here", "also fine"])

    assert list(result.errors) == [1]
    assert result.errors[1] == "input too long for ***"
    assert embedder.calls == [["FINE", "ALSO FINE"]]


async def test_non_text_input_is_a_row_error() -> None:
    result = await LocalEmbedder().embed(["fine", None])  # type: ignore[list-item]
    assert result.errors == {1: "the input is NoneType, not text"}


async def test_bisection_finds_each_poison_input() -> None:
    embedder = LocalEmbedder()
    texts = [f"text {i}" for i in range(32)]
    for index in (0, 13, 31):
        texts[index] = f"BAD {index}"
    result = await embedder.embed(texts)

    assert sorted(result.errors) == [0, 13, 31]
    assert all(message == "rejected by ***" for message in result.errors.values())
    assert sum(vector is not None for vector in result.vectors) == 29
    # One canary for the whole call, whatever the number of poison inputs.
    assert embedder.calls.count(["OK"]) == 1
    assert result.requests == len(embedder.calls) < 32


async def test_rejected_canary_means_the_configuration_is_at_fault() -> None:
    embedder = LocalEmbedder()
    embedder.canary_rejected = True
    with pytest.raises(VectorizerError, match=r"^rejected by \*\*\*$"):
        await embedder.embed(["BAD", "fine", "fine"])
    assert len(embedder.calls) == 2


async def test_transient_failures_are_retried_without_charging_rows() -> None:
    embedder = LocalEmbedder()
    embedder.flaky = 3
    result = await embedder.embed(["a", "b"])

    assert result.errors == {}
    assert result.requests == 4


async def test_transient_failures_past_the_budget_raise() -> None:
    embedder = LocalEmbedder(retry_budget=0.05)
    embedder.flaky = 10**6
    with pytest.raises(VectorizerError, match=r"^embedding provider unavailable: busy \("):
        await embedder.embed(["a"])


async def test_429s_between_outages_do_not_use_up_the_outage_tries() -> None:
    """4 outages (one short of the 5 tries) with 429s in between still succeed: a storm of
    both used to give up after 5 tries of any kind."""

    class Stormy(LocalEmbedder):
        script = ["429", "500", "429", "500", "429", "500", "429", "500", "429"]

        async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
            if self.script:
                kind = self.script.pop(0)
                self.calls.append(texts)
                if kind == "429":
                    raise ThrottledError("slow down", retry_after=0.001)
                raise TransientError("busy", retry_after=0.001)
            return await super()._request(texts)

    embedder = Stormy(retry_budget=30.0)
    result = await embedder.embed(["a"])
    assert result.errors == {}
    assert len(embedder.calls) == 10


async def test_some_wrong_dimensions_are_row_errors() -> None:
    result = await LocalEmbedder().embed(["fine", "WIDE", "fine"])
    assert list(result.errors) == [1]
    assert "returned 7 dimensions for this input, the vectorizer expects 4" in result.errors[1]


async def test_all_wrong_dimensions_raise() -> None:
    with pytest.raises(VectorizerError, match="the model returned 7 dimensions"):
        await LocalEmbedder().embed(["WIDE", "WIDE too"])


async def test_non_finite_vectors_are_row_errors() -> None:
    result = await LocalEmbedder().embed(["fine", "NAN"])
    assert list(result.errors) == [1]
    assert "non-finite" in result.errors[1]
    assert result.vectors[0] is not None


async def test_non_finite_rows_of_a_matrix_are_row_errors() -> None:
    class MatrixEmbedder(LocalEmbedder):
        async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
            vectors, tokens = await super()._request(texts)
            return np.vstack(vectors), tokens  # as providers answering base64 do

    result = await MatrixEmbedder().embed(["fine", "NAN", "fine too"])
    assert list(result.errors) == [1]
    assert "non-finite" in result.errors[1]
    assert result.vectors[1] is None
    assert result.vectors[2] is not None and result.vectors[2].shape == (4,)


async def test_wrong_number_of_vectors_raises() -> None:
    class ShortEmbedder(LocalEmbedder):
        async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
            return [vector_for(texts[0], 4)], 0

    with pytest.raises(VectorizerError, match="returned 1 embeddings for 2 inputs"):
        await ShortEmbedder().embed(["a", "b"])


async def test_a_matrix_result_is_accepted() -> None:
    class MatrixEmbedder(LocalEmbedder):
        async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
            return np.ones((len(texts), 4), dtype=np.float64), 1

    result = await MatrixEmbedder().embed(["a", "b"])
    assert all(v is not None and v.dtype == np.float32 for v in result.vectors)


async def test_empty_call_makes_no_request() -> None:
    embedder = LocalEmbedder()
    result = await embedder.embed([])
    assert (result.vectors, result.errors, result.requests) == ([], {}, 0)
    assert embedder.calls == []


async def test_concurrency_is_bounded() -> None:
    class SlowEmbedder(LocalEmbedder):
        in_flight = 0
        peak = 0

        async def _request(self, texts: list[str]) -> tuple[Vectors, int]:
            SlowEmbedder.in_flight += 1
            SlowEmbedder.peak = max(SlowEmbedder.peak, SlowEmbedder.in_flight)
            await asyncio.sleep(0.02)
            SlowEmbedder.in_flight -= 1
            return [vector_for(text, 4) for text in texts], 0

    embedder = SlowEmbedder(max_concurrent_requests=3)
    embedder.max_inputs_per_request = 1
    result = await embedder.embed([f"t{i}" for i in range(12)])
    assert result.errors == {}
    assert SlowEmbedder.peak == 3
