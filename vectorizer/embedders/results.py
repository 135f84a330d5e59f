"""What an embedding call returns and the provider-level error the driver isolates: shared by
`base` (the provider's side) and `driver` (the provider-independent side)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# What `_request` returns: an (n x d) float32 matrix, or n 1-D vectors when a server may hand
# back vectors of different lengths (the driver then charges only the odd ones).
Vectors = np.ndarray | Sequence[np.ndarray]


class BadInputError(Exception):
    """The provider rejected a request in a way one of its inputs may have caused (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class EmbedResult:
    """The outcome of one `Embedder.embed` call, in input order."""

    vectors: list[np.ndarray | None]
    errors: dict[int, str]
    tokens: int
    requests: int
