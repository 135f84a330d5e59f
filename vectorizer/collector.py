"""Python's cyclic garbage collector, set for the worker process.

While a batch runs it holds thousands of container objects (source rows, chunk metadata, the
reuse plan), and several batches run at once. With CPython's default threshold (a collection
every 700 net new containers) the collector ran several times per batch, each time scanning
those live objects and promoting them to older generations, whose collections scanned them
again: ~800 collections and ~0.5 s of CPU, 7 % of the worker's, on the 20,000-row backfill
benchmark. Nearly everything a batch allocates is freed by reference counting when the batch
ends; the collector is needed only for reference cycles.

Some provider SDKs leave every answer in a cycle (httpx links a response and its stream both
ways; the ollama SDK's answers, ~1 MB per 100 vectors, wait for the collector). With a higher
threshold those would pile up for longer, so the threshold goes back to the default, for the
rest of the process, as soon as a vectorizer uses an embedder that does not free its answers
itself (`Embedder.frees_answers`: the OpenAI embedder unlinks its responses).

Only the `vectorizer-worker` command calls `tune`, as with `allocator.tune`.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

# above a batch's live containers, so a collection runs every few batches, not within each
GEN0_THRESHOLD = 10_000

_replaced: int | None = None  # the youngest generation's threshold before `tune`


def tune() -> None:
    """Raises the youngest generation's threshold (a higher one already set is kept)."""
    global _replaced
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 and gen0 < GEN0_THRESHOLD:  # 0: collection is off, and stays off
        _replaced = gen0
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def embedder_in_use(frees_answers: bool) -> None:
    """Puts `tune`'s threshold back once an embedder leaves its answers to the collector."""
    global _replaced
    if frees_answers or _replaced is None:
        return
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(_replaced, gen1, gen2)
    _replaced = None
    log.debug("an embedder leaves its answers to the garbage collector: default threshold")
