"""The Voyage AI embedder: the real voyageai SDK over real HTTP against tests/fake_voyage.py,
and its tokenizer, from a HuggingFace cache or not at all."""

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
import voyageai.error

from tests.fake_voyage import (
    DEFAULT_REQUEST_TOKEN_CAP,
    TEST_API_KEY,
    FakeVoyage,
    expected_voyage_vector,
    truncate,
)
from tests.fake_voyage import tokens as fake_tokens
from vectorizer.config import VoyageAIEmbedding
from vectorizer.embedders import ApiKeyNotFoundError, EmbedResult, RequestPolicy, make_embedder
from vectorizer.embedders.base import BadInputError, ThrottledError
from vectorizer.embedders.estimates import MAX_BYTES_PER_TOKEN, estimate_tokens
from vectorizer.embedders.hf_tokenizers import forget_tokenizers
from vectorizer.embedders.voyageai import (
    VoyageAIEmbedder,
    classify,
    context_tokens,
    max_tokens_per_request,
)
from vectorizer.errors import TransientError, VectorizerError

REPO_ROOT = Path(__file__).resolve().parent.parent
FAST = RequestPolicy(base_wait=0.01, max_wait=2.0, retry_budget=10.0, request_timeout=10.0)


@pytest.fixture
def fake_voyage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeVoyage]:
    monkeypatch.setenv("VOYAGE_API_KEY", TEST_API_KEY)
    monkeypatch.delenv("VOYAGE_BASE_URL", raising=False)
    # An empty cache and no hub: every test starts without a tokenizer unless it adds one.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    forget_tokenizers()
    with FakeVoyage() as server:
        yield server
    forget_tokenizers()


def config(server: FakeVoyage | None, **fields: Any) -> VoyageAIEmbedding:
    values: dict[str, Any] = {
        "implementation": "voyageai",
        "model": "voyage-3-lite",
        "dimensions": 512,
        "input_type": "document",
        "base_url": server.base_url if server else None,
    }
    values.update(fields)
    return VoyageAIEmbedding.model_validate(values)


def embedder_for(settings: VoyageAIEmbedding, policy: RequestPolicy = FAST) -> VoyageAIEmbedder:
    embedder = make_embedder(settings, policy=policy)
    assert isinstance(embedder, VoyageAIEmbedder)
    return embedder


async def embed(
    settings: VoyageAIEmbedding, texts: Sequence[str], policy: RequestPolicy = FAST
) -> EmbedResult:
    embedder = embedder_for(settings, policy)
    try:
        return await embedder.embed(texts)
    finally:
        await embedder.aclose()


def assert_vectors(
    result: EmbedResult, texts: Sequence[str], dimensions: int = 512, dtype: str | None = None
) -> None:
    assert result.errors == {}
    for text, vector in zip(texts, result.vectors, strict=True):
        assert vector is not None and vector.dtype == np.float32
        np.testing.assert_allclose(vector, expected_voyage_vector(text, dimensions, dtype))


def requests(server: FakeVoyage) -> list[Any]:
    return server.requests_to("/v1/embeddings")


# --- request shape ---------------------------------------------------------------------------


async def test_request_shape(fake_voyage: FakeVoyage) -> None:
    texts = ["alpha", "beta", "gamma"]
    result = await embed(config(fake_voyage, input_type="query"), texts)

    assert_vectors(result, texts)
    assert result.tokens == sum(fake_tokens(text) for text in texts)
    [request] = requests(fake_voyage)
    assert request.body == {
        "input": texts,
        "model": "voyage-3-lite",
        "input_type": "query",
        "truncation": True,
        "output_dtype": None,
        "output_dimension": None,
        "encoding_format": "base64",
    }


async def test_output_dimension_is_sent(fake_voyage: FakeVoyage) -> None:
    settings = config(fake_voyage, model="voyage-3.5", dimensions=256, output_dimension=256)
    result = await embed(settings, ["flexible"])
    assert_vectors(result, ["flexible"], 256)
    assert requests(fake_voyage)[0].body["output_dimension"] == 256


@pytest.mark.parametrize("dtype", ["int8", "uint8", "float"])
async def test_output_dtype_values_are_stored_as_floats(
    fake_voyage: FakeVoyage, dtype: str
) -> None:
    texts = ["one", "two"]
    result = await embed(config(fake_voyage, output_dtype=dtype), texts)
    assert_vectors(result, texts, dtype=dtype)
    assert requests(fake_voyage)[0].body["output_dtype"] == dtype
    if dtype != "float":
        assert all(float(v).is_integer() for v in result.vectors[0])  # type: ignore[union-attr]


