"""The training child process: `python -m training.stage RUN_DIR` runs one stage.

It reads `config.json` from the run directory (written by the worker), calls the
stage's trainer with a `Reporter` on that directory, and writes `result.json` only
when the stage finished and was not asked to stop. No Django: the child never
touches the database; the worker tails `progress.jsonl` onto the job row.

config.json is an envelope: {"stage": "dpo", "config_class": "training.dpo.DPOConfig",
"trainer": "training.dpo.train", "config": {...resolved trainer config...},
"data_path": "/.../preferences.jsonl" or null}.

Before the stage, it makes TRL's LM head lean on the CPU (training/lm_head.py);
after it, it prints what running batches without their padding saved
(training/padding.py, which the SFT and DPO stages install on their models).

Exit status: 0 success (result.json written), 3 stopped on request (STOP file),
anything else a failure whose traceback is in stage.log.

The stage "evaluate" (appended to every round that trains a policy) runs
training/evaluation.py on held-out prompts: win rate against the parent, KL,
length, diversity.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.judges import check_judge_path, registered_judges
from training.progress import CONFIG_FILE, Reporter
from training.stages import get_stage, import_object

EXIT_STOPPED = 3


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
            "help": "A registered judge that also compares the samples, e.g. 'demo' "
            "(inference.judges); '' for none.",
            "choices": registered_judges,  # a list on the launch page
        },
    )
    judge_path: str = field(
        default="",
        metadata={"help": "The judge's 'module:attribute' (set by the platform)."},
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
        check_judge_path(self.judge, self.judge_path)

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
    if config.judge_path:
        from inference.judges import load_judge, win_probability

        judge = win_probability(load_judge(config.judge_path))
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


def load_trainer(envelope: dict[str, Any]) -> tuple[type, Any]:
    """Return the config class and `train` function the envelope names.

    The worker writes their dotted paths into the envelope, so a stage registered
    outside the product (the tests' stage) runs too; an envelope with only a stage
    name is looked up in the registry (training/stages.py).
    """
    if envelope.get("config_class") and envelope.get("trainer"):
        return import_object(envelope["config_class"]), import_object(
            envelope["trainer"]
        )
    spec = get_stage(envelope["stage"])
    return spec.config_class(), spec.train_function()


def run(run_dir: Path) -> int:
    """Run the stage described by `run_dir/config.json`; return the exit status."""
    from training import padding
    from training.lm_head import use_lean_cpu_head

    use_lean_cpu_head()
    envelope = json.loads((run_dir / CONFIG_FILE).read_text())
    config_class, train = load_trainer(envelope)
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
    line = padding.summary()
    if line:
        print(line, flush=True)
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
