"""The run-directory contract between a worker and the training process it starts.

A stage's run directory holds:
  config.json       the resolved config (written by the worker before the start)
  progress.jsonl    one JSON object per logged step: {"step", "total", "time", **metrics}
  result.json       the final metrics, written last by a successful stage
  STOP              created by the worker to ask for a graceful stop
  checkpoints/      trainer checkpoints; the newest one is resumed from
  output/           the artifact, renamed into place only when complete
  stage.log         the child's stdout and stderr

The trainers (plain Python, no Django) receive a `Reporter` and never touch the
database; the worker tails progress.jsonl and copies it onto the job row.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
PROGRESS_FILE = "progress.jsonl"
RESULT_FILE = "result.json"
STOP_FILE = "STOP"
CHECKPOINT_DIR = "checkpoints"
OUTPUT_DIR = "output"
LOG_FILE = "stage.log"


class Reporter:
    """Write progress lines, answer whether a stop was asked, and find checkpoints."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        self.output_dir = self.run_dir / OUTPUT_DIR

    def log(self, step: int, total: int, **metrics: Any) -> None:
        """Append one progress line; values must be JSON numbers or strings."""
        line = {"step": int(step), "total": int(total), "time": time.time()}
        for key, value in metrics.items():
            line[key] = _plain(value)
        with open(self.run_dir / PROGRESS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()

    def should_stop(self) -> bool:
        """Return whether the worker asked this stage to stop."""
        return (self.run_dir / STOP_FILE).exists()

    def last_checkpoint(self) -> Path | None:
        """Return the newest complete checkpoint folder, or None to start from zero."""
        if not self.checkpoint_dir.is_dir():
            return None
        found = [
            p
            for p in self.checkpoint_dir.iterdir()
            if p.is_dir() and p.name.startswith("checkpoint-") and p.name[11:].isdigit()
        ]
        return max(found, key=lambda p: int(p.name[11:]), default=None)

    def write_result(self, metrics: dict[str, Any]) -> None:
        """Write result.json atomically: its presence means the stage succeeded."""
        tmp = self.run_dir / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps({k: _plain(v) for k, v in metrics.items()}, indent=2))
        os.replace(tmp, self.run_dir / RESULT_FILE)


def read_progress(run_dir: Path | str, offset: int = 0) -> tuple[list[dict], int]:
    """Return progress lines written after byte `offset`, and the new offset.

    A partly written last line is left for the next call.
    """
    path = Path(run_dir) / PROGRESS_FILE
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    lines, consumed = [], 0
    for raw in data.split(b"\n")[:-1]:
        consumed += len(raw) + 1
        if raw.strip():
            lines.append(json.loads(raw))
    return lines, offset + consumed


def _plain(value: Any) -> Any:
    """Return a JSON-safe scalar (tensors and numpy numbers become floats)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def trainer_callback(reporter: Reporter):
    """Return a transformers `TrainerCallback` that reports logs and honours STOP.

    Built lazily so that importing this module never imports transformers.
    """
    from transformers import TrainerCallback

    class ReporterCallback(TrainerCallback):
        """Copy each Trainer log to progress.jsonl; stop (and checkpoint) on STOP."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                reporter.log(state.global_step, state.max_steps, **numbers)

        def on_step_end(self, args, state, control, **kwargs):
            if reporter.should_stop():
                control.should_save = True
                control.should_training_stop = True
            return control

    return ReporterCallback()
