"""Token counting for chunking: the embedding model's own tokenizer and its input limit.

The token-aware chunkers measure chunks in the tokens of the model that embeds them, and every
chunk's metadata records its token count. Which tokenizer that is:

* `tokenizer` named in the chunking config: `cl100k_base` (shipped with the package), `estimate`,
  a path to a `tokenizer.json` (or a directory holding one), or a HuggingFace repository id
  (loaded from the HuggingFace cache as `vectorizer.embedders.hf_tokenizers` does);
* otherwise the model's: cl100k_base for OpenAI's models (also through LiteLLM), the local
  model's own tokenizer for sentence_transformers, Voyage's HuggingFace tokenizer when it can be
  had offline;
* otherwise an estimate of a token per 3 UTF-8 bytes (high for prose, so chunks come out
  smaller than the budget, never larger), logged once per model.

The input limit is the provider's per-input context where the embedders know it (8191 for
OpenAI's models, Voyage's per-model context, the local model's `max_seq_length`, Ollama's
context once the server said it); a budget above it is lowered to it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vectorizer.config import (
    Embedding,
    LiteLLMEmbedding,
    OllamaEmbedding,
    OpenAIEmbedding,
    SentenceTransformersEmbedding,
    VoyageAIEmbedding,
)
from vectorizer.embedders.estimates import estimate_tokens
from vectorizer.errors import VectorizerError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from vectorizer.embedders import Embedder

log = logging.getLogger(__name__)

CL100K = "cl100k_base"
ESTIMATE = "estimate"
# [CLS] and [SEP]: what a BERT-style model adds to every input within its max_seq_length
BERT_SPECIAL_TOKENS = 2

_estimates_logged: set[str] = set()
_estimates_lock = threading.Lock()


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of one tokenizer; `limit` is the model's input limit when known."""

    name: str
    count: Callable[[str], int]
    limit: int | None = None
    exact: bool = True

    def budget(self, wanted: int) -> int:
        """`wanted` tokens, lowered to the model's input limit."""
        if self.limit is not None and wanted > self.limit:
            return self.limit
        return wanted


def cl100k_counter(limit: int | None = None) -> TokenCounter:
    from vectorizer.embedders.tokenizers import cl100k_base

    # Loaded on the first count (cached per process), not here: a worker whose chunks are
    # not token-measured does not wait for it at start.
    def count(text: str) -> int:
        return len(cl100k_base().encode_ordinary(text))

    return TokenCounter(CL100K, count, limit)


def estimate_counter(limit: int | None = None, why: str = "") -> TokenCounter:
    if why:
        with _estimates_lock:
            first = why not in _estimates_logged
            _estimates_logged.add(why)
        if first:
            log.warning(
                "chunking: %s; token counts are estimated at a token per 3 UTF-8 bytes "
                "(chunks come out smaller than the budget, never larger)",
                why,
            )
    return TokenCounter(ESTIMATE, _estimate, limit, exact=False)


def hf_counter(tokenizer: Tokenizer, name: str, limit: int | None = None) -> TokenCounter:
    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return TokenCounter(name, count, limit)


def _estimate(text: str) -> int:
    return estimate_tokens(len(text.encode("utf-8", errors="replace")))


def resolve_counter(
    tokenizer: str | None,
    embedding: Embedding,
    embedder: Embedder | None = None,
    *,
    quiet: bool = False,
) -> TokenCounter:
    """The counter a vectorizer's chunks are measured with (see the module doc).

    Blocks while a HuggingFace tokenizer loads (at most the download time limit): call it from
    a thread in async code.
    """
    limit = input_limit(embedding, embedder)
    if tokenizer is not None:
        return _named_counter(tokenizer, limit)
    return _model_counter(embedding, embedder, limit, quiet)


def input_limit(embedding: Embedding, embedder: Embedder | None = None) -> int | None:
    """Tokens per input the model embeds, where the provider's limit is known."""
    # Provider modules are imported only for their own configs: the Voyage SDK alone takes
    # a second and 25 MB, which an OpenAI vectorizer should not pay.
    from vectorizer.embedders.openai import MAX_INPUT_TOKENS, NATIVE_MODELS

    if isinstance(embedding, OpenAIEmbedding):
        return MAX_INPUT_TOKENS if embedding.model in NATIVE_MODELS else None
    if isinstance(embedding, VoyageAIEmbedding):
        return _voyage_context(embedding.model)
    if isinstance(embedding, LiteLLMEmbedding):
        provider, _, model = embedding.model.partition("/")
        if provider in {"openai", "azure"} and model in NATIVE_MODELS:
            return MAX_INPUT_TOKENS
        return _voyage_context(model) if provider == "voyage" else None
    if isinstance(embedding, SentenceTransformersEmbedding):
        return _local_limit(embedding, embedder)
    if isinstance(embedding, OllamaEmbedding):
        return getattr(embedder, "context_length", None)
    return None


def _voyage_context(model: str) -> int:
    from vectorizer.embedders.voyageai import context_tokens

    return context_tokens(model)


def _named_counter(tokenizer: str, limit: int | None) -> TokenCounter:
    from vectorizer.embedders import hf_tokenizers

    if tokenizer == CL100K:
        return cl100k_counter(limit)
    if tokenizer == ESTIMATE:
        return estimate_counter(limit)
    path = Path(tokenizer).expanduser()
    if path.is_dir():
        path = path / hf_tokenizers.TOKENIZER_FILE
    if path.is_file():
        return hf_counter(hf_tokenizers.tokenizer_from_file(path), tokenizer, limit)
    if tokenizer.count("/") == 1 and not tokenizer.startswith(("/", ".", "~")):
        loaded = hf_tokenizers.load_tokenizer_blocking(tokenizer)
        if loaded is not None:
            return hf_counter(loaded, tokenizer, limit)
        return estimate_counter(limit, f"tokenizer {tokenizer!r} is unavailable")
    raise VectorizerError(
        f"invalid chunking config: tokenizer {tokenizer!r} is neither {CL100K!r}, "
        f"{ESTIMATE!r}, an existing tokenizer.json (or a directory holding one) nor a "
        "HuggingFace repository id (owner/name)",
        step="chunking",
    )


def _model_counter(
    embedding: Embedding, embedder: Embedder | None, limit: int | None, quiet: bool
) -> TokenCounter:
    from vectorizer.embedders.openai import NATIVE_MODELS

    model = embedding.model
    if isinstance(embedding, OpenAIEmbedding) and model in NATIVE_MODELS:
        return cl100k_counter(limit)
    if isinstance(embedding, LiteLLMEmbedding):
        provider, _, name = model.partition("/")
        if provider in {"openai", "azure"} and name in NATIVE_MODELS:
            return cl100k_counter(limit)
        if provider == "voyage":
            return _voyage_counter(f"voyageai/{name}", limit)
    if isinstance(embedding, VoyageAIEmbedding):
        loaded = getattr(embedder, "tokenizer", None)
        if loaded is not None:
            return hf_counter(loaded, f"voyageai/{model}", limit)
        return _voyage_counter(f"voyageai/{model}", limit)
    if isinstance(embedding, SentenceTransformersEmbedding):
        local = _local_tokenizer(embedding)
        if local is not None:
            return hf_counter(local, model, limit)
    # quiet: only chunk_metadata's token counts are estimated, no chunk size depends on it
    why = "" if quiet else f"no tokenizer is known for {embedding.implementation} model {model!r}"
    return estimate_counter(limit, why)


def _voyage_counter(repo_id: str, limit: int | None) -> TokenCounter:
    from vectorizer.embedders import hf_tokenizers

    loaded = hf_tokenizers.load_tokenizer_blocking(repo_id)
    if loaded is not None:
        return hf_counter(loaded, repo_id, limit)
    return estimate_counter(limit, f"the tokenizer of {repo_id} is unavailable")


def _local_tokenizer(embedding: SentenceTransformersEmbedding) -> Tokenizer | None:
    from vectorizer.embedders import hf_tokenizers

    # The file, not the loaded model's tokenizer: that one's truncation settings are the
    # model's to change while it embeds.
    directory = _local_model_dir(embedding.model)
    if directory is not None:
        path = directory / hf_tokenizers.TOKENIZER_FILE
        return hf_tokenizers.tokenizer_from_file(path) if path.is_file() else None
    if embedding.model.count("/") == 1:
        return hf_tokenizers.load_tokenizer_blocking(embedding.model)
    return None


def _local_limit(embedding: SentenceTransformersEmbedding, embedder: Embedder | None) -> int | None:
    loaded = _loaded_local_model(embedder)
    seq_length: Any = loaded.max_seq_length if loaded is not None else None
    if seq_length is None:
        directory = _local_model_dir(embedding.model)
        config = directory / "sentence_bert_config.json" if directory else None
        if config is not None and config.is_file():
            seq_length = json.loads(config.read_text()).get("max_seq_length")
    if isinstance(seq_length, int) and seq_length > BERT_SPECIAL_TOKENS:
        return seq_length - BERT_SPECIAL_TOKENS
    return None


def _loaded_local_model(embedder: Embedder | None) -> Any:
    return getattr(embedder, "local", None)


def _local_model_dir(name: str) -> Path | None:
    from vectorizer.embedders.sentence_transformers import resolve_model

    resolved = Path(resolve_model(name))
    return resolved if resolved.is_dir() else None
