"""Tokenizers that load offline.

`tiktoken.get_encoding("cl100k_base")` downloads its BPE ranks on first use, which fails on a
machine without network (and tests must never touch the network). The ranks ship inside this
package instead, checked against the hash tiktoken itself pins, and the `tiktoken.Encoding` is
built from them directly, once per process.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources

import tiktoken

CL100K_FILE = "cl100k_base.tiktoken"
# The sha256 tiktoken_ext.openai_public expects for cl100k_base.tiktoken.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

# cl100k_base's pre-tokenisation regex and special tokens, as defined by OpenAI's encoding.
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


@functools.cache
def cl100k_base() -> tiktoken.Encoding:
    """OpenAI's cl100k_base encoding, from the copy bundled with this package."""
    ranks = _load_ranks(_read_bundled(CL100K_FILE, CL100K_SHA256))
    return tiktoken.Encoding(
        name="cl100k_base",
        pat_str=CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=CL100K_SPECIAL_TOKENS,
    )


def _read_bundled(name: str, sha256: str) -> bytes:
    data = (resources.files("vectorizer") / "data" / "tiktoken" / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        # A damaged file would tokenise silently wrong; refuse it instead.
        raise RuntimeError(f"bundled tokenizer file {name} is corrupt (sha256 mismatch)")
    return data


def _load_ranks(data: bytes) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks
