"""glibc malloc thresholds for the worker (vectorizer.allocator), each case in a fresh
interpreter: the settings are process-wide."""

from __future__ import annotations

import os
import subprocess
import sys

# three 16 MB blocks at a time, freed together, twenty times over (after tune() when asked);
# prints whether it tuned, the minor faults the loop took and the resident MB after the loop
# and after release()
_CHURN = """
import os, resource, sys
from vectorizer import allocator
tuned = sys.argv[1] == "tune" and allocator.tune()
def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    blocks = [bytearray(16 << 20) for _ in range(3)]
    del blocks
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
kept = resident_mb()
allocator.release()
print(tuned, faults, kept, resident_mb())
"""


def _churn(mode: str, **env: str) -> tuple[bool, int, int, int]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _CHURN, mode],
        env=environment | env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2]), int(out[3])


def test_tuned_blocks_are_faulted_in_once_and_given_back_on_release() -> None:
    tuned, faults, kept, released = _churn("tune")
    assert tuned
    pages_per_round = 3 * (16 << 20) // os.sysconf("SC_PAGE_SIZE")
    # the first round faults its 48 MB in; the other nineteen reuse them
    assert faults < 2 * pages_per_round
    assert kept >= 48  # held between rounds, as between batches
    assert released < kept - 40


def test_the_default_allocator_faults_the_blocks_in_every_round() -> None:
    # what tune() is for: with glibc's own settings the freed blocks go back to the system
    # each round and come back zeroed
    _, faults, _, _ = _churn("plain")
    pages_per_round = 3 * (16 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert faults > 10 * pages_per_round


def test_a_users_malloc_setting_wins() -> None:
    tuned, faults, _, _ = _churn("tune", MALLOC_TRIM_THRESHOLD_=str(128 << 10))
    assert not tuned
    assert faults > 10 * 3 * (16 << 20) // os.sysconf("SC_PAGE_SIZE")
