"""Batched vs one-prompt-at-a-time candidate generation on the CPU (target: >= 5x).

Same model, prompts and sampling controls in both arms; the ratio of candidates per
second is measured in one run, so machine load affects both alike. Uses the demo
SFT model when given (--model var/models/demo-sft), else a randomly initialised
model of the demo size with a tokenizer trained on the demo corpus.

    .venv/bin/python bench/generate.py [--model PATH] [--prompts 32] [--k 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="", help="A model folder (default: random demo-size model)."
    )
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    import torch

    from demo.policies import SIZES, init_model, train_tokenizer
    from demo.world import make_prompts, pretraining_corpus
    from inference.generation import generate_candidates
    from inference.loading import load_for_generation
    from inference.sampling import SamplingConfig

    if args.model:
        model, tokenizer = load_for_generation(args.model, device="cpu")
    else:
        tokenizer = train_tokenizer(
            pretraining_corpus(500, 0), SIZES["demo"].vocab_size
        )
        tokenizer.padding_side = "left"
        model = init_model(tokenizer, SIZES["demo"]).eval()
    prompts = make_prompts(args.prompts, seed=0)
    sampling = SamplingConfig(
        num_candidates=args.k, max_new_tokens=args.max_new_tokens, seed=0
    )
    n = len(prompts) * args.k
    print(
        f"{n} candidates ({len(prompts)} prompts x {args.k}), {args.max_new_tokens} new tokens, "
        f"{torch.get_num_threads()} threads"
    )

    def timed(label: str, fn) -> float:
        start = time.perf_counter()
        fn()
        rate = n / (time.perf_counter() - start)
        print(f"{label:<44} {rate:8.2f} candidates/s")
        return rate

    generate_candidates(model, tokenizer, prompts[:2], sampling)  # warm-up
    batched = timed(
        "batched (32 prompts x K per generate call)",
        lambda: generate_candidates(model, tokenizer, prompts, sampling, batch_size=32),
    )
    one_config = SamplingConfig(
        num_candidates=1, max_new_tokens=args.max_new_tokens, seed=0
    )

    def one_at_a_time() -> None:
        for prompt in prompts:
            for _ in range(args.k):
                generate_candidates(
                    model, tokenizer, [prompt], one_config, batch_size=1
                )

    looped = timed("one prompt, one candidate per call", one_at_a_time)
    print(f"ratio: {batched / looped:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
