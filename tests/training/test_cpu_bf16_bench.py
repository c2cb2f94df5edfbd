"""bench/cpu_bf16.py runs its whole path on a tiny model (`--tiny`): the DPO stage as
the worker starts it, in float32 and in bf16 on the CPU, and one JSON line. (Its CPU
figures mean something only on the real model.) On a CPU without native bfloat16 the
stage refuses bf16, so the bench measures the matmuls only and says why."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import load_bench, run_tiny_bench

pytestmark = pytest.mark.slow


def test_the_bf16_bench_measures_both_arms_where_the_cpu_has_native_bf16():
    from training.artifacts import native_bf16

    native, device = native_bf16()
    figures, stdout = run_tiny_bench("cpu_bf16.py")

    assert figures["native_bf16"] is native
    assert figures["device"] == device
    assert figures["matmul_gflops"]["float32"] > 0
    assert figures["matmul_gflops"]["bfloat16"] > 0
    if not native:
        assert "no native bfloat16 here" in stdout
        assert "bf16" not in figures and "cpu_ratio" not in figures
        return
    float32, bf16 = figures["float32"], figures["bf16"]
    assert float32["cpu_s"] > 0 and bf16["cpu_s"] > 0
    assert figures["cpu_ratio"] == pytest.approx(
        bf16["cpu_s"] / float32["cpu_s"], abs=0.001
    )
    # One step from the same weights: the first loss is the same to bf16's precision.
    assert bf16["loss"] == pytest.approx(float32["loss"], rel=0.01)


def test_without_native_bf16_the_bench_stops_before_it_converts_the_model(
    monkeypatch, capsys
):
    # Converting SmolLM2 from GGUF takes minutes; a CPU that refuses bf16 true
    # needs only the matmuls, so the bench must not start on the model there.
    bench = load_bench("cpu_bf16", monkeypatch)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was prepared on a CPU without native bf16")

    monkeypatch.setattr(bench, "stage_bench_data", no_model)
    monkeypatch.setattr(
        "training.artifacts.native_bf16",
        lambda: (False, "CPU (AVX2) without AMX or AVX-512 BF16"),
    )
    monkeypatch.setattr(sys, "argv", ["cpu_bf16.py"])

    bench.main()

    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["native_bf16"] is False
    assert figures["device"] == "CPU (AVX2) without AMX or AVX-512 BF16"
    assert "no native bfloat16 here" in out
