"""Bradley-Terry reward model training with TRL (scoring with one: `inference/scoring.py`).

The model is a sequence classifier with one output (the reward): a causal LM with a
new scalar head (`LlamaForSequenceClassification` reads the last non-pad token), or
an encoder such as all-MiniLM-L6-v2 (BERT pools its first, `[CLS]`, token).

Choices, documented once:
- The artifact is always a full, merged sequence-classification model, also when
  LoRA trained it: PPO, GRPO, RLOO and evaluation then load it as a plain
  `AutoModelForSequenceClassification`, with no base/adapter bookkeeping.
- A starting policy with an adapter is merged into its base first.
- An encoder's tokenizer has no chat template and no end token. It gets a template
  that renders the turns newest first (`role: content [SEP]` each, after
  `[CLS]`), so that the response being judged always lies inside the encoder's
  window and truncation drops the oldest context; `[SEP]` becomes its eos.
- Held-out pairs are split off by prompt, never by row, so no prompt is seen in
  both parts; their pairwise accuracy and mean margin are in the returned metrics.
- The `margin` column of an export is used only when `use_margin` is on (loss
  -log sigmoid(r_c - r_r - margin), Llama 2 style).
- `ensemble_size` N trains N reward models that differ only in seed (new head,
  data order), as Coste et al. 2023's ensembles against reward over-optimisation
  do. The first is the artifact, so everything that loads one reward model loads
  it unchanged; the others sit in its `members/<i>` folders, and a PPO stage
  after the reward stage averages all of them (`training/ppo.py`). A stopped stage
  resumes the first member from its checkpoint and loads the extra members it had
  finished; only the one cut short trains again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from inference.artifacts import atomic_dir
from inference.loading import load_tokenizer
from inference.scoring import is_encoder, load_reward_model, score
from training.artifacts import (
    Precision,
    TrainerConfig,
    bf16_field,
    check_range,
    final_metrics,
    lora_config,
    precision_args,
    read_jsonl,
    resume_checkpoint,
)
from training.progress import Reporter, trainer_callback

# Reward models in one ensemble (as training/ppo.py's), and where the extra members go.
MAX_ENSEMBLE = 8
MEMBERS_DIR = "members"
MEMBER_MODEL = "model"  # a finished extra member, in checkpoints/member-<i>/


@dataclass
class RewardConfig(TrainerConfig):
    """What a reward-model stage needs; field names follow `trl.RewardConfig` where they are TRL's."""

    METHOD: ClassVar[str] = "reward"

    base_path: str = field(
        default="",
        metadata={
            "help": "Folder or hub id to start from: a causal LM (policy) or an encoder (e.g. MiniLM)."
        },
    )
    adapter_path: str = field(
        default="",
        metadata={
            "help": "The starting policy's LoRA adapter, merged into the base first."
        },
    )
    use_lora: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA (SEQ_CLS: the score head trains fully) instead of all weights."
        },
    )
    use_margin: bool = field(
        default=False,
        metadata={
            "help": "Use the export's margin column: loss -log sigmoid(r_c - r_r - margin)."
        },
    )
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata={
            "help": "Weight of a penalty on mean reward away from zero (0.01 is typical)."
        },
    )
    learning_rate: float = field(
        default=5e-4,
        metadata={
            "help": "AdamW learning rate; for a pre-trained encoder such as MiniLM use ~5e-5."
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Passes over the data."}
    )
    max_steps: int = field(
        default=-1,
        metadata={"help": "Stop after this many optimiser steps (-1: run the epochs)."},
    )
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Pairs per device per step."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated per optimiser step."}
    )
    max_length: int = field(
        default=256,
        metadata={
            "help": "Pairs with a side longer than this many tokens are dropped (TRL)."
        },
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Share of prompts held out to measure pairwise accuracy (0: none)."
        },
    )
    warmup_steps: float = field(
        default=0.0,
        metadata={"help": "Linear warm-up: steps if >= 1, else a share of all steps."},
    )
    save_steps: int = field(
        default=50, metadata={"help": "Checkpoint every this many steps."}
    )
    logging_steps: int = field(
        default=1, metadata={"help": "Report metrics every this many steps."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed for the split, data order and the new head."}
    )
    ensemble_size: int = field(
        default=1,
        metadata={
            "help": "Reward models trained (seeds seed, seed+1, ...; the same held-out "
            "prompts): the first is the artifact, the rest its members/ folder, and "
            "PPO averages them all."
        },
    )
    bf16: Precision = bf16_field()
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Other trl.RewardConfig fields that shape the optimisation or the loss (see training/trl_args.py)."
        },
    )

    def __post_init__(self) -> None:
        if self.center_rewards_coefficient is not None:
            check_range(
                "center_rewards_coefficient", self.center_rewards_coefficient, 0, None
            )
        check_range("weight_decay", self.weight_decay, 0, None)
        check_range("eval_fraction", self.eval_fraction, 0, 1, high_open=True)
        check_range("ensemble_size", self.ensemble_size, 1, MAX_ENSEMBLE)
        super().__post_init__()


