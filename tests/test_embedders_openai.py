"""The OpenAI embedder over real HTTP against tests/fake_openai.py.

The embedder speaks httpx itself; where it must behave as the openai SDK (error texts, the
error `code`), the SDK installed by the dev extra is the reference it is compared with.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.fake_openai import (
    MAX_INPUTS,
    MAX_REQUEST_TOKENS,
    TEST_API_KEY,
    FakeOpenAI,
    estimated_tokens,
    expected_vector,
)
from vectorizer.config import OllamaEmbedding, OpenAIEmbedding
from vectorizer.embedders import (
    ApiKeyNotFoundError,
    BadInputError,
    EmbedResult,
    RequestPolicy,
    make_embedder,
)
from vectorizer.embedders.openai import (
    DEFAULT_BASE_URL,
    MAX_INPUT_TOKENS,
    _parse_without_base64,
    base_url,
    classify,
    decode_embeddings,
    error_code,
    parse_response,
    status_error,
)
from vectorizer.embedders.ratelimit import ThrottledError
from vectorizer.embedders.tokenizers import cl100k_base
from vectorizer.errors import TransientError, VectorizerError
from vectorizer.version import __version__

REPO_ROOT = Path(__file__).resolve().parent.parent
FAST = RequestPolicy(base_wait=0.01, max_wait=2.0, retry_budget=10.0, request_timeout=10.0)


def config(server: FakeOpenAI | None, **fields: object) -> OpenAIEmbedding:
    values: dict[str, object] = {
        "implementation": "openai",
        "model": "text-embedding-3-small",
        "dimensions": 768,
        "base_url": server.base_url if server else None,
    }
    values.update(fields)
    return OpenAIEmbedding.model_validate(values)


async def embed(
    settings: OpenAIEmbedding,
    texts: Sequence[str],
    *,
    policy: RequestPolicy = FAST,
    max_inputs: int | None = None,
) -> EmbedResult:
    embedder = make_embedder(settings, policy=policy)
    if max_inputs is not None:
        embedder.max_inputs_per_request = max_inputs
    try:
        return await embedder.embed(texts)
    finally:
        await embedder.aclose()


def assert_vectors(result: EmbedResult, texts: Sequence[str], dimensions: int) -> None:
    assert len(result.vectors) == len(texts)
    for text, vector in zip(texts, result.vectors, strict=True):
        assert vector is not None
        assert vector.dtype == np.float32
        np.testing.assert_array_equal(vector, expected_vector(text, dimensions))


# --- request shape ---------------------------------------------------------------------------


async def test_request_shape_for_text_embedding_3(fake_openai: FakeOpenAI) -> None:
    texts = ["alpha", "beta", "gamma"]
    result = await embed(config(fake_openai, user="user-42"), texts)

    assert_vectors(result, texts, 768)
    assert result.errors == {}
    assert result.requests == 1
    assert result.tokens == sum(estimated_tokens(t) for t in texts)
    [request] = fake_openai.requests
    assert request.model == "text-embedding-3-small"
    assert request.inputs == texts
    assert request.dimensions == 768
    assert request.encoding_format == "base64"
    assert request.user == "user-42"
    assert "authorization" not in {name.lower() for name in request.headers}


async def test_answers_are_freed_without_the_cyclic_collector(fake_openai: FakeOpenAI) -> None:
    # httpx links a response and its stream both ways; unlinked, a few MB answer is freed
    # when the request ends, not when the collector (rarely run by the worker) finds it
    embedder = make_embedder(config(fake_openai), policy=FAST)
    try:
        await embedder.embed(["warm up"])
        gc.collect()
        # earlier tests' responses may still be referenced (a kept traceback): not ours
        before = {id(o) for o in gc.get_objects() if type(o) is httpx.Response}
        gc.disable()
        try:
            for _ in range(3):
                assert_vectors(await embedder.embed(["alpha", "beta"]), ["alpha", "beta"], 768)
            left = [
                o for o in gc.get_objects() if type(o) is httpx.Response and id(o) not in before
            ]
        finally:
            gc.enable()
    finally:
        await embedder.aclose()
    assert left == []


async def test_user_is_omitted_when_unset(fake_openai: FakeOpenAI) -> None:
    await embed(config(fake_openai), ["x"])
    assert fake_openai.requests[0].user is None


@pytest.mark.parametrize(
    ("model", "send_dimensions", "sent"),
    [
        ("text-embedding-3-large", None, True),
        ("text-embedding-3-small", False, False),
        ("my-local-model", None, False),
        ("my-local-model", True, True),
        ("text-embedding-ada-002", True, False),
    ],
)
async def test_dimensions_sent_only_where_accepted(
    fake_openai: FakeOpenAI, model: str, send_dimensions: bool | None, sent: bool
) -> None:
    dimensions = 1536 if model == "text-embedding-ada-002" else 1024
    if not sent:
        fake_openai.configure(dimensions_override=dimensions)
    settings = config(
        fake_openai, model=model, dimensions=dimensions, send_dimensions=send_dimensions
    )
    result = await embed(settings, ["hello"])

    assert result.errors == {}
    assert fake_openai.requests[0].dimensions == (dimensions if sent else None)


def test_ada_002_requires_1536_dimensions() -> None:
    with pytest.raises(VectorizerError, match="dimensions must be 1536 for text-embedding-ada-002"):
        make_embedder(config(None, model="text-embedding-ada-002", dimensions=768))


async def test_base_url_none_uses_openai_base_url_env(fake_openai: FakeOpenAI) -> None:
    # The fixture points OPENAI_BASE_URL at the fake, as a pgai user's environment would.
    result = await embed(config(None), ["from the environment"])
    assert result.errors == {}
    assert len(fake_openai.requests) == 1


async def test_config_base_url_wins_over_the_environment(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    # A trailing slash must not double up: the fake serves /v1/embeddings only.
    result = await embed(config(None, base_url=fake_openai.base_url + "/"), ["a"])
    assert result.errors == {}
    assert len(fake_openai.requests) == 1


def test_base_url_defaults_to_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert base_url(None) == DEFAULT_BASE_URL == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://gpu-box:8080/v1")
    assert base_url(None) == "http://gpu-box:8080/v1"
    assert base_url("http://other:1/v1") == "http://other:1/v1"


async def test_headers_name_the_client_organization_and_project(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-test123")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_test456")
    await embed(config(fake_openai), ["a"])

    headers = {name.lower(): value for name, value in fake_openai.requests[0].headers.items()}
    assert headers["openai-organization"] == "org-test123"
    assert headers["openai-project"] == "proj_test456"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"].startswith(f"vectorizer/{__version__} ")


async def test_organization_and_project_headers_absent_when_unset(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_ORG_ID", raising=False)
    monkeypatch.delenv("OPENAI_PROJECT_ID", raising=False)
    await embed(config(fake_openai), ["a"])

    names = {name.lower() for name in fake_openai.requests[0].headers}
    assert "openai-organization" not in names
    assert "openai-project" not in names


async def test_float_lists_are_accepted_when_base64_is_ignored(fake_openai: FakeOpenAI) -> None:
    fake_openai.configure(ignore_encoding_format=True)
    texts = [f"float {i}" for i in range(20)]
    result = await embed(config(fake_openai), texts)
    assert_vectors(result, texts, 768)


# --- batching and truncation -----------------------------------------------------------------


async def test_many_inputs_respect_the_input_cap(fake_openai: FakeOpenAI) -> None:
    texts = [f"short text {i}" for i in range(5000)]
    result = await embed(config(fake_openai, dimensions=64), texts)

    assert result.errors == {}
    assert_vectors(result, texts, 64)
    counts = [request.input_count for request in fake_openai.requests]
    assert sorted(counts) == [904, 2048, 2048]
    assert all(request.status == 200 for request in fake_openai.requests)


async def test_large_inputs_respect_the_token_cap(fake_openai: FakeOpenAI) -> None:
    # 40,000-byte inputs: ~10k estimated tokens each, so at most 30 fit in 300k.
    texts = [f"{i:04d}" + "x" * 39_996 for i in range(70)]
    settings = config(fake_openai, model="my-local-model", dimensions=32, send_dimensions=True)
    result = await embed(settings, texts)

    assert result.errors == {}
    assert_vectors(result, texts, 32)
    requests = fake_openai.requests
    assert all(request.status == 200 for request in requests)
    assert len(requests) == 3
    for request in requests:
        assert request.input_count <= MAX_INPUTS
        assert sum(estimated_tokens(text) for text in request.inputs) <= MAX_REQUEST_TOKENS


async def test_long_input_is_truncated_for_openai_models(
    fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    long_text = " ".join(f"word{i}" for i in range(6000))  # well over 8191 tokens
    full_tokens = len(cl100k_base().encode_ordinary(long_text))
    assert full_tokens > MAX_INPUT_TOKENS

    with caplog.at_level(logging.WARNING):
        result = await embed(config(fake_openai), ["short", long_text])

    assert result.errors == {}
    sent = fake_openai.requests[0].inputs[1]
    assert len(cl100k_base().encode_ordinary(sent)) == MAX_INPUT_TOKENS
    assert long_text.startswith(sent)
    np.testing.assert_array_equal(result.vectors[1], expected_vector(sent, 768))
    assert f"chunk truncated from {full_tokens} to {MAX_INPUT_TOKENS} tokens" in caplog.text


async def test_long_input_is_sent_whole_to_other_models(fake_openai: FakeOpenAI) -> None:
    long_text = " ".join(f"word{i}" for i in range(6000))
    settings = config(fake_openai, model="my-local-model", send_dimensions=True)
    result = await embed(settings, [long_text])

    assert result.errors == {}
    assert fake_openai.requests[0].inputs == [long_text]


@pytest.mark.parametrize("model", ["BAAI/bge-small-en-v1.5", "nomic-embed-text:latest"])
async def test_openai_compatible_servers_get_no_dimensions_and_no_tokenizer(
    fake_openai: FakeOpenAI, model: str
) -> None:
    # llama.cpp, vLLM, TEI, LM Studio: a custom model name behind base_url.
    fake_openai.configure(dimensions_override=384)
    cl100k_base.cache_clear()
    long_text = "token " * 3000  # 18 kB: OpenAI's own models would be truncated
    result = await embed(config(fake_openai, model=model, dimensions=384), ["short", long_text])

    assert result.errors == {}
    [request] = fake_openai.requests
    assert request.model == model
    assert request.dimensions is None
    assert request.inputs == ["short", long_text]
    assert cl100k_base.cache_info().misses == 0


async def test_typical_chunks_never_reach_the_tokenizer(fake_openai: FakeOpenAI) -> None:
    cl100k_base.cache_clear()
    texts = ["é" * 800, "日本語" * 266, "plain " * 130]
    result = await embed(config(fake_openai), texts)

    assert result.errors == {}
    assert cl100k_base.cache_info().misses == 0


async def test_empty_input_is_a_row_error_for_openai_models(fake_openai: FakeOpenAI) -> None:
    result = await embed(config(fake_openai), ["a", "", "b"])

    assert set(result.errors) == {1}
    assert "empty" in result.errors[1]
    assert result.vectors[1] is None
    assert fake_openai.requests[0].inputs == ["a", "b"]


# --- transient failures ----------------------------------------------------------------------


async def test_429_waits_for_retry_after_and_succeeds(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(429, count=2, retry_after_ms="250")
    started = time.monotonic()
    result = await embed(config(fake_openai), ["a", "b"])

    assert time.monotonic() - started >= 0.5
    assert result.errors == {}
    assert result.requests == 3
    assert [request.status for request in fake_openai.requests] == [429, 429, 200]


async def test_retry_after_in_seconds_is_honoured(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(429, count=1, retry_after="1")
    started = time.monotonic()
    result = await embed(config(fake_openai), ["a"])

    assert time.monotonic() - started >= 1.0
    assert result.requests == 2


async def test_500_is_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(500, count=3)
    texts = ["one", "two"]
    result = await embed(config(fake_openai), texts)

    assert_vectors(result, texts, 768)
    assert result.requests == 4


async def test_timeout_is_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.stall_next(3.0)
    policy = RequestPolicy(base_wait=0.01, retry_budget=10.0, request_timeout=0.3)
    result = await embed(config(fake_openai), ["slow"], policy=policy)

    assert result.errors == {}
    assert result.requests == 2


async def test_connection_reset_is_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.drop_next(2)
    result = await embed(config(fake_openai), ["reset me"])

    assert result.errors == {}
    assert result.requests == 3
    assert [request.status for request in fake_openai.requests] == [-1, -1, 200]


async def test_outage_longer_than_the_budget_is_a_vectorizer_error(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.fail_next(503, count=10_000)
    policy = RequestPolicy(base_wait=0.05, max_wait=0.1, retry_budget=0.5)
    started = time.monotonic()
    with pytest.raises(VectorizerError, match=r"embedding provider unavailable: Error code: 503"):
        await embed(config(fake_openai), ["a"], policy=policy)

    assert time.monotonic() - started < 3
    assert len(fake_openai.requests) >= 3


async def test_non_json_error_body_is_the_message_as_the_sdk_has_it(
    fake_openai: FakeOpenAI,
) -> None:
    # A proxy in front of the server answers HTML; the SDK shows that text alone.
    fake_openai.fail_next(502, count=10_000, body="<html>502 Bad Gateway</html>\n")
    policy = RequestPolicy(base_wait=0.05, max_wait=0.1, retry_budget=0.3)
    with pytest.raises(
        VectorizerError, match=r"embedding provider unavailable: <html>502 Bad Gateway</html> \("
    ):
        await embed(config(fake_openai), ["a"], policy=policy)
    assert len(fake_openai.requests) >= 2


async def test_empty_error_body_leaves_the_status(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(404, body="")
    with pytest.raises(VectorizerError) as raised:
        await embed(config(fake_openai), ["a"])
    assert str(raised.value) == "Error code: 404"


async def test_refused_connection_reads_as_the_sdk_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
    policy = RequestPolicy(base_wait=0.05, max_wait=0.1, retry_budget=0.3)
    with pytest.raises(
        VectorizerError, match=r"^embedding provider unavailable: Connection error\. \(openai: "
    ):
        await embed(config(None, base_url="http://127.0.0.1:9/v1"), ["a"], policy=policy)


async def test_timeout_reads_as_the_sdk_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.stall_next(2.0, count=10)
    policy = RequestPolicy(base_wait=0.01, max_wait=0.05, retry_budget=0.5, request_timeout=0.2)
    with pytest.raises(
        VectorizerError, match=r"^embedding provider unavailable: Request timed out\. \(openai: "
    ):
        await embed(config(fake_openai), ["a"], policy=policy)


async def test_insufficient_quota_is_not_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(429, count=5, code="insufficient_quota")
    with pytest.raises(VectorizerError, match="429"):
        await embed(config(fake_openai), ["a"])
    assert len(fake_openai.requests) == 1


# --- configuration errors and secrets --------------------------------------------------------


@pytest.mark.parametrize("key", ["sk-proj-WrongKeyAbCdEf0123456789", "my-very-secret-value"])
async def test_401_is_a_vectorizer_error_without_the_key(
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    key: str,
) -> None:
    fake_openai.configure(api_key=TEST_API_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with caplog.at_level(logging.DEBUG), pytest.raises(VectorizerError) as raised:
        await embed(config(fake_openai), ["a", "b"])

    message = str(raised.value)
    assert message.startswith("Error code: 401 - ")
    assert "Incorrect API key provided" in message
    for text in (message, repr(raised.value), raised.value.reason, caplog.text):
        assert key not in text
        assert key[-8:] not in text
    assert raised.value.__cause__ is None
    assert len(fake_openai.requests) == 1


async def test_key_stays_out_of_errors_and_debug_logs_whatever_fails(
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # caplog sees records before the worker's redacting handler: httpx and HTTP transport
    # debug lines included, so a header dump anywhere would show here.
    key = "a-key-that-is-not-sk-shaped-0123456789"
    monkeypatch.setenv("MY_KEY", key)
    settings = config(fake_openai, api_key_name="MY_KEY")
    policy = RequestPolicy(base_wait=0.01, max_wait=0.05, retry_budget=1.0, request_timeout=0.3)
    fake_openai.drop_next(1)
    fake_openai.stall_next(2.0)
    fake_openai.fail_next(500, count=10_000)
    errors = []
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(VectorizerError) as outage:
            await embed(settings, ["a"], policy=policy)
        errors.append(outage.value)
        fake_openai.reset()
        fake_openai.configure(api_key=TEST_API_KEY)  # ours is now wrong, and echoed back
        with pytest.raises(VectorizerError) as rejected:
            await embed(settings, ["a"], policy=policy)
        errors.append(rejected.value)

    assert "Error code: 500" in str(outage.value)
    assert "Incorrect API key provided" in str(rejected.value)
    # the transport's debug lines (httpcore's with VECTORIZER_HTTP_TRANSPORT=httpcore) were
    # there to be searched
    assert "vectorizer.embedders.http_transport" in caplog.text or "httpcore" in caplog.text
    for text in [caplog.text, *(str(e) for e in errors), *(e.reason for e in errors)]:
        assert key not in text
        assert key[-8:] not in text


async def test_right_key_is_sent_as_bearer_token(fake_openai: FakeOpenAI) -> None:
    fake_openai.configure(api_key=TEST_API_KEY)
    result = await embed(config(fake_openai), ["a"])
    assert result.errors == {}


async def test_key_from_a_custom_variable(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_openai.configure(api_key="custom-key-value")
    monkeypatch.setenv("MY_EMBEDDING_KEY", "custom-key-value")
    result = await embed(config(fake_openai, api_key_name="MY_EMBEDDING_KEY"), ["a"])
    assert result.errors == {}


@pytest.mark.parametrize("value", [None, "", "   "])
async def test_missing_key_raises_api_key_not_found(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("MY_MISSING_KEY", raising=False)
    else:
        monkeypatch.setenv("MY_MISSING_KEY", value)
    with pytest.raises(ApiKeyNotFoundError) as raised:
        await embed(config(fake_openai, api_key_name="MY_MISSING_KEY"), ["a"])

    message = str(raised.value)
    assert "ApiKeyNotFoundError" in message
    assert "api_key_name=MY_MISSING_KEY" in message
    assert "environment variable" in message
    assert isinstance(raised.value, VectorizerError)
    assert fake_openai.requests == []


def test_repr_does_not_show_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = make_embedder(config(None), api_key="sk-secret-in-repr-000000")
    assert "secret" not in repr(embedder)
    assert "text-embedding-3-small" in repr(embedder)


async def test_unknown_model_404_is_a_vectorizer_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next(404, count=1)
    with pytest.raises(VectorizerError, match="Error code: 404"):
        await embed(config(fake_openai), ["a"])


# --- poison inputs and invalid parameters ----------------------------------------------------


async def test_poison_input_is_isolated(fake_openai: FakeOpenAI) -> None:
    texts = [f"text {i}" for i in range(10)]
    texts[6] = "text 6 POISON"
    result = await embed(config(fake_openai), texts)

    assert list(result.errors) == [6]
    assert "This input was flagged as invalid." in result.errors[6]
    assert result.errors[6].startswith("Error code: 400")
    assert result.vectors[6] is None
    good = [i for i in range(10) if i != 6]
    assert_vectors(
        EmbedResult([result.vectors[i] for i in good], {}, 0, 0), [texts[i] for i in good], 768
    )
    # 1 rejected request, 1 canary, then a bisection: far fewer than one request per input.
    assert result.requests == len(fake_openai.requests) <= 10


async def test_several_poison_inputs_share_one_canary(fake_openai: FakeOpenAI) -> None:
    texts = [f"POISON {i}" if i % 7 == 0 else f"fine {i}" for i in range(50)]
    result = await embed(config(fake_openai), texts)

    assert sorted(result.errors) == [i for i in range(50) if i % 7 == 0]
    canaries = [request for request in fake_openai.requests if request.inputs == ["ok"]]
    assert len(canaries) == 1


async def test_invalid_parameter_is_a_vectorizer_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.configure(dimensions_unsupported=frozenset({"my-local-model"}))
    settings = config(fake_openai, model="my-local-model", send_dimensions=True)
    texts = [f"text {i}" for i in range(100)]
    with pytest.raises(VectorizerError, match="does not support specifying dimensions"):
        await embed(settings, texts)
    # The canary settles it: no bisection through 100 inputs.
    assert len(fake_openai.requests) == 2


# --- dimensions ------------------------------------------------------------------------------


async def test_wrong_dimensions_for_every_vector(fake_openai: FakeOpenAI) -> None:
    fake_openai.configure(extra_dimensions=2)
    with pytest.raises(
        VectorizerError,
        match="dimension mismatch: the model returned 770 dimensions, the vectorizer expects 768",
    ):
        await embed(config(fake_openai), ["a", "b", "c"])


async def test_wrong_dimensions_for_some_vectors(fake_openai: FakeOpenAI) -> None:
    fake_openai.configure(extra_dimensions=1, extra_dimensions_marker="ODD")
    texts = ["fine", "ODD one", "fine too"]
    result = await embed(config(fake_openai), texts)

    assert list(result.errors) == [1]
    assert "769 dimensions" in result.errors[1]
    assert result.vectors[1] is None
    np.testing.assert_array_equal(result.vectors[2], expected_vector("fine too", 768))


# --- concurrency -----------------------------------------------------------------------------


async def test_requests_of_one_call_overlap(fake_openai: FakeOpenAI) -> None:
    fake_openai.configure(latency=0.3)
    texts = [f"text {i}" for i in range(80)]
    policy = RequestPolicy(max_concurrent_requests=4, request_timeout=10)
    started = time.monotonic()
    result = await embed(config(fake_openai), texts, policy=policy, max_inputs=10)
    elapsed = time.monotonic() - started

    assert_vectors(result, texts, 768)
    assert len(fake_openai.requests) == 8
    assert fake_openai.max_in_flight == 4
    assert elapsed < 8 * 0.3  # sequential would take 2.4 s; two waves take ~0.6 s


# --- registry, imports, offline tokenizer ----------------------------------------------------


def test_unimplemented_provider_is_a_vectorizer_error() -> None:
    # Every implementation the config accepts has a provider; a config from a newer worker
    # (an implementation this one doesn't know) is the case left.
    settings = OllamaEmbedding.model_construct(
        implementation="from-the-future", model="m", dimensions=8
    )
    with pytest.raises(
        VectorizerError,
        match="embedding implementation 'from-the-future' is not available in this worker",
    ):
        make_embedder(settings)


def _run_python(code: str, env: dict[str, str]) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout.strip()


def test_the_embedder_never_imports_the_openai_sdk(fake_openai: FakeOpenAI) -> None:
    code = (
        "import asyncio, os, sys\n"
        "from vectorizer.config import OpenAIEmbedding\n"
        "from vectorizer.embedders import make_embedder\n"
        "async def main():\n"
        "    settings = OpenAIEmbedding(implementation='openai', model='text-embedding-3-small',"
        " dimensions=8)\n"
        "    embedder = make_embedder(settings)\n"
        "    try:\n"
        "        result = await embedder.embed(['over the wire'])\n"
        "    finally:\n"
        "        await embedder.aclose()\n"
        "    print(len(result.vectors[0]), 'openai' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    env = dict(os.environ, OPENAI_API_KEY=TEST_API_KEY, OPENAI_BASE_URL=fake_openai.base_url)
    assert _run_python(code, env) == "8 False"
    assert len(fake_openai.requests) == 1


def test_importing_the_registry_does_not_import_providers() -> None:
    code = (
        "import sys, vectorizer.embedders; print('openai' in sys.modules, 'litellm' in sys.modules)"
    )
    assert _run_python(code, dict(os.environ)) == "False False"


def test_tokenizer_loads_without_network_or_cache_dir() -> None:
    env = {k: v for k, v in os.environ.items() if "TIKTOKEN" not in k}
    # A dead proxy makes any download attempt fail fast instead of succeeding by accident.
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    code = (
        "from vectorizer.embedders.tokenizers import cl100k_base;"
        "print(cl100k_base().encode('hello world'), cl100k_base().n_vocab)"
    )
    assert _run_python(code, env) == "[15339, 1917] 100277"


def _call_fake(url: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.removesuffix("/v1") + path, data=data)
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


async def test_fake_server_runs_as_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--port", "0", "--api-key", TEST_API_KEY],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        _call_fake(url, "/_control", {"action": "fail", "status": 500, "count": 1})
        result = await embed(config(None, base_url=url), ["over the wire"])

        assert result.requests == 2
        log = _call_fake(url, "/_requests")
        assert [entry["status"] for entry in log["requests"]] == [500, 200]  # type: ignore[attr-defined]
        np.testing.assert_array_equal(result.vectors[0], expected_vector("over the wire", 768))
    finally:
        process.terminate()
        assert process.wait(10) == 0


# --- the SDK's error conventions -------------------------------------------------------------


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/embeddings")
    return httpx.Response(status, content=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            401,
            b'{"error": {"message": "Incorrect API key", "type": "x", "code": "invalid_api_key"}}',
        ),
        (429, b'{"error": {"message": "Quota", "code": "insufficient_quota", "param": null}}'),
        (400, b'{"message": "bare error object", "code": "bad", "n": 1.5, "ok": true}'),
        (400, b'{"error": "a string, not an object"}'),
        (500, b'["a", "list"]'),
        (502, b"  <html>Bad Gateway</html>\n"),
        (404, b""),
        (422, b'{"detail": [{"loc": ["body", "input"], "msg": "field required"}]}'),
        (503, '{"error": {"message": "caf\u00e9 \u2013 down"}}'.encode()),
    ],
)
def test_error_messages_and_codes_match_the_sdk(status: int, body: bytes) -> None:
    import openai

    sdk = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    expected = sdk._make_status_error_from_response(_response(status, body))
    message, parsed = status_error(_response(status, body))
    assert message == str(expected)
    assert error_code(parsed) == expected.code


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadInputError),
        (413, BadInputError),
        (422, BadInputError),
        (401, VectorizerError),
        (403, VectorizerError),
        (404, VectorizerError),
        (408, TransientError),
        (409, TransientError),
        (500, TransientError),
        (504, TransientError),
        (429, ThrottledError),
    ],
)
def test_statuses_map_to_the_driver_kinds(status: int, kind: type[Exception]) -> None:
    body = b'{"error": {"message": "no", "code": "whatever"}}'
    error = classify(_response(status, body, {"retry-after-ms": "1500"}), ())
    assert type(error) is kind
    assert (
        str(error) == f"Error code: {status} - {{'error': {{'message': 'no', 'code': 'whatever'}}}}"
    )
    if isinstance(error, TransientError):
        assert error.retry_after == 1.5


def test_insufficient_quota_is_not_throttling_and_the_key_is_masked() -> None:
    body = b'{"error": {"message": "No quota for key my-secret-42", "code": "insufficient_quota"}}'
    error = classify(_response(429, body), ("my-secret-42",))
    assert type(error) is VectorizerError
    assert "my-secret-42" not in str(error)
    assert "No quota for key ***" in str(error)
    assert str(error).startswith("Error code: 429 - ")


def test_base64_vectors_of_one_length_decode_into_one_matrix() -> None:
    import base64

    rows = np.arange(12, dtype="<f4").reshape(3, 4)
    encoded = [base64.b64encode(row.tobytes()).decode() for row in rows]
    matrix = decode_embeddings(encoded)
    assert isinstance(matrix, np.ndarray) and matrix.dtype == np.float32
    assert np.array_equal(matrix, rows)
    # a server that answers vectors of different lengths (or floats) gets one array each, so
    # the driver can charge only the odd ones
    ragged = decode_embeddings([encoded[0], base64.b64encode(rows[1, :2].tobytes()).decode()])
    assert [len(vector) for vector in ragged] == [4, 2]
    mixed = decode_embeddings([encoded[0], [1.0, 2.0, 3.0, 4.0]])
    assert [vector.tolist() for vector in mixed] == [rows[0].tolist(), [1.0, 2.0, 3.0, 4.0]]


def _answer_bodies() -> dict[str, tuple[bytes, bool]]:
    """Embeddings answers as servers write them, and whether the base64 fast path reads them."""
    import base64

    rows = np.arange(24, dtype="<f4").reshape(3, 8) / 7
    b64 = [base64.b64encode(row.tobytes()).decode() for row in rows]
    usage = {"prompt_tokens": 9, "total_tokens": 9}

    def items(embeddings: list[object], order: list[int]) -> list[dict[str, object]]:
        return [{"object": "embedding", "index": i, "embedding": embeddings[i]} for i in order]

    compact = {"object": "list", "data": items(b64, [0, 1, 2]), "model": "m", "usage": usage}
    return {
        "compact": (orjson.dumps(compact), True),
        "spaced, out of order": (
            json.dumps({**compact, "data": items(b64, [2, 0, 1])}, indent=2).encode(),
            True,
        ),
        # some encoders escape "/" (legal JSON): only a full parse reads such a value right
        "escaped slashes": (orjson.dumps(compact).replace(b"/", b"\\/"), False),
        "float lists": (
            orjson.dumps({**compact, "data": items([r.tolist() for r in rows], [0, 1, 2])}),
            False,
        ),
        "one float list": (
            orjson.dumps({**compact, "data": items([b64[0], b64[1], rows[2].tolist()], [0, 1, 2])}),
            False,
        ),
        "another embedding key": (orjson.dumps({**compact, "embedding": b64[0]}), False),
    }


@pytest.mark.parametrize("name", list(_answer_bodies()))
def test_answers_decode_alike_with_and_without_the_base64_fast_path(name: str) -> None:
    body, fast = _answer_bodies()[name]
    if name == "escaped slashes":
        assert b"\\/" in body  # the premise: these vectors have a "/" in their base64
    rows = np.arange(24, dtype="<f4").reshape(3, 8) / 7
    assert (_parse_without_base64(body) is not None) == fast
    vectors, tokens = parse_response(body)
    assert tokens == 9
    assert np.array_equal(np.asarray(vectors), rows)


def test_a_malformed_answer_is_named_whichever_path_reads_it() -> None:
    body, _ = _answer_bodies()["compact"]
    start = body.index(b'"embedding":"') + len(b'"embedding":"')
    bad_base64 = body[:start] + b"!" + body[start + 1 :]
    for broken in (body[:-1], body.replace(b'"data"', b'"dat"'), bad_base64):
        with pytest.raises(VectorizerError, match="malformed embeddings response"):
            parse_response(broken)
