"""The reaper: a running job whose heartbeat stopped is marked failed, so it can be resumed.

A worker's supervisor writes the job's heartbeat every couple of seconds. When the
worker dies (killed, machine lost) the row would say "running" forever; the reaper
marks such a job failed once its heartbeat is older than `MAX_SILENCE`, and its
round with it (or cancelled, if the round was being cancelled). It runs from the
worker (every stage start, every half minute while a stage runs, and a periodic
task), from the round page, and from `manage.py resume_round`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from training.models import Status, TrainingJob, TrainingRound

MAX_SILENCE = timedelta(seconds=60)


def stale_jobs(now: datetime, max_silence: timedelta = MAX_SILENCE):
    """Return the running jobs whose heartbeat (or start, if none) is older than the limit."""
    cutoff = now - max_silence
    return TrainingJob.objects.filter(status=Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )


def reap_stale_jobs(
    *, now: datetime | None = None, max_silence: timedelta = MAX_SILENCE
) -> list[int]:
    """Mark every stale running job failed (cancelled in a cancelled round); return their ids."""
    now = now or timezone.now()
    reaped = []
    for job_id in stale_jobs(now, max_silence).values_list("pk", flat=True):
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            training_round = TrainingRound.objects.select_for_update().get(
                pk=job.round_id
            )
            if not stale_jobs(now, max_silence).filter(pk=job_id).exists():
                continue  # a heartbeat arrived meanwhile
            last = job.heartbeat_at or job.started_at
            job.finished_at = now
            job.pid = None
            if training_round.status == Status.CANCELLED:
                job.status = Status.CANCELLED
                job.save()
            else:
                silence = int((now - last).total_seconds())
                job.status = Status.FAILED
                job.error = (
                    f"no heartbeat for {silence} s (last at {last:%Y-%m-%d %H:%M:%S} UTC): "
                    "the worker running this stage died or was killed. Resume the round "
                    "to continue from the stage's last checkpoint."
                )
                job.save()
                training_round.status = Status.FAILED
                training_round.error = (
                    f"stage {job.index + 1} ({job.stage}) lost its worker (no heartbeat "
                    f"for {silence} s)"
                )
                training_round.finished_at = now
                training_round.save()
            reaped.append(job_id)
    return reaped
