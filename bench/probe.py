"""The CPU probe every bench prints beside its figures.

These machines vary (the same box once ran 4x slower per core on one day than on
another), so each figure is reported with how fast one core was when it was taken.
"""

from __future__ import annotations

import time


def cpu_probe() -> float:
    """Return the CPU seconds one core takes for 5M Python additions (about 0.25 s on
    an idle modern core): how much a contended machine slows every CPU second."""
    start = time.process_time()
    total = 0
    for i in range(5_000_000):
        total += i
    return time.process_time() - start
