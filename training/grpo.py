"""Group relative policy optimisation against the platform's reward model, with TRL.

A critic-free online method: each prompt gets `num_generations` completions, and
each completion's advantage is its reward minus the group mean (divided by the
group's standard deviation). The reward is the reward model's score through
`inference.scoring.reward_function`, a graded signal: a group whose rewards are all
equal teaches nothing (`frac_reward_zero_std` in the logs says how often). With
`judge` (a registered judge that offers `reward`, such as "instructions") the judge
itself scores instead and no reward model is read: a verifiable reward (RLVR), for a
task a program can check (`inference.scoring.judge_reward_function`). With
`reward_ensemble_paths` (a reward stage's own ensemble members and the round's
named `reward_ensemble`) the reward is the mean of every member's score, each
normalised on the first batch it scores, the starting policy's samples, as PPO
normalises its ensemble; the statistics wait in the run directory for a resume
and come back as `score_shift` and `score_scale`.

The policy and artifact follow PPO's rule (see training/ppo.py): a parent's
adapter is merged into the base; all weights train (or, with `use_lora`, a new
adapter whose disabled state is the reference when `beta` > 0); the artifact is
the full model, or the adapter when LoRA trained on a parent without one.

This module is also the home of what GRPO and RLOO (training/rloo.py) share: their
config's fields and checks (`GroupConfig`) and the run (`train_group`); each method
adds only its own fields and TRL classes.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from inference.judges import check_judge_path, registered_judges
from inference.loading import load_policy, load_tokenizer
from training.artifacts import (
    Precision,
    StageConfig,
    bf16_field,
    check_bf16,
    check_range,
    lora_config,
    precision_args,
    save_artifact,
    train_to_end,
)
from training.ppo import prompt_rows
from training.progress import Reporter, trainer_callback
from training.reward import check_ensemble_paths, ensemble_paths_field
from training.trl_args import check_trl_args

# Where an ensemble's normalising statistics wait for a resume (training.grpo's run dir).
SCORE_NORM_FILE = "score-norm"


@dataclass
class GroupConfig(StageConfig):
    """What a group-sampling online stage needs (GRPO, RLOO); field names follow TRL's
    configs where they are TRL's. A subclass names its method in METHOD."""

    METHOD: ClassVar[str] = ""

    base_path: str = field(
        default="",
        metadata={"help": "Folder or hub id of the starting policy's base model."},
    )
    adapter_path: str = field(
        default="",
        metadata={
            "help": "The starting policy's LoRA adapter; merged into the base first."
        },
    )
    reward_model_path: str = field(
        default="",
        metadata={"help": "Folder of the reward model (a reward stage's output)."},
    )
    reward_ensemble_paths: list[str] = ensemble_paths_field()
    judge: str = field(
        default="",
        metadata={
            "help": "A registered judge whose reward(prompt, response) is the reward "
            "instead of a reward model's score (a verifiable reward, e.g. "
            "'instructions'); '' for the reward model.",
            "choices": registered_judges,  # a list on the launch page
        },
    )
    judge_path: str = field(
        default="",
        metadata={"help": "The judge's 'module:attribute' (set by the platform)."},
    )
    use_lora: bool = field(
        default=False,
        metadata={
            "help": "Train a LoRA adapter instead of all weights (see training/ppo.py for why not by default)."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    # 1e-3 with no KL term (the defaults until 2026-12-05) collapsed the demo's policy
    # in one round of GRPO or RLOO (GRPO: win rate 0.17-0.59 against SFT on dev seeds
    # 0-3, 20-39 points of accuracy lost, KL up to 112; RLOO, seed 0: 25 points lost);
    # 5e-4 with beta 0.1 kept SFT's accuracy and won 0.66-0.74 (docs/loop.md, "GRPO's
    # loop settings").
    learning_rate: float = field(
        default=5e-4,
        metadata={
            "help": "AdamW learning rate; TRL's 1e-6 is for large models and moves a tiny one not at all."
        },
    )
    num_generations: int = field(
        default=4, metadata={"help": "Completions per prompt (the group)."}
    )
    per_device_train_batch_size: int = field(
        default=16,
        metadata={
            "help": "Completions per device per step; a multiple of num_generations."
        },
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated per optimiser step."}
    )
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Passes over the prompts."}
    )
    max_steps: int = field(
        default=-1,
        metadata={"help": "Stop after this many optimiser steps (-1: run the epochs)."},
    )
    max_completion_length: int = field(
        default=32, metadata={"help": "Longest completion sampled."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    beta: float = field(
        default=0.1,
        metadata={
            "help": "KL coefficient to the reference (GRPO: in the loss; RLOO: inside "
            "the reward; 0: no reference pass)."
        },
    )
    epsilon: float = field(default=0.2, metadata={"help": "Policy ratio clip."})
    save_steps: int = field(
        default=50, metadata={"help": "Checkpoint every this many steps."}
    )
    logging_steps: int = field(
        default=1, metadata={"help": "Report metrics every this many steps."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for data order and sampling."})
    bf16: Precision = bf16_field()
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Other fields of TRL's config (trl.GRPOConfig, trl.RLOOConfig) that shape the optimisation or the loss (see training/trl_args.py)."
        },
    )

    def __post_init__(self) -> None:
        check_ensemble_paths(self.reward_ensemble_paths)
        if self.judge and (self.reward_model_path or self.reward_ensemble_paths):
            raise ValueError(
                f"judge {self.judge!r} gives the reward, so the reward model "
                f"{self.reward_model_path or self.reward_ensemble_paths[0]!r} would go "
                "unused: drop the judge, or the reward stage / reward_model option"
            )
        check_judge_path(self.judge, self.judge_path)
        check_range("lora_r", self.lora_r, 1, None)
        check_range("lora_alpha", self.lora_alpha, 1, None)
        check_bf16(self.bf16)
        check_range("learning_rate", self.learning_rate, 0, None, low_open=True)
        check_range("num_generations", self.num_generations, 2, None)
        check_range(
            "per_device_train_batch_size", self.per_device_train_batch_size, 1, None
        )
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size must be a multiple of num_generations, got "
                f"{self.per_device_train_batch_size} and {self.num_generations}"
            )
        check_range(
            "gradient_accumulation_steps", self.gradient_accumulation_steps, 1, None
        )
        check_range("num_train_epochs", self.num_train_epochs, 0, None, low_open=True)
        if self.max_steps != -1:
            check_range("max_steps", self.max_steps, 1, None)
        check_range("max_completion_length", self.max_completion_length, 1, None)
        check_range("temperature", self.temperature, 0, None, low_open=True)
        check_range("beta", self.beta, 0, None)
        check_range("epsilon", self.epsilon, 0, None, low_open=True)
        check_range("save_steps", self.save_steps, 1, None)
        check_range("logging_steps", self.logging_steps, 1, None)
        check_trl_args(
            self.METHOD, self.trl_args, {f.name for f in dataclasses.fields(self)}
        )


@dataclass
class GRPOConfig(GroupConfig):
    """What a GRPO stage needs; field names follow `trl.GRPOConfig` where they are TRL's."""

    METHOD: ClassVar[str] = "grpo"

    loss_type: str = field(
        default="dapo",
        metadata={"help": "TRL's loss normalisation: grpo, dr_grpo, dapo, bnpo, ..."},
    )


def train(
    config: GRPOConfig,
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Optimise the policy with GRPO on the prompts of `data_path`; save it into `output_dir`.

    Return TRL's last logged metrics (reward, reward_std, kl, entropy, ...)
    plus `steps` and `stopped`.
    """
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    return train_group(
        config,
        TRLGRPOConfig,
        GRPOTrainer,
        {"loss_type": config.loss_type},
        data_path=data_path,
        output_dir=output_dir,
        reporter=reporter,
        resume_from=resume_from,
    )


def train_group(
    config: GroupConfig,
    trl_config: type,
    trainer_class: type,
    method_args: dict[str, Any],
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Run one group-sampling stage: `trainer_class` (TRL's GRPOTrainer or
    RLOOTrainer) configured by `trl_config` from the shared fields plus the
    method's own `method_args`; save the policy into `output_dir`.

    Long on purpose: it reads top to bottom as the steps of one run (load the
    data, the tokenizer and the model, configure TRL, train, save), each a few
    lines that share the same locals.
    """
    from datasets import Dataset

    from inference.scoring import judge_reward_function, reward_function

    if data_path is None:
        raise ValueError(
            f"{config.METHOD.upper()} needs data_path: a JSONL whose prompt column "
            "gives the prompts"
        )
    if not config.reward_model_path and not config.judge_path:
        raise ValueError(
            "reward_model_path is empty; give the output folder of a reward stage "
            "(or a judge that offers a reward)"
        )
    if config.judge_path:
        scorer = judge_reward_function(config.judge_path)
    else:
        # One file a process: each normalises an ensemble on the batches it scores.
        rank = int(os.environ.get("RANK", "0"))
        scorer = reward_function(
            config.reward_model_path,
            ensemble=config.reward_ensemble_paths,
            norm_file=reporter.run_dir / f"{SCORE_NORM_FILE}-{rank}.json",
        )
    dataset = Dataset.from_list([{"prompt": p} for p in prompt_rows(Path(data_path))])
    tokenizer = load_tokenizer(config.base_path, padding_side="left")
    model = load_policy(config.base_path, config.adapter_path, merge=True)
    if config.adapter_path and not config.use_lora and config.beta > 0:
        # TRL reloads the reference from the model's own folder: give it the
        # merged parent there, not the bare base.
        merged = reporter.run_dir / "merged-parent"
        model.save_pretrained(merged)
        model = load_policy(str(merged))
    peft_config = (
        lora_config(config.lora_r, config.lora_alpha, 0.0) if config.use_lora else None
    )

    args = trl_config(
        output_dir=str(reporter.checkpoint_dir),
        report_to="none",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        **precision_args(config.bf16),
        activation_checkpointing=False,
        learning_rate=config.learning_rate,
        num_generations=config.num_generations,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        epsilon=config.epsilon,
        seed=config.seed,
        data_seed=config.seed,
        **method_args,
        **config.trl_args,
    )
    trainer = trainer_class(
        model=model,
        reward_funcs=scorer,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[trainer_callback(reporter)],
    )
    metrics = train_to_end(trainer, resume_from, reporter)
    if scorer.statistics is not None:
        metrics["score_shift"], metrics["score_scale"] = scorer.statistics
    if metrics["stopped"]:
        return metrics
    policy = trainer.model
    if config.adapter_path and config.use_lora:
        policy = policy.merge_and_unload()
    save_artifact(policy, tokenizer, output_dir, config.to_dict())
    return metrics
