"""The reaper: a running job whose worker died is marked failed, so it can be resumed.

A worker's supervisor writes the job's heartbeat every couple of seconds, and the
job records which process runs it (host, pid and the process's start time). When
the worker dies (killed, machine lost) the row would say "running" forever; the
reaper marks such a job failed at once when its process is gone from this host,
never while that process still runs, and once its heartbeat is older than
`MAX_SILENCE` when the process cannot be asked (a worker on another host), and its
round with it (or cancelled, if the round was being cancelled). It runs
from the worker (every stage start, every half minute while a stage runs, and a
periodic task on the round's queue, which a restarted worker runs first), from
the round page, and from `manage.py resume_round`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config.workers import current_worker, machine, worker_is_gone, worker_state
from training.models import Status, TrainingJob, TrainingRound

__all__ = ["current_worker", "reap_stale_jobs", "worker_is_gone", "worker_state"]

MAX_SILENCE = timedelta(seconds=60)


def stale_jobs(now: datetime, max_silence: timedelta = MAX_SILENCE):
    """Return the running jobs whose heartbeat (or start, if none) is older than the limit."""
    cutoff = now - max_silence
    return TrainingJob.objects.filter(status=Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )


def dead_worker_jobs() -> list[int]:
    """Return the ids of running jobs whose recorded process on this host is gone."""
    rows = (
        TrainingJob.objects.filter(status=Status.RUNNING)
        .exclude(worker="")
        .values_list("pk", "worker")
    )
    return [pk for pk, worker in rows if worker_is_gone(worker)]


def reap_stale_jobs(
    *, now: datetime | None = None, max_silence: timedelta = MAX_SILENCE
) -> list[int]:
    """Mark every running job whose worker is gone or silent failed (cancelled in a
    cancelled round); return their ids.

    Silence counts only where the recorded process cannot be asked (another host or
    container, none recorded) or where it lives but the stage process it started is
    gone (it lost track of its job): a process of this host that still runs its
    stage keeps its job, however late its heartbeat (a stage exporting its data, a
    busy database).
    """
    now = now or timezone.now()
    candidates = {
        job.pk
        for job in stale_jobs(now, max_silence).only("pk", "worker", "pid")
        if worker_state(job.worker) != "running" or _stage_ended(job)
    }
    candidates.update(dead_worker_jobs())
    reaped = []
    for job_id in sorted(candidates):
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            training_round = TrainingRound.objects.select_for_update().get(
                pk=job.round_id
            )
            state = worker_state(job.worker)
            gone = job.status == Status.RUNNING and state == "gone"
            silent = stale_jobs(now, max_silence).filter(pk=job_id).exists() and (
                state == "unknown" or _stage_ended(job)
            )
            if not gone and not silent:
                continue  # its process runs here, a heartbeat came, or it ended
            job.finished_at = now
            job.pid = None
            if training_round.status == Status.CANCELLED:
                job.status = Status.CANCELLED
                job.save()
            else:
                job.status = Status.FAILED
                job.error, why = _lost_worker_text(job, now, gone)
                job.save()
                training_round.status = Status.FAILED
                training_round.error = (
                    f"stage {job.index + 1} ({job.stage}) lost its worker ({why})"
                )
                training_round.finished_at = now
                training_round.save()
            reaped.append(job_id)
    return reaped


def _stage_ended(job: TrainingJob) -> bool:
    """Return whether the job's stage process (its recorded pid, on the worker's host)
    is gone: a worker that still lives but lost track of its job (it could not
    record the end while the database was away) left it behind."""
    return job.pid is not None and worker_state(f"{machine()}:{job.pid}:") == "gone"


def _lost_worker_text(job: TrainingJob, now: datetime, gone: bool) -> tuple[str, str]:
    """Return the job's error text and the round's short reason for a lost worker."""
    resume = "Resume the round to continue from the stage's last checkpoint."
    if gone:
        host, pid, _ = job.worker.rsplit(":", 2)
        return (
            f"the worker process running this stage (pid {pid} on {host}) is gone: "
            f"it died or was killed. {resume}",
            "its process is gone",
        )
    last = job.heartbeat_at or job.started_at
    silence = int((now - last).total_seconds())
    return (
        f"no heartbeat for {silence} s (last at {last:%Y-%m-%d %H:%M:%S} UTC): the "
        f"worker running this stage died or was killed. {resume}",
        f"no heartbeat for {silence} s",
    )
