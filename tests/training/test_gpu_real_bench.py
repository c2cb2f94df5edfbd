"""bench/gpu_real.py, the GPU check of the real model, runs its whole path on the CPU
(`--tiny`): both DPO runs see the same tokens, generation is measured both ways, and
the script ends with one JSON line. (Its figures mean something only on a GPU.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_whole_on_the_cpu_and_ends_with_its_json_line():
    result = subprocess.run(
        [sys.executable, "bench/gpu_real.py", "--tiny"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["device"] == "cpu" and figures["lora"] is True
    assert figures["tokens"] > 0
    for run in ("bare_trl", "platform"):
        assert figures[run]["train_runtime_s"] > 0
        assert figures[run]["tokens_per_s"] == pytest.approx(
            figures["tokens"] / figures[run]["train_runtime_s"], rel=0.01
        )
    generation = figures["generation"]
    assert generation["backend"] == "transformers"  # no vLLM without a GPU
    assert generation["plain_generate_tokens_per_s"] > 0
    assert generation["ratio"] == pytest.approx(
        generation["project_tokens_per_s"] / generation["plain_generate_tokens_per_s"],
        rel=0.01,
    )
