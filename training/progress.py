"""The run-directory contract between a worker and the training process it starts.

A stage's run directory holds:
  config.json       the resolved config (written by the worker before the start)
  progress.jsonl    one JSON object per logged step: {"step", "total", "time", **metrics}
  result.json       the final metrics, written last by a successful stage
  STOP              created by the worker to ask for a graceful stop
  checkpoints/      trainer checkpoints; the newest complete one is resumed from
                    (complete: it holds COMPLETE_MARKER, written after everything
                    else; ours are written under a temporary name and renamed)
  output/           the artifact, renamed into place only when complete
  stage.log         the child's stdout and stderr

The trainers (plain Python, no Django) receive a `Reporter` and never touch the
database; the worker tails progress.jsonl and copies it onto the job row.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
PROGRESS_FILE = "progress.jsonl"
RESULT_FILE = "result.json"
STOP_FILE = "STOP"
CHECKPOINT_DIR = "checkpoints"
OUTPUT_DIR = "output"
LOG_FILE = "stage.log"
CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "checkpoint.complete"
TMP_PREFIX = ".tmp-"


def mark_complete(folder: Path) -> None:
    """Mark a checkpoint folder whole: call it once everything else is written."""
    (folder / COMPLETE_MARKER).write_text("")


def _step(folder: Path) -> int | None:
    """Return the step of a `checkpoint-N` folder's name, or None for any other name."""
    rest = folder.name.removeprefix(CHECKPOINT_PREFIX)
    if rest == folder.name or not rest.isdigit():
        return None
    return int(rest)


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
        """Return the newest complete checkpoint folder, or None to start from zero.

        A folder without its marker is half written (the stage died while saving it)
        and never resumed from.
        """
        if not self.checkpoint_dir.is_dir():
            return None
        found = [
            p
            for p in self.checkpoint_dir.iterdir()
            if p.is_dir() and _step(p) is not None and (p / COMPLETE_MARKER).is_file()
        ]
        return max(found, key=_step, default=None)

    @contextmanager
    def new_checkpoint(self, step: int) -> Iterator[Path]:
        """Yield a temporary folder to write checkpoint `step` into; when the block
        ends, mark it complete and rename it to `checkpoint-<step>`.

        A kill before the rename leaves only the temporary folder, which resume
        ignores and `remove_incomplete_checkpoints` deletes; an error removes it.
        """
        final = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{step}"
        tmp = self.checkpoint_dir / f"{TMP_PREFIX}{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
            mark_complete(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():  # the same step saved again (a stop at a save step)
            old = self.checkpoint_dir / f"{TMP_PREFIX}old-{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)

    def remove_incomplete_checkpoints(self) -> list[str]:
        """Delete what a stage killed while saving left: temporary folders and
        checkpoints without their marker. Return the names removed.

        Only while no stage process runs in this directory (the worker calls it
        before it starts one).
        """
        if not self.checkpoint_dir.is_dir():
            return []
        removed = []
        for path in sorted(self.checkpoint_dir.iterdir()):
            half = path.name.startswith(TMP_PREFIX) or (
                _step(path) is not None and not (path / COMPLETE_MARKER).is_file()
            )
            if half:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

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
    """Return a JSON-safe scalar (tensors and numpy numbers become floats), or a list
    of them (an ensemble's statistics, one per member)."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def trainer_callback(reporter: Reporter, member: tuple[int, int] = (0, 1)):
    """Return a transformers `TrainerCallback` that reports logs and honours STOP.

    `member` (index, count): the run is one of `count` equal runs of a stage (an
    ensemble's members), so its steps are reported after the earlier members'.
    Built lazily so that importing this module never imports transformers.
    """
    index, count = member
    from transformers import TrainerCallback

    class ReporterCallback(TrainerCallback):
        """Copy each Trainer log to progress.jsonl; stop (and checkpoint) on STOP."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                reporter.log(
                    state.global_step + index * state.max_steps,
                    count * state.max_steps,
                    **numbers,
                )

        def on_save(self, args, state, control, **kwargs):
            # The Trainer has written checkpoint-<step> in place; mark it whole once
            # every rank is done with it (a kill before this leaves it unmarked).
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            folder = reporter.checkpoint_dir / f"{CHECKPOINT_PREFIX}{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                mark_complete(folder)

        def on_step_end(self, args, state, control, **kwargs):
            if reporter.should_stop():
                control.should_save = True
                control.should_training_stop = True
            return control

    return ReporterCallback()
