"""bench/gpu_real.py, the GPU check of the real model, runs its whole path on the CPU
(`--tiny`): both DPO runs see the same tokens, generation is measured both ways, and
the script ends with one JSON line. (Its figures mean something only on a GPU.)"""

from __future__ import annotations

import pytest

from tests.conftest import run_tiny_bench

pytestmark = pytest.mark.slow


def test_the_gpu_check_runs_whole_on_the_cpu_and_ends_with_its_json_line():
    figures, _ = run_tiny_bench("gpu_real.py")
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
