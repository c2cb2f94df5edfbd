"""Task functions of the training app, run by a worker (`manage.py db_worker`, or
`rqworker` with TASK_BACKEND=rq) through the Tasks API.

`run_training_job` runs one stage: it claims the job, writes the run directory,
starts the child process (training/supervisor.py), copies progress and the
heartbeat onto the job row every couple of seconds, turns a cancelled round into
a STOP request, records the outcome (training/jobs.py moves the round on) and
queues the round's next stage. `reap_training_jobs` is the periodic check that
marks jobs of dead workers failed and queues again those whose task was lost.
`launch` and `resume` are the round workflow (training/rounds.py) with the
queueing: the pages, the API, the commands and the loop call them.
"""

from __future__ import annotations

import logging
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    transaction,
)
from django.utils import timezone
from django_tasks import task

from annotation.models import Project
from config import task_queue
from training.jobs import (
    finish_job,
    freeze_round_snapshot,
    merge_history,
    next_job,
    prepare_run_dir,
    start_job,
)
from training.models import Status, TrainingJob, TrainingRound
from training.progress import LOG_FILE, RESULT_FILE
from training.reaper import reap_stale_jobs
from training.rounds import DEFAULT_STOP_GRACE_SECONDS, launch_round, resume_round
from training.supervisor import Outcome, child_env, stage_command, supervise, tail

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
REAP_EVERY_SECONDS = 30.0


class JobWatcher:
    """The supervisor's `on_tick`: progress and heartbeat onto the row, cancel back."""

    def __init__(self, job: TrainingJob) -> None:
        self.job_id = job.pk
        self.round_id = job.round_id
        self.history = list(job.history)
        self.metrics = dict(job.last_metrics)
        self.step = job.step
        self.total = job.total_steps
        self.last_reap = time.monotonic()

    def started(self, pid: int) -> None:
        """Record the child's pid (the round page shows it; tests kill it)."""
        now = timezone.now()
        TrainingJob.objects.filter(pk=self.job_id).update(
            pid=pid, heartbeat_at=now, progress_at=now
        )

    def tick(self, lines: list[dict]) -> bool:
        """Write progress and the heartbeat; return whether the stage must stop."""
        self.history = merge_history(self.history, lines)
        now = timezone.now()
        moved = {"progress_at": now} if lines else {}
        for line in lines:
            self.step, self.total = (
                line.get("step", self.step),
                line.get("total", self.total),
            )
            self.metrics.update(
                {k: v for k, v in line.items() if k not in ("step", "total", "time")}
            )
        try:
            updated = TrainingJob.objects.filter(
                pk=self.job_id, status=Status.RUNNING
            ).update(
                step=max(0, int(self.step)),
                total_steps=max(0, int(self.total)),
                last_metrics=self.metrics,
                history=self.history,
                heartbeat_at=now,
                **moved,
            )
            if time.monotonic() - self.last_reap >= REAP_EVERY_SECONDS:
                self.last_reap = time.monotonic()
                reap_stale_jobs()
            cancelled = TrainingRound.objects.filter(
                pk=self.round_id, status=Status.CANCELLED
            ).exists()
        except (OperationalError, InterfaceError) as exc:
            # A busy or restarting database: keep training, try again at the next
            # tick on a fresh connection if this one broke.
            logger.warning(
                "job %s: could not write progress (%s); retrying", self.job_id, exc
            )
            close_old_connections()
            return False
        # updated == 0: the row left "running" (the reaper gave up on us): stop too.
        return cancelled or updated == 0


def failure_text(outcome: Outcome, run_dir: Path) -> str:
    """Return the error text of a failed stage: how it ended and the end of its log."""
    code = outcome.returncode
    how = f"exit status {code}"
    if code < 0:
        how = f"killed by {signal.Signals(-code).name}"
        if -code == signal.SIGKILL and not outcome.escalation:
            # Nobody here sent it: most often the kernel's out-of-memory killer.
            how += (
                " (not sent by the platform: most often the kernel's out-of-memory "
                "killer, see `dmesg`; give the stage less memory per step: a smaller "
                "per_device_train_batch_size with more gradient_accumulation_steps, "
                "a shorter max_length, or fewer stages at once on this machine)"
            )
    elif code == 0:
        how = "exit status 0 but no result.json"
    return f"stage process ended with {how}.\n--- end of stage.log ---\n{tail(run_dir / LOG_FILE)}"


def enqueue_job(job: TrainingJob) -> None:
    """Queue the job's task on the round's queue and remember the task id: in the
    caller's transaction where the queue is the database, once it commits where it
    is a broker (config/task_queue.py)."""
    queue = job.round.config.get("queue") or "default"
    job_id = job.pk

    def enqueue() -> None:
        result = run_training_job.using(queue_name=queue).enqueue(job_id)
        TrainingJob.objects.filter(pk=job_id).update(task_id=str(result.id))

    task_queue.enqueue_after_commit(enqueue)


def requeue_lost(*, older_than: timedelta = timedelta(seconds=60)) -> list[int]:
    """Queue again the stage that may start now (`next_job`) of every live round
    whose task the broker never got or has lost (an outage when it was queued, a
    crash between the commit and the broker, a Redis that lost its data, a task that
    failed before it could claim its job); return their job ids. The database queue
    loses no task: there this does nothing.

    Only rounds launched `older_than` ago count, so a task on its way is mostly left
    alone; a second task for a job is harmless anyway, as only one runner claims a
    job (`start_job`) and the other skips it.
    """
    if task_queue.uses_database():
        return []
    rounds = TrainingRound.objects.filter(
        status__in=[Status.QUEUED, Status.RUNNING],
        created_at__lt=timezone.now() - older_than,
    ).order_by("pk")[: task_queue.SCAN_LIMIT]
    waiting = [job for job in map(next_job, rounds) if job is not None]
    gone = task_queue.lost(job.task_id for job in waiting)
    requeued = []
    for job in waiting:
        if not job.task_id or job.task_id in gone:
            logger.warning(
                "job %s: the queue has no task %r for it; queueing it again",
                job.pk,
                job.task_id,
            )
            enqueue_job(job)
            requeued.append(job.pk)
    return requeued


