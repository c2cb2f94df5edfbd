"""The test stage "sleep": counts steps, reports a falling loss, honours STOP, checkpoints.

It trains nothing, so the worker machinery (cancel, crash, resume, failure
reporting) is tested without a model. It resumes from its newest checkpoint as a
trainer does. Importing this module registers it (hidden from the launch page);
the training conftest imports it, and passes TRAINING_STAGE_MODULES to the
worker processes it starts so they register it too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.progress import Reporter
from training.stages import POLICY, StageSpec, register


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
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown SleepConfig option(s) {unknown}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain values."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def train(
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
            with reporter.new_checkpoint(step) as folder:
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


SLEEP = register(
    StageSpec(
        "sleep",
        f"{__name__}.SleepConfig",
        f"{__name__}.train",
        POLICY,
        "",
        help="Test stage: counts steps, trains nothing.",
        hidden=True,
        evaluated=False,
    )
)
