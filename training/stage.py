"""The training child process: `python -m training.stage RUN_DIR` runs one stage.

It reads `config.json` from the run directory (written by the worker), calls the
stage's trainer with a `Reporter` on that directory, and writes `result.json` only
when the stage finished and was not asked to stop. No Django: the child never
touches the database; the worker tails `progress.jsonl` onto the job row.

config.json is an envelope: {"stage": "dpo", "config": {...resolved trainer
config...}, "data_path": "/.../preferences.jsonl" or null}.

Exit status: 0 success (result.json written), 3 stopped on request (STOP file),
anything else a failure whose traceback is in stage.log.

The stage "evaluate" (appended to every round that trains a policy) runs
training/evaluation.py on held-out prompts: win rate against the parent, KL,
length, diversity. The stage "sleep" is the platform's test stage, not a trainer: it counts steps,
reports a falling loss, honours STOP, checkpoints every few steps and resumes from
its newest checkpoint, so the worker machinery (cancel, crash, resume, failure
reporting) is tested without training a model.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.progress import CONFIG_FILE, Reporter

EXIT_STOPPED = 3

# Trainer modules and their config classes, by stage name.
TRAINERS = {
    "sft": ("training.sft", "SFTConfig"),
    "reward": ("training.reward", "RewardConfig"),
    "dpo": ("training.dpo", "DPOConfig"),
    "ppo": ("training.ppo", "PPOConfig"),
    "grpo": ("training.grpo", "GRPOConfig"),
    "rloo": ("training.rloo", "RLOOConfig"),
}


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build the dataclass `cls` from a dict, refusing keys it does not know."""
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} option(s) {unknown}; expected {sorted(known)}"
        )
    return cls(**data)


