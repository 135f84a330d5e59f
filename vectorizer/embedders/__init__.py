"""Embedding providers, chosen by the config's `implementation`.

Provider modules are imported only when a vectorizer uses them: some SDKs take seconds to
import (litellm ~3 s), and `import vectorizer.embedders` must stay cheap. Adding a provider is
one `_PROVIDERS` entry pointing at a class constructed as `cls(config, api_key=, policy=)`.
"""

from __future__ import annotations

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
from vectorizer.imports import import_module

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


def provider_class(implementation: str) -> type[Embedder]:
    """The embedder class for `implementation`, importing its module, its SDK and what the
    SDK would import lazily (`Embedder.lazy_imports`).

    Blocking the first time (an SDK import can take seconds), and called from the event loop's
    thread on purpose: see `vectorizer.imports` for the race a thread would open.
    """
    target = _PROVIDERS.get(implementation)
    if target is None:
        raise VectorizerError(
            f"embedding implementation {implementation!r} is not available in this worker yet"
        )
    module_name, _, class_name = target.partition(":")
    embedder_class: type[Embedder] = getattr(import_module(module_name), class_name)
    for name in embedder_class.lazy_imports:
        import_module(name)
    return embedder_class


def make_embedder(
    config: Embedding, *, api_key: str | None = None, policy: RequestPolicy | None = None
) -> Embedder:
    """The embedder for `config`; `api_key` overrides the one in `config.api_key_name`."""
    embedder_class = provider_class(config.implementation)
    return embedder_class(config, api_key=api_key, policy=policy)  # type: ignore[call-arg]
