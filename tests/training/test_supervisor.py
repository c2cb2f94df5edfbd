"""The stage child process and its supervisor, without a database."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.training.sleep_stage import SLEEP
from training.jobs import merge_history
from training.progress import Reporter
from training.stage import EXIT_STOPPED
from training.supervisor import stage_command, supervise, tail


def sleep_run_dir(path: Path, **config) -> Path:
    envelope = {
        "stage": "sleep",
        "config_class": SLEEP.config,
        "trainer": SLEEP.trainer,
        "config": {"step_seconds": 0.0, **config},
        "data_path": None,
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(envelope))
    return path


def test_a_stage_that_finishes_writes_its_result_and_exits_zero(tmp_path):
    run_dir = sleep_run_dir(tmp_path, steps=4, checkpoint_every=2)
    seen: list[int] = []

    outcome = supervise(
        stage_command(run_dir),
        run_dir,
        on_tick=lambda lines: seen.extend(line["step"] for line in lines) and False,
    )

    assert (outcome.returncode, outcome.succeeded, outcome.stopped) == (0, True, False)
    assert seen == [1, 2, 3, 4]
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 4
    assert Reporter(run_dir).last_checkpoint().name == "checkpoint-4"


def test_a_stop_request_writes_stop_and_the_stage_exits_without_result(tmp_path):
    run_dir = sleep_run_dir(tmp_path, steps=1000, step_seconds=0.01)

    outcome = supervise(
        stage_command(run_dir), run_dir, on_tick=lambda lines: True, tick_seconds=0.2
    )

    assert (outcome.returncode, outcome.stopped, outcome.escalation) == (
        EXIT_STOPPED,
        True,
        "",
    )
    assert (run_dir / "STOP").exists() is True
    assert (run_dir / "result.json").exists() is False
    assert Reporter(run_dir).last_checkpoint() is not None


def test_a_child_that_ignores_stop_and_sigterm_is_killed(tmp_path):
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"

    outcome = supervise(
        [sys.executable, "-c", script],
        tmp_path,
        on_tick=lambda lines: True,
        tick_seconds=0.1,
        stop_grace_seconds=0.3,
        term_grace_seconds=0.3,
    )

    assert (outcome.returncode, outcome.escalation, outcome.stopped) == (
        -9,
        "SIGKILL",
        True,
    )


def test_a_failing_stage_leaves_its_traceback_in_the_log(tmp_path):
    run_dir = sleep_run_dir(tmp_path, steps=5, fail_at_step=2)

    outcome = supervise(stage_command(run_dir), run_dir, on_tick=lambda lines: False)

    assert (outcome.returncode, outcome.succeeded) == (1, False)
    assert (
        tail(run_dir / "stage.log")
        .strip()
        .endswith(
            "RuntimeError: sleep stage failed at step 2 as configured (fail_at_step)"
        )
    )


def test_a_stage_resumes_from_its_newest_checkpoint(tmp_path):
    run_dir = sleep_run_dir(tmp_path, steps=8, checkpoint_every=3)
    with Reporter(run_dir).new_checkpoint(6) as folder:
        (folder / "state.json").write_text('{"step": 6}')

    supervise(stage_command(run_dir), run_dir, on_tick=lambda lines: False)

    steps = [
        json.loads(line)["step"]
        for line in (run_dir / "progress.jsonl").read_text().splitlines()
    ]
    assert steps == [7, 8]


def test_an_unknown_accelerate_config_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(
        ValueError, match="accelerate config 'warp-drive' does not exist"
    ):
        stage_command(tmp_path, "warp-drive")


def test_an_accelerate_config_runs_the_stage_through_accelerate_launch(tmp_path):
    command = stage_command(tmp_path, "cpu")

    assert command[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert command[4].endswith("platform/accelerate/cpu.yaml")
    assert command[-3:] == ["-m", "training.stage", str(tmp_path)]


def test_history_rewinds_to_the_checkpoint_a_resumed_run_starts_from():
    history = merge_history(
        [], [{"step": s, "total": 9, "loss": 1.0, "time": 0} for s in (1, 2, 3, 4)]
    )

    history = merge_history(history, [{"step": 3, "total": 9, "loss": 0.5}])

    assert [(p["step"], p["loss"]) for p in history] == [(1, 1.0), (2, 1.0), (3, 0.5)]


def test_history_merges_lines_of_the_same_step():
    history = merge_history(
        [], [{"step": 5, "loss": 0.2}, {"step": 5, "train_runtime": 3.0}]
    )

    assert history == [{"step": 5, "loss": 0.2, "train_runtime": 3.0}]


def test_history_is_thinned_beyond_its_cap_keeping_the_newest_points():
    history = merge_history([], [{"step": s} for s in range(1, 21)], cap=10)

    assert [p["step"] for p in history] == [
        1,
        3,
        5,
        7,
        9,
        11,
        13,
        15,
        16,
        17,
        18,
        19,
        20,
    ]
