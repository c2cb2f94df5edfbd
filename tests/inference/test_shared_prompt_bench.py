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
    assert figures["cpu_ratio"] == pytest.approx(shared / repeated, abs=0.01)
    assert figures["candidates"] == 6 * 4
    # The same draws from logits equal to float rounding: (nearly) every candidate.
    assert figures["identical"] >= 0.95 * figures["candidates"]
    assert "repeated run 1:" in stdout and "shared run 1:" in stdout
