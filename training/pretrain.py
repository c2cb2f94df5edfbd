"""Continued pre-training: next-token prediction on a curated corpus, with TRL.

The starting model is `base_path` plus an optional LoRA `adapter_path`, as in SFT:
with LoRA on, a parent adapter keeps training or a new one is made; with LoRA off,
a parent adapter is merged and the whole model trains. The corpus is a JSONL of
`{"text"}` documents (a project's curated corpus, `annotation.corpora`). The loss
covers every token: documents, each ended by the eos token, are packed into one
stream cut into blocks of `max_length` tokens (TRL's "wrapped" packing), so no
step is spent on padding. A seeded share of the documents is held out, and the
perplexity on it is measured before and after training.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from inference.loading import load_policy, load_tokenizer
from training.artifacts import (
    Precision,
    TrainerConfig,
    bf16_field,
    check_range,
    lora_config,
    precision_args,
    read_jsonl,
    save_artifact,
    train_to_end,
)
from training.progress import Reporter, trainer_callback


@dataclass
class PretrainConfig(TrainerConfig):
    """What a pre-training stage needs; field names follow `trl.SFTConfig` where they are TRL's."""

    METHOD: ClassVar[str] = "pretrain"

    learning_rate: float = field(
        default=1e-3,
        metadata={
            "help": "AdamW learning rate; a 1M model needs ~1e-3, a large one ~1e-5."
        },
    )
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Passes over the corpus."}
    )
    max_steps: int = field(
        default=-1,
        metadata={"help": "Stop after this many optimiser steps (-1: run the epochs)."},
    )
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Blocks per device per step."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated per optimiser step."}
    )
    max_length: int = field(
        default=256,
        metadata={"help": "Tokens per packed block (at most the model's context)."},
    )
    eval_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Share of the documents held out for perplexity (0: none; "
            "at least one document when above 0)."
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
        default=0, metadata={"help": "Seed for the held-out split and data order."}
    )
    bf16: Precision = bf16_field()
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Other trl.SFTConfig fields that shape the optimisation (see training/trl_args.py)."
        },
    )

    def __post_init__(self) -> None:
        check_range("eval_fraction", self.eval_fraction, 0, 0.5)
        super().__post_init__()


def corpus_documents(path: Path) -> list[str]:
    """Return the documents of a JSONL corpus of `{"text"}` records."""
    return [row["text"] for row in read_jsonl(path, required=("text",))]


def split_held_out(
    documents: list[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Return (training, held-out) documents: a seeded `fraction` held out.

    At least one document is held out when `fraction` is above 0 and there are
    two or more; the rest keep their order.
    """
    if fraction <= 0 or len(documents) < 2:
        return list(documents), []
    count = min(len(documents) - 1, max(1, round(fraction * len(documents))))
    held = set(random.Random(seed).sample(range(len(documents)), count))
    return (
        [d for i, d in enumerate(documents) if i not in held],
        [d for i, d in enumerate(documents) if i in held],
    )


def perplexity(
    model, tokenizer, documents: list[str], block_size: int, batch_size: int = 16
) -> float:
    """Return the model's perplexity on documents packed like the training data.

    Each document is ended by eos, the stream is cut into blocks of `block_size`
    tokens, and the perplexity is exp of the mean negative log-likelihood over
    every predicted token.
    """
    import torch

    ids: list[int] = []
    for doc in documents:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    blocks = [ids[i : i + block_size] for i in range(0, len(ids), block_size)]
    blocks = [b for b in blocks if len(b) > 1]
    if not blocks:
        raise ValueError("the held-out documents hold fewer than two tokens")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    # Full blocks go in batches; a shorter last block goes alone (no padding).
    full = [b for b in blocks if len(b) == block_size]
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    batches += [[b] for b in blocks if len(b) < block_size]
    with torch.no_grad():
        for batch in batches:
            tokens = torch.tensor(batch, device=device)  # (batch, seq)
            loss = model(input_ids=tokens, labels=tokens).loss  # mean over predictions
            predicted = len(batch) * (len(batch[0]) - 1)
            total_nll += loss.item() * predicted
            total_tokens += predicted
    model.train(was_training)
    return math.exp(total_nll / total_tokens)


def train(
    config: PretrainConfig,
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Pre-train the model on the corpus; save the adapter or model into `output_dir`.

    Return TRL's last logged metrics plus `steps`, `stopped`, and the held-out
    `eval_perplexity_before` and `eval_perplexity` when documents were held out;
    a stopped run leaves its checkpoint and saves no artifact.
    """
    from datasets import Dataset
    from trl import SFTTrainer

    if data_path is None:
        raise ValueError('pre-training needs data_path: a JSONL of {"text"} documents')
    documents, held_out = split_held_out(
        corpus_documents(Path(data_path)), config.eval_fraction, config.seed
    )
    tokenizer = load_tokenizer(config.base_path, padding_side="right")
    model, peft_config = _starting_model(config)
    before = (
        perplexity(model, tokenizer, held_out, config.max_length) if held_out else None
    )
    args = _trl_config(config, reporter)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"text": d} for d in documents]),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[trainer_callback(reporter)],
    )
    metrics = train_to_end(trainer, resume_from, reporter)
    metrics["train_documents"] = float(len(documents))
    if metrics["stopped"]:
        return metrics
    if held_out:
        metrics["eval_documents"] = float(len(held_out))
        metrics["eval_perplexity_before"] = before
        metrics["eval_perplexity"] = perplexity(
            trainer.model, tokenizer, held_out, config.max_length
        )
        reporter.log(
            trainer.state.global_step,
            trainer.state.max_steps,
            eval_perplexity=metrics["eval_perplexity"],
        )
    save_artifact(trainer.model, tokenizer, output_dir, config.to_dict())
    return metrics


def _starting_model(config: PretrainConfig) -> tuple[Any, Any]:
    """Return the model to train and the LoRA config of a new adapter (or None)."""
    if not config.use_lora:
        return load_policy(config.base_path, config.adapter_path, merge=True), None
    model = load_policy(config.base_path, config.adapter_path, trainable=True)
    if config.adapter_path:
        return model, None
    return model, lora_config(config.lora_r, config.lora_alpha, config.lora_dropout)


def _trl_config(config: PretrainConfig, reporter: Reporter) -> Any:
    """Return TRL's config: every token in the loss, documents packed into blocks."""
    from trl import SFTConfig as TRLSFTConfig

    return TRLSFTConfig(
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
        packing=True,
        packing_strategy="wrapped",
        dataset_text_field="text",
        **config.trl_args,
    )
