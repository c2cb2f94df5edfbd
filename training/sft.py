"""Supervised fine-tuning of a policy on demonstrations (prompt/completion), with TRL.

The starting policy is `base_path` plus an optional LoRA `adapter_path`. With LoRA
on, a parent adapter keeps training (the artifact stays one adapter on the same
base) or a new one is made; with LoRA off, a parent adapter is merged and the
whole model trains. The loss covers only the completion tokens, never the prompt
(TRL's `completion_only_loss` for prompt/completion data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from inference.loading import load_policy, load_tokenizer
from training.artifacts import (
    Precision,
    TrainerConfig,
    bf16_field,
    lora_config,
    precision_args,
    read_jsonl,
    save_artifact,
    train_to_end,
)
from training.padding import trim_padding
from training.progress import Reporter, trainer_callback


@dataclass
class SFTConfig(TrainerConfig):
    """What an SFT stage needs; field names follow `trl.SFTConfig` where they are TRL's."""

    METHOD: ClassVar[str] = "sft"

    learning_rate: float = field(
        default=1e-3,
        metadata={
            "help": "AdamW learning rate; TRL's 2e-5 is for large models (a 1M model needs ~1e-3)."
        },
    )
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Passes over the data."}
    )
    max_steps: int = field(
        default=-1,
        metadata={"help": "Stop after this many optimiser steps (-1: run the epochs)."},
    )
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Demonstrations per device per step."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated per optimiser step."}
    )
    max_length: int = field(
        default=256, metadata={"help": "Truncate each example to this many tokens."}
    )
    packing: bool = field(
        default=False,
        metadata={"help": "Pack several examples into one sequence (faster on GPUs)."},
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
        default=0, metadata={"help": "Seed for data order and initialisation."}
    )
    bf16: Precision = bf16_field()
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Other trl.SFTConfig fields that shape the optimisation or the loss (see training/trl_args.py)."
        },
    )


def demonstration_rows(path: Path) -> list[dict[str, Any]]:
    """Return prompt/completion records from a JSONL of demonstrations."""
    rows = read_jsonl(path, required=("prompt", "completion"))
    return [{"prompt": row["prompt"], "completion": row["completion"]} for row in rows]


def train(
    config: SFTConfig,
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune the policy on the demonstrations; save the adapter or model into `output_dir`.

    Return TRL's last logged metrics plus `steps` and `stopped`; a stopped run
    leaves its checkpoint and saves no artifact.
    """
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    if data_path is None:
        raise ValueError(
            "SFT needs data_path: a JSONL of prompt/completion demonstrations"
        )
    dataset = Dataset.from_list(demonstration_rows(Path(data_path)))
    tokenizer = load_tokenizer(config.base_path, padding_side="right")

    peft_config = None
    if config.use_lora:
        model = load_policy(config.base_path, config.adapter_path, trainable=True)
        if not config.adapter_path:
            peft_config = lora_config(
                config.lora_r, config.lora_alpha, config.lora_dropout
            )
    else:
        model = load_policy(config.base_path, config.adapter_path, merge=True)
    trim_padding(model)

    args = TRLSFTConfig(
        output_dir=str(reporter.checkpoint_dir),
        report_to="none",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        **precision_args(config.bf16),
        activation_checkpointing=False,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps,
        seed=config.seed,
        data_seed=config.seed,
        max_length=config.max_length,
        packing=config.packing,
        **config.trl_args,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[trainer_callback(reporter)],
    )
    metrics = train_to_end(trainer, resume_from, reporter)
    if metrics["stopped"]:
        return metrics
    save_artifact(trainer.model, tokenizer, output_dir, config.to_dict())
    return metrics
