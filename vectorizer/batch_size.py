"""How many queued keys one claim takes.

A configured `processing.batch_size` is used as it is. Unset, documents (`loading_uri`) go
one at a time, as in pgai. Rows start at pgai's 50 and then size each claim to about
`TARGET_CHUNKS` chunks, from the chunks per row the executor's last batch produced: a batch
pays a dozen statements and a write transaction whatever its size, so 50 rows of one short
chunk each spend most of the worker's CPU on that, while 50 rows of hundreds of chunks hold
thousands of vectors in memory at once.
"""

from __future__ import annotations

from vectorizer.config import MAX_BATCH_SIZE, UriLoading, Vectorizer

ROWS_START = 50
DOCUMENTS = 1
# ~400 chunks of 1536-d: one embedding request, ~3 MB of answer, the least CPU per chunk
# on the backfill benchmark (bench/backfill.py; 50 rows there are ~210 chunks)
TARGET_CHUNKS = 400
# a claim grows at most this much per batch, so rows that were empty or deleted do not
# make the next claim take a thousand rows of long texts at once
MAX_GROWTH = 2


class BatchSize:
    """One executor's claim size, updated after each batch it runs."""

    def __init__(self, vectorizer: Vectorizer) -> None:
        configured = vectorizer.config.processing.batch_size
        self._adaptive = not configured and not isinstance(vectorizer.config.loading, UriLoading)
        if configured:
            self.rows = configured
        else:
            self.rows = ROWS_START if self._adaptive else DOCUMENTS

    def observe(self, rows: int, chunks: int) -> None:
        """`chunks` came out of `rows` source rows (found and parsed: not deleted ones)."""
        if not self._adaptive or rows == 0:
            return
        wanted = TARGET_CHUNKS * rows // max(chunks, 1)
        self.rows = max(1, min(wanted, self.rows * MAX_GROWTH, MAX_BATCH_SIZE))
