"""bench/cpu_padding.py runs its whole path on a tiny model (`--tiny`): the DPO stage as
the worker starts it, every batch in one call and in groups of like length, and one JSON
line. Its CPU figures mean something only on the real model, so none is asserted here."""

from __future__ import annotations

import pytest

from tests.conftest import run_tiny_bench

pytestmark = pytest.mark.slow


def test_the_padding_bench_runs_both_ways_to_the_same_loss():
    figures, stdout = run_tiny_bench("cpu_padding.py")
    padded, trimmed = figures["padded"], figures["trimmed"]
    assert padded["cpu_s"] > 0 and trimmed["cpu_s"] > 0
    assert figures["cpu_ratio"] == pytest.approx(
        trimmed["cpu_s"] / padded["cpu_s"], abs=0.001
    )
    assert 0 < figures["padded_share"] < 1
    # One step from the same weights on the same pairs: the same loss, either way.
    assert trimmed["loss"] == pytest.approx(padded["loss"], rel=1e-4)
    assert "padded run 1:" in stdout and "trimmed run 1:" in stdout
