"""bench/cpu_bf16.py runs its whole path on a tiny model (`--tiny`): the DPO stage as
the worker starts it, in float32 and in bf16 on the CPU, and one JSON line. (Its CPU
figures mean something only on the real model.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_bf16_bench_runs_both_arms_and_ends_with_its_json_line():
    result = subprocess.run(
        [sys.executable, "bench/cpu_bf16.py", "--tiny"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    float32, bf16 = figures["float32"], figures["bf16"]
    assert float32["cpu_s"] > 0 and bf16["cpu_s"] > 0
    assert figures["cpu_ratio"] == pytest.approx(
        bf16["cpu_s"] / float32["cpu_s"], abs=0.001
    )
    # One step from the same weights: the first loss is the same to bf16's precision.
    assert bf16["loss"] == pytest.approx(float32["loss"], rel=0.01)
