"""bench/shared_prompt.py runs its whole path on a tiny model (`--tiny`): the project's
candidates against generate repeating each prompt, or against the project's path
with every row run to the end, and one JSON line. Its CPU figures mean something only on the real model, so none is asserted."""

from __future__ import annotations

import pytest

from tests.conftest import run_tiny_bench

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("baseline", ["repeated", "all-rows"])
def test_the_shared_prompt_bench_times_both_ways_and_compares_the_candidates(baseline):
    figures, stdout = run_tiny_bench("shared_prompt.py", "--baseline", baseline)
    assert figures["baseline"] == baseline
    repeated, shared = figures[baseline]["cpu_s"], figures["project"]["cpu_s"]
    assert repeated > 0 and shared > 0
    # The ratio is of the unrounded medians; the seconds are printed to 0.01 s, which on
    # the tiny run's few hundredths of a second moves the quotient by several percent.
    low = max(shared - 0.005, 0.0) / (repeated + 0.005)
    high = (shared + 0.005) / max(repeated - 0.005, 1e-9)
    assert low - 0.001 <= figures["cpu_ratio"] <= high + 0.001
    assert figures["candidates"] == 6 * 4
    # The same draws from logits equal to float rounding: (nearly) every candidate.
    assert figures["identical"] >= 0.95 * figures["candidates"]
    assert f"{baseline} run 1:" in stdout and "project run 1:" in stdout
