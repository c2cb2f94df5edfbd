"""Direct preference optimisation of a policy on a preference snapshot, with TRL.

The starting policy is `base_path` plus an optional LoRA `adapter_path`.

- LoRA on, parent without adapter: a fresh adapter is trained; the reference is
  the base with the adapter disabled (initial loss exactly ln 2).
- LoRA on, parent with an adapter: the parent's adapter keeps training (the
  artifact stays one small adapter on the same base, round after round) and TRL
  keeps a frozen copy of it as the reference, so the reference is exactly the
  parent policy. `lora_r`/`lora_alpha` are then the parent's, not ours.
- LoRA off: the parent's adapter (if any) is merged into the base, the whole model
  trains, and a frozen copy of the starting model is the reference.

For small models the default loss is DPO's sigmoid plus an SFT term on the chosen
response (`["sigmoid", "sft"]`): measured on the demo, plain sigmoid DPO from a
weak policy is unstable, the SFT term lifts it (see ML-NOTES).
"""

from __future__ import annotations

import logging
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
from training.padding import trim_padding
from training.progress import Reporter, trainer_callback

logger = logging.getLogger(__name__)

LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
# The loss types whose TRL implementation reads label_smoothing (TRL 1.x dropped it from
# "sigmoid", where it once gave cDPO): with any other, the option would do nothing.
LABEL_SMOOTHING_LOSSES = ("robust", "exo_pair", "aot", "aot_unpaired")


@dataclass
class DPOConfig(TrainerConfig):
    """What a DPO stage needs; field names follow `trl.DPOConfig` where they are TRL's."""

    METHOD: ClassVar[str] = "dpo"

    use_lora: bool = field(
        default=True,
        metadata={"help": "Train a LoRA adapter (reference = adapter disabled)."},
    )
    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid", "sft"],
        metadata={
            "help": f"DPO loss terms, summed with loss_weights; any of {', '.join(LOSS_TYPES)}."
        },
    )
    loss_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per loss term; default all 1."}
    )
    beta: float = field(
        default=0.1,
        metadata={
            "help": "Strength of the implicit KL to the reference (IPO: its regulariser)."
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "Assumed share of flipped labels, for the loss types that use it: "
            f"{', '.join(LABEL_SMOOTHING_LOSSES)} (robust is cDPO's unbiased form)."
        },
    )
    learning_rate: float = field(
        default=5e-4,
        metadata={
            "help": "AdamW learning rate; TRL's 1e-6 is for large models and moves a tiny one not at all."
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
        default=8, metadata={"help": "Pairs per device per step."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated per optimiser step."}
    )
    max_length: int = field(
        default=256,
        metadata={"help": "Truncate prompt + response to this many tokens."},
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
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={
            "help": "Compute reference log-probs once before training (saves a forward pass per step)."
        },
    )
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Other trl.DPOConfig fields that shape the optimisation or the loss (see training/trl_args.py)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        bad = [t for t in self.loss_type if t not in LOSS_TYPES]
        if bad or not self.loss_type:
            raise ValueError(
                f"loss_type must be some of {list(LOSS_TYPES)}, got {self.loss_type}"
            )
        if self.loss_weights is not None and len(self.loss_weights) != len(
            self.loss_type
        ):
            raise ValueError(
                f"loss_weights must have one weight per loss_type ({len(self.loss_type)}), "
                f"got {self.loss_weights}"
            )
        check_range("beta", self.beta, 0, None, low_open=True)
        check_range("label_smoothing", self.label_smoothing, 0, 0.5, high_open=True)
        if self.label_smoothing and not set(self.loss_type) & set(
            LABEL_SMOOTHING_LOSSES
        ):
            raise ValueError(
                f"label_smoothing {self.label_smoothing} is used only by the loss types "
                f"{list(LABEL_SMOOTHING_LOSSES)}; loss_type is {self.loss_type}: add one "
                "(robust for noisy labels) or set label_smoothing to 0"
            )
        if "exo_pair" in self.loss_type and not self.label_smoothing:
            raise ValueError(
                "loss_type exo_pair needs label_smoothing > 0 (EXO suggests 1e-3), "
                f"got {float(self.label_smoothing)}"
            )
        super().__post_init__()


def preference_rows(path: Path) -> list[dict[str, Any]]:
    """Return prompt/chosen/rejected(/margin) records from a TRL-format JSONL export."""
    rows = read_jsonl(path, required=("prompt", "chosen", "rejected"))
    return [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows]


def train(
    config: DPOConfig,
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Train the policy with DPO on `data_path`; save the adapter or model into `output_dir`.

    Return the final metrics (TRL's last logged values plus `stopped`). When the
    worker asked to stop, checkpoint, save nothing into `output_dir` and return
    with `stopped` = 1.

    Long on purpose: it reads top to bottom as the steps of one run (load the
    data, the tokenizer and the model, configure TRL, train, save), each a few
    lines that share the same locals.
    """
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    if data_path is None:
        raise ValueError(
            "DPO needs data_path: a preference JSONL with prompt/chosen/rejected"
        )
    dataset = Dataset.from_list(preference_rows(Path(data_path)))
    tokenizer = load_tokenizer(config.base_path, padding_side="right")

    if config.use_lora:
        model = load_policy(config.base_path, config.adapter_path, trainable=True)
        peft_config = None
        if not config.adapter_path:
            peft_config = lora_config(
                config.lora_r, config.lora_alpha, config.lora_dropout
            )
        else:
            logger.warning(
                "continuing the parent's adapter %s: its rank and alpha apply, "
                "lora_r=%s and lora_alpha=%s are ignored",
                config.adapter_path,
                config.lora_r,
                config.lora_alpha,
            )
        ref_model = None
    else:
        model = load_policy(config.base_path, config.adapter_path, merge=True)
        peft_config = None
        ref_model = load_policy(config.base_path, config.adapter_path, merge=True)
        ref_model.requires_grad_(False)
        trim_padding(ref_model)
    trim_padding(model)

    args = TRLDPOConfig(
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
        loss_type=list(config.loss_type),
        loss_weights=config.loss_weights,
        beta=config.beta,
        label_smoothing=config.label_smoothing,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
        **config.trl_args,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
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
