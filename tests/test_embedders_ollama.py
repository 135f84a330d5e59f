"""The Ollama embedder: the real ollama SDK over real HTTP against tests/fake_ollama.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import ollama
import pytest

from tests.fake_ollama import FakeOllama, tokens, truncate
from tests.fake_openai import expected_vector
from vectorizer.config import OllamaEmbedding
from vectorizer.embedders import EmbedResult, RequestPolicy, make_embedder
from vectorizer.embedders.base import BadInputError, ThrottledError
from vectorizer.embedders.estimates import MAX_BYTES_PER_TOKEN
from vectorizer.embedders.ollama import (
    DEFAULT_MAX_INPUTS_PER_REQUEST,
    OllamaEmbedder,
    classify,
    context_length,
    display_host,
)
from vectorizer.errors import TransientError, VectorizerError

FAST = RequestPolicy(base_wait=0.01, max_wait=1.0, retry_budget=10.0, request_timeout=10.0)


@pytest.fixture
def fake_ollama(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    for name in (
        "VECTORIZER_OLLAMA_MAX_INPUTS_PER_REQUEST",
        "PGAI_VECTORIZER_OLLAMA_MAX_CHUNKS_PER_BATCH",
        "OLLAMA_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    with FakeOllama() as server:
        server.add_model("tiny", dimensions=8, context_length=64)
        yield server


def config(server: FakeOllama | None, **fields: Any) -> OllamaEmbedding:
    values: dict[str, Any] = {
        "implementation": "ollama",
        "model": "tiny",
        "dimensions": 8,
        "base_url": server.host if server else None,
    }
    values.update(fields)
    return OllamaEmbedding.model_validate(values)


def embedder_for(settings: OllamaEmbedding, policy: RequestPolicy = FAST) -> OllamaEmbedder:
    embedder = make_embedder(settings, policy=policy)
    assert isinstance(embedder, OllamaEmbedder)
    return embedder


async def embed(
    settings: OllamaEmbedding, texts: Sequence[str], policy: RequestPolicy = FAST
) -> EmbedResult:
    embedder = embedder_for(settings, policy)
    try:
        return await embedder.embed(texts)
    finally:
        await embedder.aclose()


def assert_vectors(result: EmbedResult, texts: Sequence[str], dimensions: int = 8) -> None:
    assert result.errors == {}
    for text, vector in zip(texts, result.vectors, strict=True):
        assert vector is not None
        np.testing.assert_allclose(vector, expected_vector(text, dimensions), rtol=1e-6)


def vector(result: EmbedResult, index: int) -> np.ndarray:
    found = result.vectors[index]
    assert found is not None, result.errors
    return found


def embed_requests(server: FakeOllama) -> list[Any]:
    return server.requests_to("/api/embed")


# --- request shape ---------------------------------------------------------------------------


async def test_request_shape(fake_ollama: FakeOllama) -> None:
    texts = ["alpha", "beta", "gamma"]
    settings = config(fake_ollama, options={"num_ctx": 32, "temperature": 0}, keep_alive="10m")
    result = await embed(settings, texts)

    assert_vectors(result, texts)
    assert result.tokens == sum(tokens(text) for text in texts)  # the server's prompt_eval_count
    [request] = embed_requests(fake_ollama)
    assert request.body == {
        "model": "tiny",
        "input": texts,
        "options": {"num_ctx": 32, "temperature": 0},
        "keep_alive": "10m",
    }


async def test_optional_fields_are_omitted(fake_ollama: FakeOllama) -> None:
    await embed(config(fake_ollama), ["x"])
    assert embed_requests(fake_ollama)[0].body == {"model": "tiny", "input": ["x"]}


async def test_base_url_none_uses_ollama_host(
    fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.host)
    result = await embed(config(None), ["from the environment"])
    assert_vectors(result, ["from the environment"])


async def test_the_real_model_dimensions(fake_ollama: FakeOllama) -> None:
    settings = config(fake_ollama, model="nomic-embed-text", dimensions=768)
    result = await embed(settings, ["search_document: hello"])
    assert_vectors(result, ["search_document: hello"], 768)


# --- setup: show, pull, context length ------------------------------------------------------


async def test_a_missing_model_is_pulled_once_at_setup(
    fake_ollama: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    fake_ollama.add_model("remote-model", dimensions=8, context_length=128, pulled=False)
    embedder = embedder_for(config(fake_ollama, model="remote-model"))
    with caplog.at_level(logging.INFO):
        await embedder.setup()
        await embedder.setup()
    result = await embedder.embed(["after the pull"])
    await embedder.aclose()

    assert_vectors(result, ["after the pull"])
    assert [(r.path, r.status) for r in fake_ollama.requests] == [
        ("/api/show", 404),
        ("/api/pull", 200),
        ("/api/show", 200),
        ("/api/embed", 200),
    ]
    pull = fake_ollama.requests_to("/api/pull")[0]
    assert pull.body["model"] == "remote-model"
    assert pull.body["stream"] is True
    assert "is not on" in caplog.text and "pulling it" in caplog.text
    assert "pulling remote-model: success" in caplog.text
    assert embedder.context_length == 128


async def test_a_failed_pull_is_a_clear_vectorizer_error(fake_ollama: FakeOllama) -> None:
    with pytest.raises(VectorizerError) as raised:
        await embed(config(fake_ollama, model="no-such-model"), ["a"])
    message = str(raised.value)
    assert "'no-such-model'" in message
    assert fake_ollama.host in message
    assert "pulling it failed: pull model manifest: file does not exist" in message
    assert embed_requests(fake_ollama) == []


async def test_an_unreachable_server_is_a_vectorizer_error_at_setup() -> None:
    settings = config(None, base_url="http://127.0.0.1:9")
    with pytest.raises(VectorizerError, match=r"cannot reach the server at http://127\.0\.0\.1:9"):
        await embed(settings, ["a"])


async def test_context_length_comes_from_the_server(fake_ollama: FakeOllama) -> None:
    # nomic-embed-text: trained for 2048 tokens, Modelfile num_ctx 8192 -> 2048.
    embedder = embedder_for(config(fake_ollama, model="nomic-embed-text", dimensions=768))
    await embedder.setup()
    assert embedder.context_length == 2048
    await embedder.aclose()
    embedder = embedder_for(
        config(fake_ollama, model="nomic-embed-text", dimensions=768, options={"num_ctx": 512})
    )
    await embedder.setup()
    assert embedder.context_length == 512
    await embedder.aclose()


@pytest.mark.parametrize(
    ("model_info", "parameters", "options", "expected"),
    [
        ({"general.architecture": "bert", "bert.context_length": 512}, "", None, 512),
        ({"general.architecture": "bert", "bert.context_length": 512}, "num_ctx 256", None, 256),
        ({"general.architecture": "bert", "bert.context_length": 512}, "", {"num_ctx": 4096}, 512),
        ({"qwen3.context_length": 32768}, "stop <end>\nnum_ctx 8192", None, 8192),
        ({}, "", {"num_ctx": 1024}, 1024),
        (None, None, None, None),
        ({"general.architecture": "x", "x.context_length": "bogus"}, "", None, None),
    ],
)
def test_context_length_rules(
    model_info: dict[str, Any] | None,
    parameters: str | None,
    options: dict[str, Any] | None,
    expected: int | None,
) -> None:
    assert context_length(model_info, parameters, options) == expected


# --- batching and truncation -----------------------------------------------------------------


async def test_default_inputs_per_request(fake_ollama: FakeOllama) -> None:
    texts = [f"text {i}" for i in range(150)]
    result = await embed(config(fake_ollama), texts)
    assert_vectors(result, texts)
    counts = sorted(len(request.inputs) for request in embed_requests(fake_ollama))
    assert counts == [22, DEFAULT_MAX_INPUTS_PER_REQUEST, DEFAULT_MAX_INPUTS_PER_REQUEST]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"VECTORIZER_OLLAMA_MAX_INPUTS_PER_REQUEST": "7"}, 7),
        ({"PGAI_VECTORIZER_OLLAMA_MAX_CHUNKS_PER_BATCH": "5"}, 5),
        (
            {
                "VECTORIZER_OLLAMA_MAX_INPUTS_PER_REQUEST": "9",
                "PGAI_VECTORIZER_OLLAMA_MAX_CHUNKS_PER_BATCH": "5",
            },
            9,
        ),
        ({"VECTORIZER_OLLAMA_MAX_INPUTS_PER_REQUEST": "lots"}, DEFAULT_MAX_INPUTS_PER_REQUEST),
    ],
)
async def test_inputs_per_request_from_the_environment(
    fake_ollama: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
    expected: int,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    texts = [f"text {i}" for i in range(20)]
    with caplog.at_level(logging.WARNING):
        result = await embed(config(fake_ollama), texts)
    assert_vectors(result, texts)
    assert max(len(request.inputs) for request in embed_requests(fake_ollama)) == min(expected, 20)
    if "lots" in env.values():
        assert "VECTORIZER_OLLAMA_MAX_INPUTS_PER_REQUEST" in caplog.text


async def test_over_long_input_is_truncated_by_the_server(fake_ollama: FakeOllama) -> None:
    long_text = "word " * 20_000  # 100 kB against a 64-token context
    result = await embed(config(fake_ollama), ["short", long_text])

    assert result.errors == {}
    [request] = embed_requests(fake_ollama)
    sent = request.inputs[1]
    # Trimmed on our side only far beyond the context; the server cuts the rest.
    assert len(sent.encode()) == 64 * MAX_BYTES_PER_TOKEN
    assert long_text.startswith(sent)
    np.testing.assert_allclose(vector(result, 1), expected_vector(truncate(long_text, 64), 8))


async def test_inputs_within_the_context_go_whole(fake_ollama: FakeOllama) -> None:
    text = "é" * 400  # 800 bytes: over the context in tokens, under the trim in bytes
    await embed(config(fake_ollama), [text])
    assert embed_requests(fake_ollama)[0].inputs == [text]


async def test_with_truncate_false_an_over_long_input_fails_alone(
    fake_ollama: FakeOllama,
) -> None:
    texts = ["fine one", "x" * 1000, "fine two"]
    result = await embed(config(fake_ollama, truncate=False), texts)

    assert list(result.errors) == [1]
    assert "exceeds the context length" in result.errors[1]
    assert result.errors[1].startswith("ollama: ")
    np.testing.assert_allclose(vector(result, 2), expected_vector("fine two", 8), rtol=1e-6)
    assert all(request.body["truncate"] is False for request in embed_requests(fake_ollama))
    assert embed_requests(fake_ollama)[0].inputs[1] == "x" * 1000  # never trimmed


async def test_unencodable_input_is_a_row_error(fake_ollama: FakeOllama) -> None:
    result = await embed(config(fake_ollama), ["fine", "bad \ud800 surrogate"])
    assert list(result.errors) == [1]
    assert "lone surrogate" in result.errors[1]


# --- error classification --------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried(fake_ollama: FakeOllama, status: int) -> None:
    fake_ollama.fail_next(status, count=2)
    result = await embed(config(fake_ollama), ["a", "b"])
    assert_vectors(result, ["a", "b"])
    assert [r.status for r in embed_requests(fake_ollama)] == [status, status, 200]


async def test_429_pauses_the_limiter_then_retries(fake_ollama: FakeOllama) -> None:
    fake_ollama.fail_next(429)
    started = time.monotonic()
    result = await embed(config(fake_ollama), ["a"])
    assert result.errors == {}
    # The SDK drops response headers, so the limiter's own backoff applies (0.5-1 s first).
    assert time.monotonic() - started >= 0.5
    assert [r.status for r in embed_requests(fake_ollama)] == [429, 200]


async def test_timeouts_and_resets_are_retried(fake_ollama: FakeOllama) -> None:
    fake_ollama.stall_next(2.0)
    fake_ollama.drop_next()
    policy = RequestPolicy(base_wait=0.01, retry_budget=10.0, request_timeout=0.3)
    result = await embed(config(fake_ollama), ["slow"], policy)
    assert_vectors(result, ["slow"])
    assert result.requests == 3


async def test_a_model_gone_after_setup_is_a_vectorizer_error(fake_ollama: FakeOllama) -> None:
    embedder = embedder_for(config(fake_ollama))
    await embedder.setup()
    fake_ollama.models["tiny:latest"].pulled = False
    with pytest.raises(VectorizerError, match=r'ollama: model "tiny" not found.*\(status 404\)'):
        await embedder.embed(["a"])
    await embedder.aclose()


async def test_poison_input_is_isolated(fake_ollama: FakeOllama) -> None:
    texts = [f"text {i}" for i in range(12)]
    texts[5] = "text 5 POISON"
    result = await embed(config(fake_ollama), texts)
    assert list(result.errors) == [5]
    assert sum(vector is not None for vector in result.vectors) == 11


async def test_dimension_mismatch_is_a_vectorizer_error(fake_ollama: FakeOllama) -> None:
    with pytest.raises(VectorizerError, match="returned 768 dimensions, the vectorizer expects 8"):
        await embed(config(fake_ollama, model="nomic-embed-text"), ["a", "b"])


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (400, "invalid input", BadInputError),
        (500, "the input length exceeds the context length", BadInputError),
        (500, "llama runner process has terminated", TransientError),
        (503, "server busy, please try again", TransientError),
        (429, "too many requests", ThrottledError),
        (404, 'model "x" not found, try pulling it first', VectorizerError),
        (401, "unauthorized", VectorizerError),
        (-1, "error inside a stream", VectorizerError),
    ],
)
def test_classification(status: int, error: str, kind: type[Exception]) -> None:
    classified = classify(ollama.ResponseError(error, status))
    assert type(classified) is kind
    assert error in str(classified)


def test_hosts_in_messages_carry_no_credentials() -> None:
    assert display_host("http://user:secret@ollama.internal:11434") == (
        "http://ollama.internal:11434"
    )
    assert display_host("http://127.0.0.1:11434") == "http://127.0.0.1:11434"
    assert display_host("ollama.internal") == "ollama.internal"
