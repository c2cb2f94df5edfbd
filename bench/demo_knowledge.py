"""Does the demo base know the facts, and can the SFT policy say them? (issue 11, part 2)

Two measurements on a built demo (`make run`, or `manage.py build_demo_models`):

1. **Knowledge** of `demo-base`: for every creature, attribute and count, the base
   completes the statement the corpus uses ("A glimmet is", "3 glimmets cost")
   greedily; the first word must be the world table's value. Reported per question
   split (train / dev / test, `demo.world.question_split`).
2. **Extraction** by `demo-sft`: its answers to the split's questions (train: 150
   pool prompts; dev and test: the held-out prompts, one per question), greedy and
   sampled at temperature 1 (4 samples, as the loop's evaluation), scored by the
   world judge: the share correct, wrong and evasive, per question kind.

If the base knows a test fact but the SFT policy gets the test question wrong, the
loss is extraction, not knowledge: preference rounds on train questions can only
help by teaching the policy to say what it knows. Each cell reads correct / wrong /
evasive / misnamed (the rest of 1 gave no answer); misnamed is the part of the wrong
answers that state the value asked for under another creature's name
(`demo.world.misnamed`: "5 drazzles have 40 legs." for 5 crumpets, which
have 8 legs each as drazzles do), the policy knowing the value and naming a creature
it was trained to answer about.

    .venv/bin/python bench/demo_knowledge.py            # the models under var/models
    .venv/bin/python bench/demo_knowledge.py --models /path/to/models
    VAR_DIR=... .venv/bin/python bench/demo_knowledge.py --models ... --policy NAME

`--policy` measures a registered policy of that VAR_DIR's database (a round's, after
`run_loop`) in place of `demo-sft`.

Measured 2026-12-01 13:08 UTC on the 2-core machine (load 4.1: two loop runs beside
it; the figures are deterministic, not timings), the demo as `make run` builds it
(`demo/policies.py` PLANS["demo"], SFT 1,200 steps): the base completes 98-100% of
the statements of every split (test 71/72, the miss one total price); SFT answers
test questions correctly 46% greedy, 22% sampled (train: 98% greedy, 59% sampled).
The same measurement on the earlier build (SFT 400 steps, same base recipe) gave 30%
greedy, 10% sampled on test: that model greeted one fixed person whoever was named
and restated a training creature instead of the one asked about. Sums (48 of the 90
test questions) stay hard either way (21-38% greedy).

Measured again 2026-12-04 23:38-23:45 UTC (an Intel Xeon with AMX, load 1.1, a fresh
build by `make run`'s code at 1203fe2; the dev split, which chooses settings; the test
columns were read once for the diagnosis): SFT dev greedy 0.33 correct, misnamed
0.07, T=1 0.15 correct, 0.05 misnamed, 0.15 evasive; test greedy 0.41 (misnamed
0.12), T=1 0.21 (0.06). The README's DPO command on the dev split, two seeds
(0.846 win rate, +7.1 points of accuracy), then `--policy` on its policies: round 1
(seed 0) dev greedy 0.35, T=1 0.18; round 3 greedy 0.37 and 0.32, T=1 0.25 and 0.19,
evasive 0.00, misnamed 0.02-0.05. So naming another creature is a small part of
the loss, the rounds end evasion, and the greedy answer, the most a sharper policy
can say, does not move (docs/loop.md, "Why accuracy barely moved").

Those figures are the 24-creature world's. On the 96-creature world, the demo's since
2026-12-05 (measured 07:22 UTC that day, an Intel Xeon with AMX, load 1.5, a fresh
build by `make run`'s code): the base completes every statement of every split
(test 288/288); SFT answers dev 0.79 greedy, 0.42 at T=1; test 0.78 greedy (misnamed
0.11), 0.41 at T=1 (0.08), evasive 0.13 sampled; train 1.00 and 0.63. With four times
the creatures SFT learnt to look a fact up instead of reciting trained answers
(docs/loop.md, "A larger zoo").
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KINDS = (
    "colour",
    "legs",
    "food",
    "price",
    "total_price",
    "total_legs",
    "hello",
    "good_day",
    "thanks",
)


def knowledge(base: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """Return {split: {kind: (known, asked)}}: greedy completions of corpus statements."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from demo import world

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    result: dict[str, dict[str, list[int]]] = {}
    for creature, (colour, legs, food, price) in world.CREATURES.items():
        probes = [
            ("colour", f"A {creature} is", colour),
            ("legs", f"A {creature} has", str(legs)),
            ("food", f"A {creature} eats", food),
            ("price", f"A {creature} costs", str(price)),
        ]
        for n in world.COUNTS:
            probes.append(("total_price", f"{n} {creature}s cost", str(n * price)))
            probes.append(("total_legs", f"{n} {creature}s have", str(n * legs)))
        for kind, text, value in probes:
            attribute = {"total_price": "price", "total_legs": "legs"}.get(kind, kind)
            split = world._split_table()[(attribute, creature)]
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            out = model.generate(
                ids.input_ids,
                max_new_tokens=4,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            words = tokenizer.decode(
                out[0, ids.input_ids.shape[1] :], skip_special_tokens=True
            ).split()
            counts = result.setdefault(split, {}).setdefault(kind, [0, 0])
            counts[0] += bool(words) and words[0].strip(".") == value
            counts[1] += 1
    return {s: {k: tuple(v) for k, v in kinds.items()} for s, kinds in result.items()}


def extraction(
    policy: tuple[str, str], split: str, temperature: float
) -> dict[str, collections.Counter]:
    """Return {kind: Counter(answer verdicts)} of a policy (base, adapter) on the split.

    A wrong answer that states the right value under another creature's name
    (`demo.world.misnamed`) is also counted as "misnamed".
    """
    from demo import world
    from inference.generation import generate_for_policy
    from inference.sampling import SamplingConfig

    if split == "train":
        prompts = world.make_prompts(150, 0, "train")
    else:
        prompts = world.eval_prompts(split)
    samples = 1 if temperature == 0 else 4
    outputs = generate_for_policy(
        *policy,
        prompts,
        SamplingConfig(
            num_candidates=samples, temperature=temperature, max_new_tokens=48, seed=1
        ),
    )
    verdicts: dict[str, collections.Counter] = collections.defaultdict(
        collections.Counter
    )
    for prompt, texts in zip(prompts, outputs, strict=True):
        kind = world.parse_prompt(prompt).kind
        for text in texts:
            answers = [world.judge_score(prompt, text).answer]
            if world.misnamed(prompt, text):
                answers.append("misnamed")
            for answer in answers:
                verdicts[kind][answer] += 1
                verdicts["all"][answer] += 1
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default=str(REPO / "var" / "models"),
        help="Folder holding demo-base and demo-sft.",
    )
    parser.add_argument(
        "--policy",
        default="",
        help="A registered policy (e.g. a round's, demo-round3-2-dpo) measured in "
        "place of demo-sft, from the database of this VAR_DIR.",
    )
    args = parser.parse_args()
    models = Path(args.models)
    policy = (str(models / "demo-sft"), "")
    if args.policy:
        from inference.models import Policy

        row = Policy.objects.filter(name=args.policy).first()
        if row is None:
            raise SystemExit(
                f"--policy {args.policy!r} is not a registered policy in this "
                f"VAR_DIR's database; give one of: "
                + ", ".join(Policy.objects.values_list("name", flat=True)[:20])
            )
        policy = (row.base_path, row.adapter_path)
    for name in ("demo-base", "demo-sft"):
        if not (models / name).is_dir():
            raise SystemExit(
                f"{models / name} is not a model folder; run `make run` (or manage.py "
                f"build_demo_models) first, or pass --models"
            )
    print(f"CPU load average {os.getloadavg()[0]:.1f}", flush=True)
    print("base knows (greedy completion of the corpus's statements):")
    for split, kinds in sorted(knowledge(models / "demo-base").items()):
        known = sum(k for k, _ in kinds.values())
        asked = sum(n for _, n in kinds.values())
        detail = " ".join(f"{kind} {k}/{n}" for kind, (k, n) in sorted(kinds.items()))
        print(
            f"  {split:5} {known}/{asked} ({known / asked:.0%}): {detail}", flush=True
        )
    print(
        f"{args.policy or 'SFT'} answers (share correct / wrong / evasive / misnamed: "
        "the wrong ones that state the value asked for under another creature's name)"
    )
    from demo.world import REQUEST_KINDS

    for split in ("train", "dev", "test"):
        for temperature in (0.0, 1.0):
            verdicts = extraction(policy, split, temperature)
            cells = []
            for kind in ("all", *KINDS):
                counts = verdicts.get(kind)
                if not counts:
                    continue
                n = sum(v for a, v in counts.items() if a != "misnamed")
                named = (
                    "" if kind in REQUEST_KINDS else f"/{counts['misnamed'] / n:.2f}"
                )
                cells.append(
                    f"{kind} {counts['correct'] / n:.2f}/{counts['wrong'] / n:.2f}"
                    f"/{counts['evasive'] / n:.2f}{named}"
                )
            label = "greedy" if temperature == 0 else "T=1"
            print(f"  {split:5} {label:6} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    main()
