"""Python's cyclic garbage collector, set for the worker process.

While a batch runs it holds thousands of container objects (source rows, chunk metadata, the
reuse plan), and several batches run at once. With CPython's default threshold (a collection
every 700 net new containers) the collector ran several times per batch, each time scanning
those live objects and promoting them to older generations, whose collections scanned them
again: ~800 collections and ~0.5 s of CPU, 7 % of the worker's, on the 20,000-row backfill
benchmark. Nearly everything a batch allocates is freed by reference counting when the batch
ends; the collector is only needed for cycles, and the worker's hot path makes none (see
`embedders.openai.unlink`).

Only the `vectorizer-worker` command calls `tune`, as with `allocator.tune`.
"""

from __future__ import annotations

import gc

# above a batch's live containers, so a collection runs every few batches, not within each
GEN0_THRESHOLD = 10_000


def tune() -> None:
    """Raises the youngest generation's threshold (a higher one already set is kept)."""
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 and gen0 < GEN0_THRESHOLD:  # 0: collection is off, and stays off
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