async def test_base_url_none_uses_voyage_base_url(
    fake_voyage: FakeVoyage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOYAGE_BASE_URL", fake_voyage.base_url)
    result = await embed(config(None), ["from the environment"])
    assert_vectors(result, ["from the environment"])


async def test_requests_reuse_one_connection(fake_voyage: FakeVoyage) -> None:
    embedder = embedder_for(config(fake_voyage), RequestPolicy(max_concurrent_requests=1))
    embedder.max_inputs_per_request = 1
    result = await embedder.embed([f"text {i}" for i in range(5)])
    await embedder.aclose()
    assert result.errors == {}
    assert len({request.extra["peer"] for request in requests(fake_voyage)}) == 1


# --- keys ------------------------------------------------------------------------------------


async def test_key_from_a_custom_variable(
    fake_voyage: FakeVoyage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOYAGE_API_KEY")
    monkeypatch.setenv("MY_VOYAGE_KEY", TEST_API_KEY)
    result = await embed(config(fake_voyage, api_key_name="MY_VOYAGE_KEY"), ["a"])
    assert result.errors == {}


async def test_missing_key_raises_api_key_not_found(
    fake_voyage: FakeVoyage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOYAGE_API_KEY")
    with pytest.raises(ApiKeyNotFoundError, match="api_key_name=VOYAGE_API_KEY"):
        await embed(config(fake_voyage), ["a"])
    assert requests(fake_voyage) == []


async def test_a_wrong_key_is_a_vectorizer_error_without_the_key(
    fake_voyage: FakeVoyage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "pa-wrong-key-0123456789abcdef"
    monkeypatch.setenv("VOYAGE_API_KEY", wrong)
    with caplog.at_level(logging.DEBUG), pytest.raises(VectorizerError) as raised:
        await embed(config(fake_voyage), ["a", "b"])
    assert str(raised.value) == "voyageai: Provided API key is invalid. (status 401)"
    assert wrong not in caplog.text
    assert len(requests(fake_voyage)) == 1


# --- batching, truncation and tokens ---------------------------------------------------------


def test_per_model_limits() -> None:
    assert max_tokens_per_request("voyage-4-lite") == 1_000_000
    assert max_tokens_per_request("voyage-3-lite") == 1_000_000
    assert max_tokens_per_request("voyage-3.5") == 320_000
    assert max_tokens_per_request("voyage-2") == 320_000
    assert max_tokens_per_request("voyage-3-large") == 120_000
    assert max_tokens_per_request("voyage-code-3") == 120_000
    assert context_tokens("voyage-3.5") == 32_000
    assert context_tokens("voyage-law-2") == 16_000


async def test_many_inputs_respect_the_input_cap(fake_voyage: FakeVoyage) -> None:
    texts = [f"short {i}" for i in range(2500)]
    result = await embed(config(fake_voyage), texts)
    assert result.errors == {}
    assert sorted(len(request.inputs) for request in requests(fake_voyage)) == [500, 1000, 1000]


async def test_large_inputs_respect_the_token_cap(fake_voyage: FakeVoyage) -> None:
    texts = [f"{i:04d}" + "x" * 39_996 for i in range(20)]  # ~13.3k estimated tokens each
    settings = config(fake_voyage, model="voyage-3-large", dimensions=1024)
    result = await embed(settings, texts)

    assert_vectors(result, texts, 1024)
    sent = requests(fake_voyage)
    assert all(request.status == 200 for request in sent)
    assert len(sent) == 3
    for request in sent:
        assert sum(estimate_tokens(len(t)) for t in request.inputs) <= DEFAULT_REQUEST_TOKEN_CAP


async def test_over_long_input_is_truncated_by_voyage(fake_voyage: FakeVoyage) -> None:
    long_text = "word " * 120_000  # 600 kB, far over the 32k-token context
    result = await embed(config(fake_voyage), ["short", long_text])

    assert result.errors == {}
    sent = requests(fake_voyage)[0].inputs[1]
    assert len(sent.encode()) == 32_000 * MAX_BYTES_PER_TOKEN  # only trimmed far beyond it
    assert long_text.startswith(sent)
    stored = result.vectors[1]
    assert stored is not None
    np.testing.assert_allclose(stored, expected_voyage_vector(truncate(long_text), 512))


def write_cached_tokenizer(cache: Path, model: str) -> None:
    """A word-level tokenizer in the HuggingFace cache layout, as `voyageai/<model>`."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "alpha", "beta", "gamma", "delta"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    repo = cache / f"models--voyageai--{model}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    tokenizer.save(str(snapshot / "tokenizer.json"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")


async def test_tokens_are_counted_with_voyages_tokenizer_when_cached(
    fake_voyage: FakeVoyage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_cached_tokenizer(tmp_path / "hub", "voyage-3-lite")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    embedder = embedder_for(config(fake_voyage))
    await embedder.setup()
    assert embedder.tokenizer is not None
    assert embedder.prepare_input("alpha beta gamma") == ("alpha beta gamma", 3)
    # 4 bytes or 40: a word is a token, whatever an estimate would say.
    assert embedder.prepare_input("x" * 40)[1] == 1

    embedder.max_tokens_per_request = 3
    texts = ["alpha beta", "gamma delta", "alpha", "beta gamma delta"]
    result = await embedder.embed(texts)
    assert result.errors == {}
    assert [request.inputs for request in requests(fake_voyage)] == [
        texts[:1],
        texts[1:3],
        texts[3:],
    ]

    embedder.context_tokens = 2  # cut where Voyage would, at the context
    assert embedder.prepare_input("alpha beta gamma delta") == ("alpha beta", 2)
    await embedder.aclose()


async def test_without_a_tokenizer_counts_are_estimated_and_logged_once(
    fake_voyage: FakeVoyage, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            embedder = embedder_for(config(fake_voyage))
            await embedder.setup()
            assert embedder.tokenizer is None
            assert embedder.prepare_input("x" * 30) == ("x" * 30, 10)
    warnings = [r for r in caplog.records if "tokenizer voyageai/voyage-3-lite" in r.message]
    assert len(warnings) == 1
    assert "HF_HUB_OFFLINE" in warnings[0].message


def test_an_unreachable_hub_does_not_hold_up_setup(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    # A dead proxy: any download attempt fails, and retries would take half a minute.
    env.update(
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        HF_HUB_CACHE=str(tmp_path / "hub"),
        VECTORIZER_TOKENIZER_DOWNLOAD_TIMEOUT="1",
        PYTHONPATH=str(REPO_ROOT),
    )
    code = (
        "import asyncio, time\n"
        "from vectorizer.embedders.hf_tokenizers import load_tokenizer\n"
        "started = time.monotonic()\n"
        "print(asyncio.run(load_tokenizer('voyageai/voyage-3-lite')))\n"
        "print(round(time.monotonic() - started))\n"
    )
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    tokenizer, waited = completed.stdout.split()
    assert tokenizer == "None"
    assert int(waited) <= 2
    assert time.monotonic() - started < 20


# --- errors ----------------------------------------------------------------------------------


async def test_429_waits_for_retry_after_and_succeeds(fake_voyage: FakeVoyage) -> None:
    fake_voyage.fail_next(429, retry_after="1")
    started = time.monotonic()
    result = await embed(config(fake_voyage), ["a"])
    assert result.errors == {}
    assert time.monotonic() - started >= 1.0
    assert [request.status for request in requests(fake_voyage)] == [429, 200]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried(fake_voyage: FakeVoyage, status: int) -> None:
    fake_voyage.fail_next(status, count=2)
    result = await embed(config(fake_voyage), ["a"])
    assert result.errors == {}
    assert result.requests == 3


async def test_timeouts_and_resets_are_retried(fake_voyage: FakeVoyage) -> None:
    fake_voyage.stall_next(2.0)
    fake_voyage.drop_next()
    policy = RequestPolicy(base_wait=0.01, retry_budget=10.0, request_timeout=0.3)
    result = await embed(config(fake_voyage), ["slow"], policy)
    assert result.errors == {}
    assert result.requests == 3


async def test_poison_input_is_isolated(fake_voyage: FakeVoyage) -> None:
    texts = [f"text {i}" for i in range(10)]
    texts[3] = "POISON here"
    result = await embed(config(fake_voyage), texts)
    assert list(result.errors) == [3]
    assert result.errors[3] == "voyageai: This input was flagged as invalid. (status 400)"


async def test_an_unsupported_parameter_is_a_vectorizer_error(fake_voyage: FakeVoyage) -> None:
    settings = config(fake_voyage, output_dimension=256, dimensions=256)
    with pytest.raises(VectorizerError, match="output_dimension 256 is not supported"):
        await embed(settings, [f"text {i}" for i in range(50)])
    assert len(requests(fake_voyage)) == 2  # the request, then the canary: no bisection


async def test_dimension_mismatch_is_a_vectorizer_error(fake_voyage: FakeVoyage) -> None:
    with pytest.raises(
        VectorizerError, match="returned 512 dimensions, the vectorizer expects 1024"
    ):
        await embed(config(fake_voyage, dimensions=1024), ["a"])


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (voyageai.error.RateLimitError("slow down", http_status=429), ThrottledError),
        (voyageai.error.AuthenticationError("bad key", http_status=401), VectorizerError),
        (voyageai.error.InvalidRequestError("too many tokens", http_status=400), BadInputError),
        (voyageai.error.MalformedRequestError("bad field", http_status=422), BadInputError),
        (voyageai.error.ServerError("boom", http_status=500), TransientError),
        (voyageai.error.ServiceUnavailableError("busy", http_status=503), TransientError),
        (voyageai.error.Timeout("Request timed out"), TransientError),
        (voyageai.error.APIConnectionError("reset"), TransientError),
        (voyageai.error.APIError("forbidden", http_status=403), VectorizerError),
        (voyageai.error.APIError("gateway", http_status=504), TransientError),
    ],
)
def test_classification(exc: voyageai.error.VoyageError, kind: type[Exception]) -> None:
    assert type(classify(exc, ())) is kind


def test_classified_messages_are_redacted() -> None:
    exc = voyageai.error.AuthenticationError("key pa-secret-123456 is wrong", http_status=401)
    assert "pa-secret" not in str(classify(exc, ("pa-secret-123456",)))
    retry = classify(
        voyageai.error.RateLimitError("x", http_status=429, headers={"retry-after": "7"}), ()
    )
    assert isinstance(retry, ThrottledError) and retry.retry_after == 7.0
