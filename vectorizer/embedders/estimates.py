"""Token estimates and byte-bounded cuts, for providers whose tokenizer the worker doesn't have.

An estimate is used for two things only: packing requests under a per-request token cap and
charging the shared rate limiter's token budget. Both are safe when the estimate is high (a
request holds fewer inputs than it could), so estimates here err high: a third of a token per
UTF-8 byte is above what BPE and WordPiece vocabularies produce for prose (about a quarter) and
close to what they produce for code and CJK text. If an estimate is ever low, the provider's
400 is isolated by the driver's bisection, so it costs requests, never rows.
"""

from __future__ import annotations

from vectorizer.embedders.base import BadInputError

ESTIMATED_BYTES_PER_TOKEN = 3
# A cut to `context_tokens * MAX_BYTES_PER_TOKEN` bytes never drops text a provider would have
# kept: real tokens are far shorter. It only keeps megabyte inputs off the wire.
MAX_BYTES_PER_TOKEN = 16


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8; an input that can't be encoded is that input's error."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadInputError("the input is not valid Unicode (it has a lone surrogate)") from None


def estimate_tokens(utf8_bytes: int, bytes_per_token: int = ESTIMATED_BYTES_PER_TOKEN) -> int:
    """A high estimate of the tokens in `utf8_bytes` bytes of text, rounded up."""
    return -(-utf8_bytes // bytes_per_token)


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` that fits in `max_bytes` UTF-8 bytes, whole characters only."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")
