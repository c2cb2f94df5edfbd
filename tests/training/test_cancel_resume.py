"""Rounds run by a real db_worker process: success, cancel, crash and resume, failure, reaping.

These use the test stage "sleep" (tests/training/sleep_stage.py): it counts steps, reports
metrics, checkpoints every few steps and honours STOP, so the worker machinery is
tested without training a model.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from inference.cards import read_card_metadata
from inference.models import Policy
from tests.training.conftest import wait_for
from training.models import Status, TrainingJob, TrainingRound
from training.progress import Reporter, read_progress
from training.reaper import current_worker
from training.rounds import cancel_round
from training.tasks import launch, resume

pytestmark = pytest.mark.slow


def launch_sleep(
    project, admin_user, start_policy, method="sleep", **sleep
) -> TrainingRound:
    config = {"steps": 6, "step_seconds": 0.02, "checkpoint_every": 5, **sleep}
    options = {
        "policy": start_policy.name,
        **{stage: dict(config) for stage in method.split(",")},
    }
    return launch(project, method, user=admin_user, options=options)


def round_status(training_round: TrainingRound) -> str:
    return TrainingRound.objects.get(pk=training_round.pk).status


def wait_until_finished(
    training_round: TrainingRound, timeout: float = 60.0
) -> TrainingRound:
    wait_for(
        lambda: round_status(training_round) in {"succeeded", "failed", "cancelled"},
        timeout,
        f"round {training_round.pk} to finish",
    )
    return TrainingRound.objects.get(pk=training_round.pk)


def running_past(training_round: TrainingRound, step: int) -> TrainingJob:
    """Wait until a stage of the round runs past `step` with its pid recorded; return its job."""
    return wait_for(
        lambda: TrainingJob.objects.filter(
            round=training_round, step__gte=step, pid__isnull=False
        ).first(),
        what=f"the stage to pass step {step}",
    )


def first_job(training_round: TrainingRound) -> TrainingJob:
    return TrainingJob.objects.get(round=training_round, index=0)


def test_a_round_runs_in_the_worker_and_registers_its_policy_with_lineage(
    project, admin_user, start_policy, start_worker
):
    start_worker()
    training_round = launch_sleep(project, admin_user, start_policy, steps=6)

    finished = wait_until_finished(training_round)

    job = first_job(training_round)
    assert finished.status == Status.SUCCEEDED
    assert (job.status, job.step, job.total_steps) == ("succeeded", 6, 6)
    assert [point["step"] for point in job.history] == [1, 2, 3, 4, 5, 6]
    policy = finished.output_policy
    assert policy.name == f"demo-round{training_round.pk}-1-sleep"
    assert policy.parent == start_policy
    assert policy.base_path == str(Path(job.run_dir) / "output")
    assert policy.config == job.config
    assert job.output_policy == policy
    card = read_card_metadata(Path(policy.base_path))["feedback_loop"]
    assert (card["parent"], card["method"]) == (start_policy.name, "sleep")


def test_each_stage_starts_from_the_previous_stage_output(
    project, admin_user, start_policy, start_worker
):
    start_worker()
    training_round = launch_sleep(
        project, admin_user, start_policy, method="sleep,sleep", steps=2
    )

    finished = wait_until_finished(training_round)

    first, second = TrainingJob.objects.filter(round=training_round).order_by("index")
    assert finished.status == Status.SUCCEEDED
    assert first.config["base_path"] == start_policy.base_path
    assert second.config["base_path"] == str(Path(first.run_dir) / "output")
    assert second.output_policy.parent == first.output_policy
    assert first.output_policy.parent == start_policy
    assert finished.output_policy == second.output_policy


def test_a_killed_stage_fails_with_its_log_and_resumes_from_its_checkpoint(
    project, admin_user, start_policy, start_worker
):
    start_worker()
    training_round = launch_sleep(
        project,
        admin_user,
        start_policy,
        steps=40,
        step_seconds=0.1,
        checkpoint_every=5,
    )
    job = running_past(training_round, 12)
    os.kill(job.pid, signal.SIGSTOP)  # freeze it, so the checkpoint we read is its last
    last = int(Reporter(job.run_dir).last_checkpoint().name.split("-")[1])
    os.kill(job.pid, signal.SIGKILL)

    failed = wait_until_finished(training_round)
    job.refresh_from_db()
    assert failed.status == Status.FAILED
    assert failed.error.startswith("stage 1 (sleep) failed:")
    assert "killed by SIGKILL" in job.error
    assert Policy.objects.count() == 1  # only the starting policy

    # What a kill during a save leaves: resume must not start from either.
    checkpoints = Path(job.run_dir) / "checkpoints"
    (checkpoints / f"checkpoint-{last + 5}").mkdir()
    (checkpoints / f".tmp-checkpoint-{last + 6}").mkdir()
    resume(failed, user=admin_user)
    finished = wait_until_finished(training_round)

    job.refresh_from_db()
    assert sorted(p.name for p in checkpoints.iterdir() if "-" in p.name) == sorted(
        f"checkpoint-{step}" for step in range(5, 41, 5)
    )
    assert (
        "removed half-written checkpoints"
        in (Path(job.run_dir) / "stage.log").read_text()
    )
    lines, _ = read_progress(job.run_dir)
    resumed = [line for line in lines if line["resumed_from"] > 0]
    assert finished.status == Status.SUCCEEDED
    assert last >= 10
    assert resumed[0]["resumed_from"] == last
    assert resumed[0]["step"] == last + 1
    assert (
        json.loads((Path(job.run_dir) / "result.json").read_text())["resumed_from"]
        == last
    )
    assert [point["step"] for point in job.history] == list(range(1, 41))


def test_cancel_stops_the_running_stage_at_a_checkpoint_and_registers_nothing(
    project, admin_user, start_policy, start_worker
):
    start_worker()
    training_round = launch_sleep(
        project,
        admin_user,
        start_policy,
        method="sleep,sleep",
        steps=400,
        step_seconds=0.05,
    )
    job = running_past(training_round, 3)

    cancel_round(training_round, user=admin_user)
    wait_for(
        lambda: TrainingJob.objects.get(pk=job.pk).status == "cancelled",
        what="the stage to stop",
    )

    job.refresh_from_db()
    second = TrainingJob.objects.get(round=training_round, index=1)
    assert round_status(training_round) == Status.CANCELLED
    assert second.status == Status.CANCELLED
    assert Policy.objects.count() == 1
    assert (Path(job.run_dir) / f"checkpoints/checkpoint-{job.step}").is_dir()
    assert (
        "stopped on request (exit status 3)"
        in (Path(job.run_dir) / "stage.log").read_text()
    )


def test_a_stage_that_ignores_stop_is_terminated(
    project, admin_user, start_policy, start_worker
):
    start_worker()
    training_round = launch(
        project,
        "sleep",
        user=admin_user,
        options={
            "policy": start_policy.name,
            "stop_grace_seconds": "1",
            "sleep": {"steps": 400, "step_seconds": 0.05, "ignore_stop": True},
        },
    )
    job = running_past(training_round, 2)

    cancel_round(training_round, user=admin_user)
    wait_for(
        lambda: TrainingJob.objects.get(pk=job.pk).status == "cancelled",
        what="the stage to be terminated",
    )

    log = (Path(job.run_dir) / "stage.log").read_text()
    assert "stopped on request after SIGTERM (exit status -15)" in log


def test_a_failing_stage_records_its_error_text(
    project, admin_user, start_policy, start_worker
):
    start_worker()
    training_round = launch_sleep(
        project, admin_user, start_policy, steps=6, fail_at_step=3
    )

    failed = wait_until_finished(training_round)

    job = first_job(training_round)
    assert failed.status == Status.FAILED
    assert failed.error == (
        "stage 1 (sleep) failed: RuntimeError: sleep stage failed at step 3 as "
        "configured (fail_at_step)"
    )
    assert "exit status 1" in job.error
    assert "Traceback" in job.error
    assert failed.output_policy is None
    assert Policy.objects.count() == 1


def test_a_job_whose_worker_died_is_reaped_and_the_round_resumes(
    project, admin_user, start_policy, start_worker
):
    worker = start_worker()
    training_round = launch_sleep(
        project,
        admin_user,
        start_policy,
        steps=30,
        step_seconds=0.1,
        checkpoint_every=5,
    )
    job = running_past(training_round, 7)
    worker.kill()
    # The child dies with its worker (PR_SET_PDEATHSIG): no orphan keeps training.
    wait_for(
        lambda: (
            not Path(f"/proc/{job.pid}").exists()
            or "zombie" in Path(f"/proc/{job.pid}/status").read_text()
        ),
        timeout=10,
        what="the stage process to die",
    )

    # Restarted as a process supervisor would, the worker fails the job at once: the
    # job names its dead process, and the reaper is the first task the worker finds.
    start_worker()
    wait_for(
        lambda: round_status(training_round) == Status.FAILED,
        timeout=20,
        what="the restarted worker to fail the dead worker's job",
    )
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert "is gone" in job.error

    resume(TrainingRound.objects.get(pk=training_round.pk), user=admin_user)
    finished = wait_until_finished(training_round)
    job.refresh_from_db()
    assert finished.status == Status.SUCCEEDED
    assert job.last_metrics["resumed_from"] >= 5


def test_a_dpo_round_trains_in_the_worker_and_registers_an_adapter_with_lineage(
    project, admin_user, start_worker, tiny_model_dir
):
    from io import StringIO

    from django.core.management import call_command

    from tests.annotation.data_factories import annotators, make_task, rank

    parent = Policy.objects.create(name="tiny", base_path=str(tiny_model_dir))
    project.current_policy = parent
    project.save()
    user = annotators(1)[0]
    for prompt in ("What does the red cat like?", "What does the big fox like?"):
        rank(
            make_task(
                project,
                prompt,
                ("It likes fish.", "Seeds.", "Apples, I think.", "No."),
                policy=parent,
            ),
            user,
            [[0], [1], [2], [3]],
        )
    start_worker()
    out = StringIO()

    call_command(
        "launch_round",
        "--project",
        "demo",
        "--method",
        "dpo",
        "--set",
        "dpo.max_steps=2",
        "--set",
        "dpo.per_device_train_batch_size=4",
        "--set",
        "dpo.save_steps=1",
        "--wait",
        "--poll",
        "0.5",
        stdout=out,
    )

    training_round = TrainingRound.objects.get()
    job = first_job(training_round)
    policy = training_round.output_policy
    lines = out.getvalue().splitlines()
    assert lines[-1] == f"training round {training_round.pk} succeeded: {policy.name}"
    assert "[##############################] 100%" in out.getvalue()
    assert (job.step, job.total_steps) == (2, 2)
    assert (policy.parent, policy.base_path) == (parent, str(tiny_model_dir))
    assert policy.adapter_path == str(Path(job.run_dir) / "output")
    assert (Path(policy.adapter_path) / "adapter_config.json").is_file()
    assert (policy.snapshot_name, policy.snapshot_sha256) == (
        training_round.snapshot.name,
        training_round.snapshot.sha256,
    )
    assert training_round.snapshot.row_count == 12
    assert policy.config["max_steps"] == 2
    assert isinstance(job.history[0]["loss"], float)


def stage_starts(job: TrainingJob) -> int:
    """Return how many times a runner started the job's stage (its log's `$ ` lines)."""
    log = Path(job.run_dir) / "stage.log"
    if not log.exists():
        return 0
    return sum(line.startswith("$ ") for line in log.read_text().splitlines())


def test_an_in_process_runner_waits_for_the_stage_a_worker_claimed_first(
    project, admin_user, start_policy, start_worker
):
    """`run_loop` runs a round's stages in its own process while `make run`'s worker
    takes the queued tasks too. Here the worker claims stage 1: the in-process runner
    must wait for it, not start stage 2 on an input that is not there yet (one README
    run in three lost round 3's DPO output and failed its evaluation this way)."""
    from training.loop import drain_round

    start_worker()
    training_round = launch_sleep(
        project,
        admin_user,
        start_policy,
        method="sleep,sleep",
        steps=20,
        step_seconds=0.1,
    )
    wait_for(
        lambda: first_job(training_round).status == Status.RUNNING,
        what="the worker to claim stage 1",
    )

    drain_round(training_round, poll_seconds=0.1)

    finished = TrainingRound.objects.get(pk=training_round.pk)
    first, second = TrainingJob.objects.filter(round=training_round).order_by("index")
    assert finished.status == Status.SUCCEEDED, finished.error
    assert (first.status, second.status) == (Status.SUCCEEDED, Status.SUCCEEDED)
    assert first.worker != current_worker()  # the worker ran stage 1
    assert second.started_at >= first.finished_at
    assert (stage_starts(first), stage_starts(second)) == (1, 1)
    assert Path(second.config["base_path"]) == Path(first.run_dir) / "output"
    assert finished.output_policy == second.output_policy


def test_a_worker_beside_an_in_process_runner_leaves_its_stage_alone(
    project, admin_user, start_policy, start_worker
):
    """The in-process runner claims stage 1 before the worker is up; the worker then
    finds its task (and the reaper's) and must neither run the stage again nor fail
    it as a lost worker's: the runner's process lives."""
    from django_tasks_db.models import DBTaskResult

    from training.loop import drain_round

    training_round = launch_sleep(
        project,
        admin_user,
        start_policy,
        method="sleep,sleep",
        steps=40,
        step_seconds=0.1,
    )
    task_id = first_job(training_round).task_id
    start_worker()

    drain_round(training_round, poll_seconds=0.1)

    finished = TrainingRound.objects.get(pk=training_round.pk)
    first, second = TrainingJob.objects.filter(round=training_round).order_by("index")
    assert finished.status == Status.SUCCEEDED, finished.error
    assert first.worker == current_worker()  # this process ran stage 1
    assert second.started_at >= first.finished_at
    assert (stage_starts(first), stage_starts(second)) == (1, 1)
    skipped = wait_for(
        lambda: DBTaskResult.objects.filter(id=task_id, status="SUCCESSFUL").first(),
        what="the worker to take stage 1's task",
    )
    assert skipped.return_value == {"job": first.pk, "status": "skipped"}


def cut_database(connection, seconds: float) -> None:
    """Do to every other connection of the test database what a PostgreSQL restart
    does: end its backend, and refuse new connections for `seconds` (without
    restarting the server other tests use)."""
    db_name = connection.settings_dict["NAME"]
    # From the server's maintenance database, as an admin would (not from this one).
    admin = connection.Database.connect(
        **{**connection.get_connection_params(), "dbname": "postgres"}
    )
    admin.autocommit = True
    quoted = connection.ops.quote_name(db_name)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS false")
            try:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> %s",
                    [db_name, connection.connection.info.backend_pid],
                )
                time.sleep(seconds)
            finally:
                cursor.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS true")
    finally:
        admin.close()


def test_a_worker_waits_out_a_database_restart_idle_or_running_a_stage(
    project, admin_user, start_policy, start_worker
):
    """PostgreSQL restarting cuts the worker's connection and refuses its reconnects
    for a few seconds; django-tasks-db's own worker exited then, and a stage's
    progress writes failed from then on. The worker must live through it idle, and
    a stage running through it must still succeed."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("restarts a PostgreSQL connection")
    worker = start_worker()
    wait_for(
        lambda: "Starting worker" in worker.log.read_text(), what="the worker to start"
    )

    cut_database(connection, 3)

    assert worker.proc.poll() is None, worker.log.read_text()[-2000:]
    training_round = launch_sleep(
        project, admin_user, start_policy, steps=60, step_seconds=0.1
    )
    wait_for(
        lambda: TrainingJob.objects.filter(round=training_round, step__gte=3).exists(),
        what="the stage to run",
    )
    cut_database(connection, 3)
    assert wait_until_finished(training_round).status == Status.SUCCEEDED
    assert worker.proc.poll() is None
    log = worker.log.read_text()
    assert "lost the database" in log
    assert "could not write progress" in log
