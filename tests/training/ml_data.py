"""Small in-memory training data for the trainer tests, in the exporter's formats."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

COLOURS = ("red", "blue", "green", "small", "big")
ANIMALS = ("cat", "dog", "bird", "fox")
FOODS = ("apples", "fish", "seeds")


def _prompt(colour: str, animal: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"What does the {colour} {animal} like?"}]


def _answer(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def preference_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Return `n` conversational pairs whose chosen answer always likes fish.

    The rejected answer names another food, so the preference is one a micro
    model can learn: put weight on " fish" after "likes".
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour, animal = rng.choice(COLOURS), rng.choice(ANIMALS)
        other = rng.choice(("apples", "seeds"))
        rows.append(
            {
                "prompt": _prompt(colour, animal),
                "chosen": _answer(f"The {colour} {animal} likes fish."),
                "rejected": _answer(f"The {colour} {animal} likes {other}."),
                "margin": 1.0 + (i % 3),
            }
        )
    return rows


def demonstration_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Return `n` conversational prompt/completion demonstrations (SFT format).

    The food is drawn at random, so a policy tuned on them has a choice that a
    reward model preferring fish can push.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        colour, animal = rng.choice(COLOURS), rng.choice(ANIMALS)
        food = rng.choice(FOODS)
        rows.append(
            {
                "prompt": _prompt(colour, animal),
                "completion": _answer(f"The {colour} {animal} likes {food}."),
            }
        )
    return rows


def prompt_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Return `n` conversational prompts (the prompt column of an export)."""
    return [{"prompt": row["prompt"]} for row in preference_records(n, seed)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSONL and return the path."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_reward_model(
    base_dir: Path, run_dir: Path, pairs: int = 48, steps: int = 6
) -> Path:
    """Train a small reward model (fish is preferred) from `base_dir`; return its folder."""
    from training import reward
    from training.progress import Reporter

    data = write_jsonl(
        run_dir.parent / f"{run_dir.name}-pairs.jsonl", preference_records(pairs)
    )
    reporter = Reporter(run_dir)
    config = reward.RewardConfig(
        base_path=str(base_dir),
        max_steps=steps,
        learning_rate=2e-3,
        per_device_train_batch_size=8,
        eval_fraction=0,
    )
    reward.train(
        config, data_path=data, output_dir=reporter.output_dir, reporter=reporter
    )
    return reporter.output_dir


def make_opposite_reward_model(reward_dir: Path, folder: Path) -> Path:
    """Save the reward model at `reward_dir` with its score head times -3 into `folder`:
    it ranks every pair the other way, on three times the scale."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1)
    with torch.no_grad():
        model.score.weight.mul_(-3.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(reward_dir).save_pretrained(folder)
    return folder
