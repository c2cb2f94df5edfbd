"""bench/stage_allocator.py runs its whole path on a tiny model (`--tiny`): the stage as
the worker starts it, both arms, one JSON line; and even there the platform's
allocator settings spare the page faults. (Its CPU figures mean something only on
the real model.)"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's tunables"),
]

ROOT = Path(__file__).resolve().parents[2]


def test_the_allocator_bench_runs_both_arms_and_ends_with_its_json_line():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"GLIBC_TUNABLES", "LD_PRELOAD"} and not k.startswith("MALLOC_")
    }
    result = subprocess.run(
        [sys.executable, "bench/stage_allocator.py", "--tiny"],
        cwd=ROOT,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    baseline, ours = figures["baseline"], figures["platform"]
    assert baseline["cpu_s"] > 0 and ours["cpu_s"] > 0
    assert figures["cpu_ratio"] == pytest.approx(
        ours["cpu_s"] / baseline["cpu_s"], abs=0.001
    )
    # TRL's CPU LM head allocated a tile of logits per pass; since the lean head
    # (training/lm_head.py) the tiny stage faults far less either way, and the
    # settings still spare more than half of it (about 69 thousand against 164).
    assert ours["page_faults"] < baseline["page_faults"] / 2
