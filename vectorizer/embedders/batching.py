"""Packing inputs into embedding requests under a provider's per-request limits.

Pure functions, no I/O: the driver hands in one token count per input (from the provider's own
counter or estimator) and gets back contiguous index ranges, each one request.
"""

from __future__ import annotations

from collections.abc import Sequence


def pack(
    token_counts: Sequence[int], *, max_inputs: int, max_tokens: int | None = None
) -> list[range]:
    """Split inputs greedily into contiguous requests.

    A request closes when the next input would make it hold more than `max_inputs` inputs or
    more than `max_tokens` tokens. An input that alone exceeds `max_tokens` still gets a
    request of its own: whether it is rejected or truncated is the provider's call, and it
    must never take its neighbours down with it.
    """
    _check_limits(max_inputs, max_tokens)
    ranges: list[range] = []
    start = 0
    tokens = 0
    for index, count in enumerate(token_counts):
        if count < 0:
            raise ValueError(f"token count of input {index} is negative: {count}")
        if index > start and _overflows(index - start, tokens + count, max_inputs, max_tokens):
            ranges.append(range(start, index))
            start, tokens = index, 0
        tokens += count
    if start < len(token_counts):
        ranges.append(range(start, len(token_counts)))
    return ranges


def _overflows(held: int, tokens_with_next: int, max_inputs: int, max_tokens: int | None) -> bool:
    """Whether a request already holding `held` inputs can't take the next one."""
    if held >= max_inputs:
        return True
    return max_tokens is not None and tokens_with_next > max_tokens


def _check_limits(max_inputs: int, max_tokens: int | None) -> None:
    if max_inputs < 1:
        raise ValueError(f"max_inputs must be at least 1, got {max_inputs}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1 or None, got {max_tokens}")
