"""Pydantic models of a vectorizer's jsonb config (`ai.vectorizer.config`) and catalog row.

One class per `implementation`; each stage's union is discriminated on that key. Unknown keys
(`config_type`, `job_id`, ...) are ignored so configs written by pgai or by newer versions of
this project still load.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- loading ---------------------------------------------------------------------------------


class ColumnLoading(_Model):
    implementation: Literal["column"]
    column_name: str
    retries: int = Field(default=6, ge=0)


class UriLoading(_Model):
    implementation: Literal["uri"]
    column_name: str
    retries: int = Field(default=6, ge=0)
    aws_role_arn: str | None = None


Loading = Annotated[ColumnLoading | UriLoading, Field(discriminator="implementation")]


# --- parsing ---------------------------------------------------------------------------------


class AutoParsing(_Model):
    implementation: Literal["auto"]


class NoParsing(_Model):
    implementation: Literal["none"]


class PyMuPDFParsing(_Model):
    implementation: Literal["pymupdf"]


class DoclingParsing(_Model):
    implementation: Literal["docling"]


Parsing = Annotated[
    AutoParsing | NoParsing | PyMuPDFParsing | DoclingParsing,
    Field(discriminator="implementation"),
]


# --- chunking --------------------------------------------------------------------------------


class NoChunking(_Model):
    implementation: Literal["none"]


class CharacterTextSplitter(_Model):
    implementation: Literal["character_text_splitter"]
    chunk_size: int = 800
    chunk_overlap: int = 400
    separator: str = "\n\n"
    is_separator_regex: bool = False


class RecursiveCharacterTextSplitter(_Model):
    implementation: Literal["recursive_character_text_splitter"]
    chunk_size: int = 800
    chunk_overlap: int = 400
    separators: list[str] = Field(default_factory=lambda: ["\n\n", "\n", ".", "?", "!", " ", ""])
    is_separator_regex: bool = False


RECURSIVE_SEPARATORS = ["\n\n", "\n", ".", "?", "!", " ", ""]


class _TokenBudget(_Model):
    chunk_tokens: int = Field(default=512, ge=1)
    overlap_tokens: int = Field(default=64, ge=0)
    # None: the embedding model's own tokenizer (see vectorizer/stages/token_counting.py)
    tokenizer: str | None = None

    @model_validator(mode="after")
    def _overlap_below_budget(self) -> _TokenBudget:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be smaller than chunk_tokens "
                f"({self.chunk_tokens})"
            )
        return self


class RecursiveTokenSplitter(_TokenBudget):
    implementation: Literal["recursive_token_splitter"]
    separators: list[str] = Field(default_factory=lambda: list(RECURSIVE_SEPARATORS))


class MarkdownSplitter(_TokenBudget):
    implementation: Literal["markdown"]
    heading_levels: int = Field(default=3, ge=1, le=6)


Chunking = Annotated[
    NoChunking
    | CharacterTextSplitter
    | RecursiveCharacterTextSplitter
    | RecursiveTokenSplitter
    | MarkdownSplitter,
    Field(discriminator="implementation"),
]


# --- formatting ------------------------------------------------------------------------------


class PythonTemplate(_Model):
    implementation: Literal["python_template"]
    template: str = "$chunk"


class ChunkValue(_Model):
    implementation: Literal["chunk_value"]


Formatting = Annotated[PythonTemplate | ChunkValue, Field(discriminator="implementation")]


# --- embedding -------------------------------------------------------------------------------


class _EmbeddingModel(_Model):
    """What every provider's config has. Each subclass narrows `implementation` to its own
    Literal (which keeps the field first: dumps and hashes keep their order)."""

    implementation: str
    model: str
    dimensions: int


class OpenAIEmbedding(_EmbeddingModel):
    implementation: Literal["openai"]
    user: str | None = None
    api_key_name: str = "OPENAI_API_KEY"
    base_url: str | None = None
    # None: send `dimensions` only to models known to accept it (text-embedding-3-*).
    send_dimensions: bool | None = None


class OllamaEmbedding(_EmbeddingModel):
    implementation: Literal["ollama"]
    base_url: str | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | None = None
    # None: Ollama's default (true, the server cuts over-long inputs to the context length);
    # false makes an over-long input a row error instead.
    truncate: bool | None = None


class VoyageAIEmbedding(_EmbeddingModel):
    implementation: Literal["voyageai"]
    input_type: Literal["document", "query"] | None = None
    output_dimension: int | None = None
    output_dtype: Literal["float", "int8", "uint8"] | None = None
    api_key_name: str = "VOYAGE_API_KEY"
    base_url: str | None = None


class LiteLLMEmbedding(_EmbeddingModel):
    implementation: Literal["litellm"]
    api_key_name: str | None = None
    extra_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("extra_options", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class SentenceTransformersEmbedding(_EmbeddingModel):
    implementation: Literal["sentence_transformers"]
    device: str | None = None
    batch_size: int = 32
    normalize: bool = True


Embedding = Annotated[
    OpenAIEmbedding
    | OllamaEmbedding
    | VoyageAIEmbedding
    | LiteLLMEmbedding
    | SentenceTransformersEmbedding,
    Field(discriminator="implementation"),
]


# --- processing, destination, indexing, scheduling -------------------------------------------

MAX_CONCURRENCY = 50  # agreed with ai._validate_processing
MAX_BATCH_SIZE = 2048


class Processing(_Model):
    implementation: Literal["default"] = "default"
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH_SIZE)
    concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)


class TableDestination(_Model):
    implementation: Literal["table"]
    target_schema: str
    target_table: str
    view_schema: str | None = None
    view_name: str | None = None


class ColumnDestination(_Model):
    implementation: Literal["column"]
    embedding_column: str
    # "mean": one vector per row, the token-weighted, L2-normalised mean of its chunks' vectors
    aggregate: Literal["mean"] | None = None


Destination = Annotated[TableDestination | ColumnDestination, Field(discriminator="implementation")]


class OpaqueStage(_Model):
    """Indexing and scheduling: the worker only reads their implementation."""

    model_config = ConfigDict(extra="allow", frozen=True)
    implementation: str


class Config(_Model):
    version: str
    loading: Loading
    parsing: Parsing = AutoParsing(implementation="auto")
    embedding: Embedding
    chunking: Chunking
    formatting: Formatting = PythonTemplate(implementation="python_template")
    processing: Processing = Processing()
    destination: Destination
    indexing: OpaqueStage | None = None
    scheduling: OpaqueStage | None = None


# --- the catalog row -------------------------------------------------------------------------


class PkColumn(_Model):
    attname: str
    pknum: int
    attnum: int
    typname: str = ""


class Vectorizer(_Model):
    """A row of ai.vectorizer, validated."""

    id: int
    name: str
    source_schema: str
    source_table: str
    source_pk: list[PkColumn]
    queue_schema: str
    queue_table: str
    queue_failed_table: str
    disabled: bool = False
    config: Config
    # ai._vectorizer_content_hash(config) when loaded: what a batch checks before it writes
    content_hash: str | None = None
    # the config version whose shadow store the destination points at (ai.alter_vectorizer)
    shadow_version: int | None = None

    @model_validator(mode="after")
    def _pk_in_table_order(self) -> Vectorizer:
        ordered = sorted(self.source_pk, key=lambda column: column.attnum)
        object.__setattr__(self, "source_pk", ordered)
        return self

    @property
    def pk_names(self) -> list[str]:
        return [column.attname for column in self.source_pk]
