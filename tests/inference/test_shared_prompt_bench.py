"""bench/shared_prompt.py runs its whole path on a tiny model (`--tiny`): the project's
candidates with each prompt read once and with generate repeating it, and one JSON
line. Its CPU figures mean something only on the real model, so none is asserted."""

from __future__ import annotations

import pytest

from tests.conftest import run_tiny_bench

pytestmark = pytest.mark.slow


def test_the_shared_prompt_bench_times_both_ways_and_compares_the_candidates():
    figures, stdout = run_tiny_bench("shared_prompt.py")
    repeated, shared = figures["repeated"]["cpu_s"], figures["shared"]["cpu_s"]
    assert repeated > 0 and shared > 0
    # The ratio is of the unrounded medians; the seconds are printed to 0.01 s, which on
    # the tiny run's few hundredths of a second moves the quotient by several percent.
    low = max(shared - 0.005, 0.0) / (repeated + 0.005)
    high = (shared + 0.005) / max(repeated - 0.005, 1e-9)
    assert low - 0.001 <= figures["cpu_ratio"] <= high + 0.001
    assert figures["candidates"] == 6 * 4
    # The same draws from logits equal to float rounding: (nearly) every candidate.
    assert figures["identical"] >= 0.95 * figures["candidates"]
    assert "repeated run 1:" in stdout and "shared run 1:" in stdout
