"""The LiteLLM embedder: the real litellm over real HTTP, routed to the fake OpenAI, Ollama and
Voyage servers (`openai/`, `ollama/`, `voyage/` with `api_base`)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fake_ollama import FakeOllama
from tests.fake_openai import (
    MAX_REQUEST_TOKENS,
    TEST_API_KEY,
    FakeOpenAI,
    estimated_tokens,
    expected_vector,
)
from tests.fake_voyage import TEST_API_KEY as VOYAGE_KEY
from tests.fake_voyage import FakeVoyage, expected_voyage_vector
from tests.fake_voyage import truncate as voyage_truncate
from vectorizer.config import LiteLLMEmbedding
from vectorizer.embedders import ApiKeyNotFoundError, EmbedResult, RequestPolicy, make_embedder
from vectorizer.embedders import litellm as provider
from vectorizer.embedders.base import BadInputError, ThrottledError
from vectorizer.embedders.hf_tokenizers import forget_tokenizers
from vectorizer.embedders.litellm import (
    UNKNOWN_PROVIDER_MAX_INPUTS,
    LiteLLMEmbedder,
    classify,
    provider_headers,
    request_limits,
)
from vectorizer.errors import TransientError, VectorizerError

REPO_ROOT = Path(__file__).resolve().parent.parent
FAST = RequestPolicy(base_wait=0.01, max_wait=2.0, retry_budget=10.0, request_timeout=10.0)
LIMIT_ENV = (
    "VECTORIZER_LITELLM_MAX_INPUTS_PER_REQUEST",
    "PGAI_LITELLM_MAX_CHUNKS_PER_BATCH",
    "VECTORIZER_LITELLM_MAX_TOKENS_PER_REQUEST",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in LIMIT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    forget_tokenizers()
    yield
    forget_tokenizers()


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def fake_voyage(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVoyage]:
    monkeypatch.setenv("VOYAGE_API_KEY", VOYAGE_KEY)
    with FakeVoyage() as server:
        yield server


def config(model: str, dimensions: int, **fields: Any) -> LiteLLMEmbedding:
    return LiteLLMEmbedding.model_validate(
        {"implementation": "litellm", "model": model, "dimensions": dimensions, **fields}
    )


def openai_config(server: FakeOpenAI, **fields: Any) -> LiteLLMEmbedding:
    options = {"api_base": server.base_url, "dimensions": 16} | fields.pop("extra", {})
    return config("openai/text-embedding-3-small", 16, extra_options=options, **fields)


def embedder_for(settings: LiteLLMEmbedding, policy: RequestPolicy = FAST) -> LiteLLMEmbedder:
    embedder = make_embedder(settings, policy=policy)
    assert isinstance(embedder, LiteLLMEmbedder)
    return embedder


async def embed(
    settings: LiteLLMEmbedding, texts: Sequence[str], policy: RequestPolicy = FAST
) -> EmbedResult:
    embedder = embedder_for(settings, policy)
    try:
        return await embedder.embed(texts)
    finally:
        await embedder.aclose()


# --- routes ----------------------------------------------------------------------------------


async def test_openai_route_request_shape(fake_openai: FakeOpenAI) -> None:
    texts = ["alpha", "beta"]
    result = await embed(openai_config(fake_openai, extra={"user": "u-1"}), texts)

    assert result.errors == {}
    for text, vector in zip(texts, result.vectors, strict=True):
        assert vector is not None
        np.testing.assert_allclose(vector, expected_vector(text, 16), rtol=1e-6)
    [request] = fake_openai.requests
    assert request.model == "text-embedding-3-small"
    assert request.inputs == texts
    assert request.dimensions == 16
    assert request.user == "u-1"
    assert request.headers["x-stainless-retry-count"] == "0"
    assert result.tokens == sum(estimated_tokens(text) for text in texts)


async def test_key_from_api_key_name(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_openai.configure(api_key="a-custom-key-value")
    monkeypatch.setenv("MY_LITELLM_KEY", "a-custom-key-value")
    result = await embed(openai_config(fake_openai, api_key_name="MY_LITELLM_KEY"), ["a"])
    assert result.errors == {}


async def test_missing_key_raises_api_key_not_found(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(ApiKeyNotFoundError, match="api_key_name=NO_SUCH_LITELLM_KEY"):
        await embed(openai_config(fake_openai, api_key_name="NO_SUCH_LITELLM_KEY"), ["a"])
    assert fake_openai.requests == []


async def test_voyage_route(fake_voyage: FakeVoyage) -> None:
    settings = config(
        "voyage/voyage-3-lite",
        512,
        api_key_name="VOYAGE_API_KEY",
        extra_options={"api_base": fake_voyage.base_url, "input_type": "document"},
    )
    embedder = embedder_for(settings)
    texts = ["one", "two"]
    result = await embedder.embed(texts)
    await embedder.aclose()

    assert result.errors == {}
    for text, vector in zip(texts, result.vectors, strict=True):
        assert vector is not None
        np.testing.assert_allclose(vector, expected_voyage_vector(text, 512))
    [request] = fake_voyage.requests_to("/v1/embeddings")
    assert request.body["model"] == "voyage-3-lite"
    assert request.body["input_type"] == "document"
    assert (embedder.max_inputs_per_request, embedder.max_tokens_per_request) == (1000, 1_000_000)
    assert embedder.limiter.name.startswith("voyageai@")


async def test_ollama_route(fake_ollama: FakeOllama) -> None:
    settings = config(
        "ollama/all-minilm", 384, extra_options={"api_base": fake_ollama.host, "keep_alive": "1m"}
    )
    result = await embed(settings, ["local text"])
    assert result.errors == {}
    stored = result.vectors[0]
    assert stored is not None
    np.testing.assert_allclose(stored, expected_vector("local text", 384), rtol=1e-6)
    [request] = fake_ollama.requests_to("/api/embed")
    assert request.body["model"] == "all-minilm"
    assert request.body["input"] == ["local text"]


async def test_an_unknown_provider_is_a_vectorizer_error() -> None:
    with pytest.raises(VectorizerError, match="can't tell which provider serves model"):
        await embed(config("no-such-provider/some-model", 8), ["a"])


# --- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("llm_provider", "model", "limits"),
    [
        ("openai", "text-embedding-3-small", (2048, 300_000)),
        ("azure", "my-deployment", (2048, 300_000)),
        ("cohere", "embed-english-v3.0", (96, None)),
        ("bedrock", "amazon.titan-embed-text-v2:0", (96, None)),
        ("mistral", "mistral-embed", (128, 16_000)),
        ("vertex_ai", "text-embedding-005", (250, 20_000)),
        ("gemini", "text-embedding-004", (250, None)),
        ("voyage", "voyage-3.5", (1000, 320_000)),
        ("voyage", "voyage-code-3", (1000, 120_000)),
        ("ollama", "nomic-embed-text", (64, None)),
    ],
)
def test_provider_limits(llm_provider: str, model: str, limits: tuple[int, int | None]) -> None:
    assert request_limits(llm_provider, model) == limits


def test_an_unknown_provider_gets_a_safe_default_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider._warned_providers.discard("together_ai")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert request_limits("together_ai", "m") == (UNKNOWN_PROVIDER_MAX_INPUTS, None)
    warnings = [r.message for r in caplog.records if "together_ai" in r.message]
    assert len(warnings) == 1
    assert "VECTORIZER_LITELLM_MAX_INPUTS_PER_REQUEST" in warnings[0]


@pytest.mark.parametrize(
    ("env", "limits"),
    [
        ({"VECTORIZER_LITELLM_MAX_INPUTS_PER_REQUEST": "10"}, (10, 16_000)),
        ({"PGAI_LITELLM_MAX_CHUNKS_PER_BATCH": "7"}, (7, 16_000)),
        ({"PGAI_LITELLM_MAX_CHUNKS_PER_BATCH": "x"}, (128, 16_000)),
        ({"VECTORIZER_LITELLM_MAX_TOKENS_PER_REQUEST": "5000"}, (128, 5000)),
    ],
)
def test_limits_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], limits: tuple[int, int | None]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert request_limits("mistral", "mistral-embed") == limits


async def test_requests_respect_the_input_cap(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORIZER_LITELLM_MAX_INPUTS_PER_REQUEST", "5")
    texts = [f"text {i}" for i in range(23)]
    result = await embed(openai_config(fake_openai), texts)
    assert result.errors == {}
    assert sorted(request.input_count for request in fake_openai.requests) == [3, 5, 5, 5, 5]


async def test_requests_respect_the_token_cap(fake_openai: FakeOpenAI) -> None:
    texts = [f"{i:04d}" + "x" * 39_996 for i in range(70)]  # ~10k tokens each, 30 fit
    result = await embed(openai_config(fake_openai), texts)
    assert result.errors == {}
    requests = fake_openai.requests
    assert len(requests) == 3
    assert all(request.status == 200 for request in requests)
    assert all(request.tokens <= MAX_REQUEST_TOKENS for request in requests)


async def test_an_over_long_input_to_openai_fails_alone(fake_openai: FakeOpenAI) -> None:
    # OpenAI rejects inputs over its context instead of truncating: that row only.
    texts = ["fine", " ".join(f"word{i}" for i in range(9000)), "fine too"]
    result = await embed(openai_config(fake_openai), texts)
    assert list(result.errors) == [1]
    assert "maximum context length" in result.errors[1]
    assert result.vectors[0] is not None and result.vectors[2] is not None


async def test_an_over_long_input_to_voyage_is_truncated_by_voyage(
    fake_voyage: FakeVoyage,
) -> None:
    long_text = "word " * 40_000  # 200 kB: over the 32k-token context
    settings = config(
        "voyage/voyage-3-lite",
        512,
        api_key_name="VOYAGE_API_KEY",
        extra_options={"api_base": fake_voyage.base_url},
    )
    result = await embed(settings, ["short", long_text])
    assert result.errors == {}
    stored = result.vectors[1]
    assert stored is not None
    np.testing.assert_allclose(stored, expected_voyage_vector(voyage_truncate(long_text), 512))


# --- errors ----------------------------------------------------------------------------------


async def test_429_waits_for_retry_after_without_hidden_retries(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(429, count=2, retry_after_ms="300")
    started = time.monotonic()
    result = await embed(openai_config(fake_openai), ["a"])
    assert result.errors == {}
    assert time.monotonic() - started >= 0.6
    assert [request.status for request in fake_openai.requests] == [429, 429, 200]
    assert {request.headers["x-stainless-retry-count"] for request in fake_openai.requests} == {"0"}


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried(fake_openai: FakeOpenAI, status: int) -> None:
    fake_openai.fail_next(status, count=2)
    result = await embed(openai_config(fake_openai), ["a"])
    assert result.errors == {}
    assert [request.status for request in fake_openai.requests] == [status, status, 200]


async def test_server_errors_from_voyage_are_retried(fake_voyage: FakeVoyage) -> None:
    fake_voyage.fail_next(503)
    settings = config(
        "voyage/voyage-3-lite",
        512,
        api_key_name="VOYAGE_API_KEY",
        extra_options={"api_base": fake_voyage.base_url},
    )
    result = await embed(settings, ["a"])
    assert result.errors == {}
    assert [r.status for r in fake_voyage.requests_to("/v1/embeddings")] == [503, 200]


async def test_a_stalled_request_times_out_and_is_retried(fake_ollama: FakeOllama) -> None:
    fake_ollama.stall_next(5.0)
    policy = RequestPolicy(base_wait=0.01, retry_budget=20.0, request_timeout=0.5)
    settings = config("ollama/all-minilm", 384, extra_options={"api_base": fake_ollama.host})
    started = time.monotonic()
    result = await embed(settings, ["slow"], policy)
    assert result.errors == {}
    assert time.monotonic() - started < 4.0


async def test_a_wrong_key_is_a_vectorizer_error_without_the_key(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "my-very-secret-wrong-value"
    fake_openai.configure(api_key=TEST_API_KEY)
    monkeypatch.setenv("WRONG_KEY_VAR", wrong)
    with caplog.at_level(logging.DEBUG), pytest.raises(VectorizerError) as raised:
        await embed(openai_config(fake_openai, api_key_name="WRONG_KEY_VAR"), ["a", "b"])
    assert "AuthenticationError" in str(raised.value)
    assert wrong not in str(raised.value)
    # LiteLLM's own DEBUG lines echo the provider's error; the worker's log filter masks the
    # key there (it is registered as a secret), and ours never carry it.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("vectorizer")]
    assert not any(wrong in line for line in ours)
    assert len(fake_openai.requests) == 1


async def test_an_unknown_model_is_a_vectorizer_error(fake_ollama: FakeOllama) -> None:
    settings = config("ollama/no-such-model", 8, extra_options={"api_base": fake_ollama.host})
    with pytest.raises(VectorizerError, match="not found"):
        await embed(settings, ["a"])


async def test_poison_input_is_isolated(fake_openai: FakeOpenAI) -> None:
    texts = [f"text {i}" for i in range(8)]
    texts[2] = "POISON"
    result = await embed(openai_config(fake_openai), texts)
    assert list(result.errors) == [2]
    assert "This input was flagged as invalid." in result.errors[2]


def _litellm() -> Any:
    return provider.import_litellm()


@pytest.mark.parametrize(
    ("name", "arguments", "kind"),
    [
        ("RateLimitError", {}, ThrottledError),
        ("Timeout", {}, TransientError),
        ("APIConnectionError", {}, TransientError),
        ("ServiceUnavailableError", {}, TransientError),
        ("InternalServerError", {}, TransientError),
        ("AuthenticationError", {}, VectorizerError),
        ("NotFoundError", {}, VectorizerError),
        ("BadRequestError", {}, BadInputError),
        ("ContextWindowExceededError", {}, BadInputError),
    ],
)
def test_classification(name: str, arguments: dict[str, Any], kind: type[Exception]) -> None:
    exception_class = getattr(_litellm(), name)
    exc = exception_class(message="boom", llm_provider="openai", model="m", **arguments)
    assert type(classify(exc, ())) is kind


def test_generic_api_errors_are_classified_by_status() -> None:
    litellm = _litellm()
    assert type(classify(litellm.APIError(502, "bad gateway", "x", "m"), ())) is TransientError
    assert type(classify(litellm.APIError(403, "forbidden", "x", "m"), ())) is VectorizerError
    assert type(classify(litellm.APIError(400, "bad input", "x", "m"), ())) is BadInputError


async def test_keys_litellm_finds_itself_are_masked_too(
    fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", "ollama-secret-value-123")
    fake_ollama.fail_next(401, message="bad token ollama-secret-value-123")
    settings = config("ollama/all-minilm", 384, extra_options={"api_base": fake_ollama.host})
    with pytest.raises(VectorizerError) as raised:
        await embed(settings, ["a"])
    assert "ollama-secret-value-123" not in str(raised.value)
    assert "bad token ***" in str(raised.value)


def test_provider_headers_lose_litellms_prefix() -> None:
    headers = provider_headers(
        {"llm_provider-X-RateLimit-Remaining-Requests": "9", "content-type": "x"}
    )
    assert headers == {"x-ratelimit-remaining-requests": "9", "content-type": "x"}


def test_retries_are_off_unless_the_user_sets_them(fake_openai: FakeOpenAI) -> None:
    plain = embedder_for(openai_config(fake_openai))
    assert plain._arguments(["x"])["num_retries"] == 0
    assert plain._arguments(["x"])["timeout"] == FAST.request_timeout
    custom = embedder_for(openai_config(fake_openai, extra={"num_retries": 2, "timeout": 5}))
    arguments = custom._arguments(["x"])
    assert (arguments["num_retries"], arguments["timeout"]) == (2, 5)
    assert arguments["api_base"] == fake_openai.base_url


def test_litellm_is_imported_lazily_and_offline() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    code = (
        "import os, sys\n"
        "import vectorizer.embedders.litellm as m\n"
        "print('litellm' in sys.modules)\n"
        "m.import_litellm()\n"
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["False", "True"]