def launch(
    project: Project,
    method: str,
    *,
    user: AbstractBaseUser | None,
    options: dict[str, Any] | None = None,
) -> TrainingRound:
    """Launch a round (`training.rounds.launch_round`) and queue its first stage.

    The round, its jobs and the task are written in one transaction, so a refused
    launch leaves none of them behind. Raise ValidationError as `launch_round` does.
    """
    with transaction.atomic():
        training_round = launch_round(project, method, user=user, options=options)
        enqueue_job(training_round.jobs.get(index=0))
    schedule_reaper(queue=training_round.config.get("queue") or "default")
    return training_round


def resume(
    training_round: TrainingRound, *, user: AbstractBaseUser | None = None
) -> TrainingJob:
    """Resume a round (`training.rounds.resume_round`) and queue the stage it restarts at.

    Return that job. Raise ValidationError as `resume_round` does.
    """
    with transaction.atomic():
        job = resume_round(training_round, user=user)
        enqueue_job(job)
    schedule_reaper(queue=job.round.config.get("queue") or "default")
    return job


def _finish(
    job_id: int, *, succeeded: bool, stopped: bool, error: str = ""
) -> TrainingJob:
    """Record how the job ended (`training.jobs.finish_job`) and queue the next stage.

    Both in one transaction, so a round never has a next stage that is marked
    queued but has no task.
    """
    with transaction.atomic():
        job, following = finish_job(
            job_id, succeeded=succeeded, stopped=stopped, error=error
        )
        if following is not None:
            enqueue_job(following)
    return job


@task()
def run_training_job(job_id: int) -> dict[str, Any]:
    """Run one stage of a training round in a child process and record its outcome."""
    reap_stale_jobs()
    job = start_job(job_id)
    if job is None:
        return {"job": job_id, "status": "skipped"}
    # Due now, it waits while this worker runs the stage; a worker restarted after
    # this one died runs it first and fails the job at once (training/reaper.py).
    schedule_reaper(
        queue=job.round.config.get("queue") or "default", delay=timedelta(0)
    )
    try:
        refused = freeze_round_snapshot(job)
    except Exception as exc:
        _finish(
            job_id,
            succeeded=False,
            stopped=False,
            error=f"could not freeze the round's snapshot: {exc!r}",
        )
        raise
    if refused:
        job = _finish(job_id, succeeded=False, stopped=False, error=refused)
        return {"job": job_id, "status": job.status}
    try:
        run_dir = prepare_run_dir(job)
    except Exception as exc:  # noqa: BLE001 - any failure to prepare fails the job visibly
        _finish(
            job_id,
            succeeded=False,
            stopped=False,
            error=f"could not prepare the run directory {job.run_dir}: {exc!r}",
        )
        raise
    if (run_dir / RESULT_FILE).exists():
        # The stage finished before its worker died; only the bookkeeping is missing.
        job = _finish(job_id, succeeded=True, stopped=False)
        return {"job": job_id, "status": job.status}
    options = job.round.config
    watcher = JobWatcher(job)
    try:
        outcome = supervise(
            stage_command(run_dir, options.get("accelerate") or ""),
            run_dir,
            on_tick=watcher.tick,
            on_start=watcher.started,
            tick_seconds=HEARTBEAT_SECONDS,
            stop_grace_seconds=float(
                options.get("stop_grace_seconds") or DEFAULT_STOP_GRACE_SECONDS
            ),
            env=child_env(),
        )
    except BaseException as exc:
        _finish(
            job_id,
            succeeded=False,
            stopped=False,
            error=f"the worker stopped while the stage ran ({exc!r}); resume the round "
            "to continue from the last checkpoint",
        )
        raise
    error = (
        "" if outcome.succeeded or outcome.stopped else failure_text(outcome, run_dir)
    )
    job = _finish(
        job_id, succeeded=outcome.succeeded, stopped=outcome.stopped, error=error
    )
    return {
        "job": job_id,
        "status": job.status,
        "returncode": outcome.returncode,
        "escalation": outcome.escalation,
    }


@task()
def reap_training_jobs(queue: str = "default") -> list[int]:
    """Mark jobs of dead workers failed, queue again the jobs whose task was lost;
    run again in a while as long as jobs run."""
    reaped = reap_stale_jobs()
    requeue_lost()
    if TrainingJob.objects.filter(status=Status.RUNNING).exists():
        schedule_reaper(queue=queue)
    return reaped


def schedule_reaper(
    *,
    queue: str = "default",
    delay: timedelta = timedelta(seconds=REAP_EVERY_SECONDS),
) -> None:
    """Queue the reaper task on `queue` to run after `delay`, unless one waiting
    there is due by then.

    On the round's own queue: while a worker runs a stage the task waits, and a
    worker restarted after a crash runs it first, failing at once the job its dead
    predecessor left running (see training/reaper.py).
    """
    due = timezone.now() + delay
    try:
        if task_queue.waiting(reap_training_jobs.module_path, queue, due):
            return
        reap_training_jobs.using(queue_name=queue, run_after=due).enqueue(queue)
    except task_queue.broker_errors() as exc:
        # What it schedules also runs from every RQ worker's maintenance.
        logger.warning("could not schedule the reaper on %r: %s", queue, exc)
