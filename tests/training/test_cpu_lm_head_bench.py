"""bench/cpu_lm_head.py runs its whole path on a tiny model (`--tiny`): the DPO stage as
the worker starts it, with TRL's own LM head and with the lean one, and one JSON line.
Its CPU figures mean something only on the real model, so none is asserted here."""

from __future__ import annotations

import pytest

from tests.conftest import run_tiny_bench

pytestmark = pytest.mark.slow


def test_the_lm_head_bench_runs_both_heads_to_the_same_loss():
    figures, stdout = run_tiny_bench("cpu_lm_head.py")
    trl, lean = figures["trl"], figures["lean"]
    assert trl["cpu_s"] > 0 and lean["cpu_s"] > 0
    assert figures["cpu_ratio"] == pytest.approx(
        lean["cpu_s"] / trl["cpu_s"], abs=0.001
    )
    # One step from the same weights on the same pairs: the same loss, either head.
    assert lean["loss"] == pytest.approx(trl["loss"], rel=1e-4)
    assert figures["loss_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert "trl run 1:" in stdout and "lean run 1:" in stdout
