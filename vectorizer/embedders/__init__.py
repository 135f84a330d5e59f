"""Embedding providers, chosen by the config's `implementation`.

Provider modules are imported only when a vectorizer uses them: some SDKs take seconds to
import (litellm ~3 s), and `import vectorizer.embedders` must stay cheap. Adding a provider is
one `PROVIDERS` line: its config class and "module:Class", built as `cls(config, api_key=,
policy=)`.
"""

from __future__ import annotations

from vectorizer import config as configs
from vectorizer.config import Embedding
from vectorizer.embedders.base import (
    ApiKeyNotFoundError,
    BadInputError,
    Embedder,
    EmbedResult,
    RequestPolicy,
    redact,
)
from vectorizer.imports import import_module
from vectorizer.registry import Registry

__all__ = [
    "ApiKeyNotFoundError",
    "BadInputError",
    "EmbedResult",
    "Embedder",
    "RequestPolicy",
    "make_embedder",
    "provider_class",
    "redact",
]

PROVIDERS: Registry[type[Embedder]] = Registry(
    "embedding",
    {
        configs.OpenAIEmbedding: "vectorizer.embedders.openai:OpenAIEmbedder",
        configs.OllamaEmbedding: "vectorizer.embedders.ollama:OllamaEmbedder",
        configs.VoyageAIEmbedding: "vectorizer.embedders.voyageai:VoyageAIEmbedder",
        configs.LiteLLMEmbedding: "vectorizer.embedders.litellm:LiteLLMEmbedder",
        configs.SentenceTransformersEmbedding: (
            "vectorizer.embedders.sentence_transformers:SentenceTransformersEmbedder"
        ),
    },
)


def provider_class(config: Embedding) -> type[Embedder]:
    """The embedder class for `config`, importing its module, its SDK and what the
    SDK would import lazily (`Embedder.lazy_imports`).

    Blocking the first time (an SDK import can take seconds), and called from the event loop's
    thread on purpose: see `vectorizer.imports` for the race a thread would open.
    """
    embedder_class = PROVIDERS.lookup(config)
    for name in embedder_class.lazy_imports:
        import_module(name)
    return embedder_class


def make_embedder(
    config: Embedding, *, api_key: str | None = None, policy: RequestPolicy | None = None
) -> Embedder:
    """The embedder for `config`; `api_key` overrides the one in `config.api_key_name`."""
    return provider_class(config)(config, api_key=api_key, policy=policy)