@dataclass
class SleepConfig:
    """The test stage: steps of a fixed duration, checkpoints, optional failure."""

    steps: int = field(default=20, metadata={"help": "Steps to count."})
    step_seconds: float = field(default=0.05, metadata={"help": "Seconds per step."})
    checkpoint_every: int = field(
        default=5, metadata={"help": "Checkpoint every N steps."}
    )
    fail_at_step: int = field(
        default=0, metadata={"help": "Raise an error at this step (0: never)."}
    )
    ignore_stop: bool = field(
        default=False, metadata={"help": "Ignore STOP, to test escalation to SIGTERM."}
    )
    base_path: str = field(default="", metadata={"help": "Starting policy (unused)."})
    adapter_path: str = field(
        default="", metadata={"help": "Starting adapter (unused)."}
    )

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.step_seconds < 0:
            raise ValueError(f"step_seconds must be >= 0, got {self.step_seconds}")
        if self.checkpoint_every < 1:
            raise ValueError(
                f"checkpoint_every must be >= 1, got {self.checkpoint_every}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SleepConfig:
        """Build a config from a dict, refusing unknown keys."""
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain values."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def train_sleep(
    config: SleepConfig,
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Count steps from the checkpoint (or zero), reporting and checkpointing as a trainer does."""
    start = 0
    if resume_from is not None:
        start = json.loads((resume_from / "state.json").read_text())["step"]
    for step in range(start + 1, config.steps + 1):
        time.sleep(config.step_seconds)
        if config.fail_at_step and step == config.fail_at_step:
            raise RuntimeError(
                f"sleep stage failed at step {step} as configured (fail_at_step)"
            )
        reporter.log(
            step,
            config.steps,
            loss=1.0 / step,
            reward=step / config.steps,
            kl=0.01 * step,
            resumed_from=start,
        )
        stopping = reporter.should_stop() and not config.ignore_stop
        if step % config.checkpoint_every == 0 or stopping:
            folder = reporter.checkpoint_dir / f"checkpoint-{step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "state.json").write_text(json.dumps({"step": step}))
        if stopping:
            return {"steps": step, "stopped": 1, "resumed_from": start}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "training_config.json").write_text(json.dumps(config.to_dict()))
    return {
        "steps": config.steps,
        "loss": 1.0 / config.steps,
        "stopped": 0,
        "resumed_from": start,
    }


@dataclass
class EvaluateConfig:
    """The evaluation stage: the round's policy against its parent on held-out prompts."""

    prompts: int = field(
        default=16, metadata={"help": "Held-out prompts to evaluate on."}
    )
    max_new_tokens: int = field(
        default=64, metadata={"help": "Longest sampled response."}
    )
    diversity_samples: int = field(
        default=4, metadata={"help": "Samples per prompt for distinct-n and self-BLEU."}
    )
    judge: str = field(
        default="",
        metadata={
            "help": "'demo': also judge with the demo domain's rule-based judge."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for sampling."})
    base_path: str = field(
        default="", metadata={"help": "The policy's base (set by the platform)."}
    )
    adapter_path: str = field(
        default="", metadata={"help": "The policy's adapter (set by the platform)."}
    )
    parent_base_path: str = field(
        default="", metadata={"help": "The parent's base (set by the platform)."}
    )
    parent_adapter_path: str = field(
        default="", metadata={"help": "The parent's adapter (set by the platform)."}
    )
    reward_model_path: str = field(
        default="",
        metadata={"help": "The round's reward model, if any (set by the platform)."},
    )

    def __post_init__(self) -> None:
        for name in ("prompts", "max_new_tokens", "diversity_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.judge not in ("", "demo"):
            raise ValueError(f"judge must be '' or 'demo', got {self.judge!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluateConfig:
        """Build a config from a dict, refusing unknown keys."""
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain values."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def train_evaluate(
    config: EvaluateConfig,
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Evaluate the policy against its parent (training/evaluation.py); return the metrics."""
    from training.evaluation import evaluate_policy

    if data_path is None:
        raise ValueError("evaluation needs data_path: a JSONL of held-out prompts")
    prompts = [
        json.loads(line)["prompt"]
        for line in data_path.read_text().splitlines()
        if line.strip()
    ]
    judge = None
    if config.judge == "demo":
        from annotation.demo_domain import judge_compare

        def judge(prompt: Any, a: str, b: str) -> float:
            return (judge_compare(prompt, a, b) + 1) / 2

    reporter.log(0, 1)
    metrics = evaluate_policy(
        (config.base_path, config.adapter_path),
        (config.parent_base_path, config.parent_adapter_path),
        prompts[: config.prompts],
        reward_model_path=config.reward_model_path,
        judge=judge,
        max_new_tokens=config.max_new_tokens,
        diversity_samples=config.diversity_samples,
        seed=config.seed,
    )
    reporter.log(1, 1, **metrics)
    return {**metrics, "evaluated": 1.0}


def load_trainer(stage: str) -> tuple[type, Any]:
    """Return the config class and `train` function of a stage."""
    if stage == "sleep":
        return SleepConfig, train_sleep
    if stage == "evaluate":
        return EvaluateConfig, train_evaluate
    if stage not in TRAINERS:
        raise ValueError(
            f"unknown stage {stage!r}; expected one of {sorted(TRAINERS)} or sleep"
        )
    module_name, class_name = TRAINERS[stage]
    module = importlib.import_module(module_name)
    return getattr(module, class_name), module.train


def run(run_dir: Path) -> int:
    """Run the stage described by `run_dir/config.json`; return the exit status."""
    envelope = json.loads((run_dir / CONFIG_FILE).read_text())
    config_class, train = load_trainer(envelope["stage"])
    config = config_class.from_dict(envelope["config"])
    reporter = Reporter(run_dir)
    resume_from = reporter.last_checkpoint()
    if resume_from is not None:
        print(f"resuming from {resume_from}", flush=True)
    data_path = Path(envelope["data_path"]) if envelope.get("data_path") else None
    metrics = train(
        config,
        data_path=data_path,
        output_dir=reporter.output_dir,
        reporter=reporter,
        resume_from=resume_from,
    )
    if metrics.get("stopped") or reporter.should_stop():
        print("stopped on request; checkpoint kept, no result written", flush=True)
        return EXIT_STOPPED
    # Under `accelerate launch` every rank runs this; only the main one writes the result.
    if os.environ.get("RANK", "0") == "0":
        reporter.write_result(metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: one argument, the run directory."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m training.stage RUN_DIR", file=sys.stderr)
        return 2
    return run(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
