"""Embedding providers, chosen by the config's `implementation`.

Provider modules are imported only when a vectorizer uses them: some SDKs take seconds to
import (litellm ~3 s), and `import vectorizer.embedders` must stay cheap. Adding a provider is
one `_PROVIDERS` entry pointing at a class constructed as `cls(config, api_key=, policy=)`.
"""

from __future__ import annotations

import importlib

from vectorizer.config import Embedding
from vectorizer.embedders.base import (
    ApiKeyNotFoundError,
    BadInputError,
    Embedder,
    EmbedResult,
    RequestPolicy,
    redact,
)
from vectorizer.errors import VectorizerError

__all__ = [
    "ApiKeyNotFoundError",
    "BadInputError",
    "EmbedResult",
    "Embedder",
    "RequestPolicy",
    "make_embedder",
    "redact",
]

# implementation -> "module:Class"
_PROVIDERS: dict[str, str] = {
    "openai": "vectorizer.embedders.openai:OpenAIEmbedder",
    "ollama": "vectorizer.embedders.ollama:OllamaEmbedder",
    "voyageai": "vectorizer.embedders.voyageai:VoyageAIEmbedder",
    "litellm": "vectorizer.embedders.litellm:LiteLLMEmbedder",
    "sentence_transformers": (
        "vectorizer.embedders.sentence_transformers:SentenceTransformersEmbedder"
    ),
}


def make_embedder(
    config: Embedding, *, api_key: str | None = None, policy: RequestPolicy | None = None
) -> Embedder:
    """The embedder for `config`; `api_key` overrides the one in `config.api_key_name`."""
    name = config.implementation
    target = _PROVIDERS.get(name)
    if target is None:
        raise VectorizerError(
            f"embedding implementation {name!r} is not available in this worker yet"
        )
    module_name, _, class_name = target.partition(":")
    embedder_class = getattr(importlib.import_module(module_name), class_name)
    embedder: Embedder = embedder_class(config, api_key=api_key, policy=policy)
    return embedder