def preference_rows(path: Path, *, with_margin: bool) -> list[dict[str, Any]]:
    """Return prompt/chosen/rejected (and margin when asked) records from a TRL JSONL export."""
    rows = read_jsonl(path, required=("prompt", "chosen", "rejected"))
    keys = (
        ("prompt", "chosen", "rejected", "margin")
        if with_margin
        else ("prompt", "chosen", "rejected")
    )
    if with_margin:
        missing = [i for i, row in enumerate(rows, start=1) if "margin" not in row]
        if missing:
            raise ValueError(
                f"use_margin is on but record(s) {missing[:5]} of {path} have no margin; "
                "export with margins or turn use_margin off"
            )
    return [{k: row[k] for k in keys} for row in rows]


def split_by_prompt(
    rows: list[dict[str, Any]], eval_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split rows into (train, held_out) so that no prompt lies in both.

    A prompt goes to the held-out part when a seeded hash of it falls under
    `eval_fraction`: stable across runs and independent of row order. When that
    leaves one part empty, as a few prompts can by chance, the prompt whose hash lies
    nearest the other part moves there, so two distinct prompts are always enough.
    """
    if eval_fraction == 0:
        return rows, []
    texts = [json.dumps(row["prompt"], sort_keys=True) for row in rows]
    units: dict[str, float] = {}
    for text in texts:
        if text not in units:
            key = f"{seed}:{text}".encode()
            units[text] = (
                int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
            )
    if len(units) < 2:
        raise ValueError(
            f"eval_fraction={eval_fraction} needs two distinct prompts to hold one out, "
            f"and the data has {len(units)} distinct prompt(s) ({len(rows)} pairs); "
            "give more distinct prompts or set eval_fraction to 0"
        )
    held = {text for text, unit in units.items() if unit < eval_fraction}
    if not held:
        held = {min(units, key=units.__getitem__)}
    elif len(held) == len(units):
        held.discard(max(units, key=units.__getitem__))
    train, held_out = [], []
    for row, text in zip(rows, texts, strict=True):
        (held_out if text in held else train).append(row)
    return train, held_out


def prepare_encoder_tokenizer(tokenizer) -> None:
    """Give an encoder tokenizer its newest-first chat template and `[SEP]` as eos."""
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    tokenizer.chat_template = (
        "{{ '" + cls + "' }}"
        "{% for message in messages | reverse %}"
        "{{ message['role'] + ': ' + message['content'] + ' " + sep + " ' }}"
        "{% endfor %}"
    )
    tokenizer.eos_token = sep


def load_start_model(base_path: str, adapter_path: str, tokenizer):
    """Load a one-output sequence classifier from a base (and merged adapter)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    if not base_path:
        raise ValueError(
            "base_path is empty; give the folder of a causal LM or an encoder"
        )
    model = AutoModelForSequenceClassification.from_pretrained(
        base_path, num_labels=1, dtype=torch.float32
    )
    if adapter_path:
        from peft import PeftConfig, PeftModel

        # The adapter was trained on the causal LM; here it sits on a classifier of
        # the same base, so load it as a plain adapter (no task-specific wrapper).
        adapter_config = PeftConfig.from_pretrained(adapter_path)
        adapter_config.task_type = None
        model = PeftModel.from_pretrained(
            model, adapter_path, config=adapter_config
        ).merge_and_unload()
        # Loading an adapter for inference froze the base; the merged model trains.
        model.requires_grad_(True)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def evaluate_pairs(
    model,
    tokenizer,
    rows: list[dict[str, Any]],
    *,
    batch_size: int = 32,
    max_length: int = 512,
) -> dict[str, float]:
    """Return {"pairs", "accuracy", "mean_margin"} of a reward model on preference rows.

    `model` may be a list of models sharing the tokenizer (an ensemble's members):
    each side's score is then their mean. Accuracy counts a tie as half right, so a
    constant model scores exactly 0.5.
    """
    if not rows:
        raise ValueError("no preference pairs to evaluate; pass a non-empty file")
    models = model if isinstance(model, list) else [model]
    prompts = [row.get("prompt") for row in rows]
    margins = [0.0] * len(rows)
    for member in models:
        for side, sign in (("chosen", 1.0), ("rejected", -1.0)):
            scores = score(
                member,
                tokenizer,
                prompts,
                [r[side] for r in rows],
                batch_size=batch_size,
                max_length=max_length,
            )
            margins = [
                m + sign * x / len(models) for m, x in zip(margins, scores, strict=True)
            ]
    right = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
    return {
        "pairs": len(rows),
        "accuracy": right / len(rows),
        "mean_margin": sum(margins) / len(margins),
    }


def train(
    config: RewardConfig,
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Train a reward model on `data_path`; save the merged model into `output_dir`.

    Return TRL's last logged metrics plus `eval_pairs`, `eval_accuracy` and
    `eval_mean_margin` on the held-out prompts, and `stopped`. With
    `ensemble_size` N above 1, N-1 more members train after the first, seeds
    seed+1.. (a new head and data order each, the same held-out prompts), and go
    into `output_dir/members/<i>`; `eval_ensemble_accuracy` is then the held-out
    accuracy of the members' mean score.
    """
    if data_path is None:
        raise ValueError(
            "a reward model needs data_path: a preference JSONL with prompt/chosen/rejected"
        )
    rows = preference_rows(Path(data_path), with_margin=config.use_margin)
    train_rows, held_out = split_by_prompt(rows, config.eval_fraction, config.seed)

    tokenizer = load_tokenizer(config.base_path, padding_side="right")
    if is_encoder(tokenizer):
        prepare_encoder_tokenizer(tokenizer)
    size = config.ensemble_size
    trainer = _fit(config, train_rows, tokenizer, reporter, resume_from, 0)
    metrics = final_metrics(trainer, reporter)
    if metrics["stopped"]:
        return metrics
    models = [_merged(trainer.model)]
    for member in range(1, size):
        models.append(_member(config, train_rows, tokenizer, reporter, member))
        if reporter.should_stop():
            metrics["stopped"] = 1.0
            return metrics

    if held_out:
        held = evaluate_pairs(
            models[0], tokenizer, held_out, max_length=config.max_length
        )
        metrics.update({f"eval_{k}": float(v) for k, v in held.items()})
        if size > 1:
            metrics["eval_ensemble_accuracy"] = evaluate_pairs(
                models, tokenizer, held_out, max_length=config.max_length
            )["accuracy"]
    output_dir = Path(output_dir)
    _save(models[0], tokenizer, output_dir, config)
    for member, model in enumerate(models[1:], start=1):
        _save(model, tokenizer, output_dir / MEMBERS_DIR / str(member), config)
        # Its copy for a resume (and any half-written one) is not needed once the
        # artifact holds it.
        shutil.rmtree(_member_copy(reporter, member).parent, ignore_errors=True)
    return metrics


def _fit(
    config: RewardConfig,
    train_rows: list[dict[str, Any]],
    tokenizer,
    reporter: Reporter,
    resume_from: Path | None,
    member: int,
):
    """Train member `member` of the stage (seed `config.seed + member`); return its Trainer.

    The first member checkpoints as the stage does; the progress bar runs over
    every member's steps.
    """
    import torch
    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    seed = config.seed + member
    torch.manual_seed(seed)  # the new score head
    model = load_start_model(config.base_path, config.adapter_path, tokenizer)
    peft_config = None
    if config.use_lora:
        peft_config = lora_config(
            config.lora_r, config.lora_alpha, config.lora_dropout, "SEQ_CLS"
        )
    checkpoints = reporter.checkpoint_dir
    if member:
        checkpoints = checkpoints / f"member-{member}"
    args = TRLRewardConfig(
        output_dir=str(checkpoints),
        report_to="none",
        save_strategy="no" if member else "steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        **precision_args(config.bf16),
        activation_checkpointing=False,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps,
        seed=seed,
        data_seed=seed,
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient,
        **config.trl_args,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[trainer_callback(reporter, member=(member, config.ensemble_size))],
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(resume_from))
    return trainer


def _member(
    config: RewardConfig,
    train_rows: list[dict[str, Any]],
    tokenizer,
    reporter: Reporter,
    member: int,
):
    """Return extra member `member`, merged: trained, or loaded where an earlier run of
    this stage finished it before a stop (the same seeds give the same model).

    An extra member keeps no mid-training checkpoints; once trained whole it waits in
    `checkpoints/member-<i>/model` (`atomic_dir`: whole or not at all) until the
    stage's artifact holds it.
    """
    saved = _member_copy(reporter, member)
    if saved.is_dir():
        return load_reward_model(str(saved))[0]
    trainer = _fit(config, train_rows, tokenizer, reporter, None, member)
    model = _merged(trainer.model)
    # Trained whole (not stopped midway); under `accelerate launch` one rank writes.
    whole = trainer.state.global_step >= trainer.state.max_steps
    if whole and os.environ.get("RANK", "0") == "0":
        with atomic_dir(saved) as tmp:
            _save(model, tokenizer, tmp, config)
    return model


def _member_copy(reporter: Reporter, member: int) -> Path:
    """Return where extra member `member` waits, trained whole, for a resume."""
    return reporter.checkpoint_dir / f"member-{member}" / MEMBER_MODEL


def _merged(model):
    """Return a trained model with any LoRA adapter folded in, in eval mode."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    return model


def _save(model, tokenizer, folder: Path, config: RewardConfig) -> None:
    """Save a reward model folder: weights, right-padded tokenizer, training config."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(folder)
    (folder / "training_config.json").write_text(
        json.dumps(config.to_dict(), indent=2, sort_keys=True)
    )


def ensemble_members(folder: str | Path) -> list[str]:
    """Return the folders of a reward model's further ensemble members, in order."""
    members = Path(folder) / MEMBERS_DIR
    if not members.is_dir():
        return []
    found = [p for p in members.iterdir() if p.is_dir() and p.name.isdigit()]
    return [str(p) for p in sorted(found, key=lambda p: int(p.name))]


def ensemble_paths_field() -> Any:
    """The `reward_ensemble_paths` field of a stage that scores with reward models
    (PPO, GRPO, RLOO): the folders of reward models beside the stage's own."""
    return field(
        default_factory=list,
        metadata={
            "help": "Folders of further reward models (the round option "
            "reward_ensemble names registered ones; a reward stage's own ensemble "
            "members join them): each response's score is the mean of every model's, "
            "each normalised on its own (PPO: when score_norm_batches is set)."
        },
    )


def check_ensemble_paths(paths: list[str]) -> None:
    """Refuse an ensemble larger than MAX_ENSEMBLE or a path that is no folder name."""
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ValueError(f"reward_ensemble_paths must be folder paths, got {paths!r}")
    if len(paths) > MAX_ENSEMBLE - 1:
        raise ValueError(
            f"reward_ensemble_paths holds {len(paths)} reward models; an ensemble has "
            f"at most {MAX_ENSEMBLE} (the stage's own and {MAX_ENSEMBLE - 1} more)"
        )
