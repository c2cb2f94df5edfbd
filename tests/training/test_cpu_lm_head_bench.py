"""bench/cpu_lm_head.py runs its whole path on a tiny model (`--tiny`): the DPO stage as
the worker starts it, with TRL's own LM head and with the lean one, and one JSON line.
Its CPU figures mean something only on the real model, so none is asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_lm_head_bench_runs_both_heads_to_the_same_loss():
    result = subprocess.run(
        [sys.executable, "bench/cpu_lm_head.py", "--tiny"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    trl, lean = figures["trl"], figures["lean"]
    assert trl["cpu_s"] > 0 and lean["cpu_s"] > 0
    assert figures["cpu_ratio"] == pytest.approx(
        lean["cpu_s"] / trl["cpu_s"], abs=0.001
    )
    # One step from the same weights on the same pairs: the same loss, either head.
    assert lean["loss"] == pytest.approx(trl["loss"], rel=1e-4)
    assert figures["loss_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert "trl run 1:" in result.stdout and "lean run 1:" in result.stdout
