"""Training rounds and their stage jobs, with the status the Tasks API lacks.

Lineage runs through a round: snapshot -> round -> stages -> output policy. A job's
status, progress, heartbeat and error text live here because the Tasks API has none.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from annotation.models import Corpus, Project, Snapshot
from inference.models import Policy


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}


class TrainingRound(models.Model):
    """A pipeline of training stages run from one parent policy on its data.

    The data: a snapshot of rankings, a pre-training corpus, uploaded
    demonstrations, or several of them (each stage reads its own, see
    training/stages.py `StageSpec.data`).
    """

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="training_rounds"
    )
    method = models.CharField(
        max_length=100, help_text="The stages, e.g. 'dpo' or 'sft,reward,ppo'."
    )
    snapshot = models.ForeignKey(
        Snapshot, null=True, blank=True, on_delete=models.PROTECT, related_name="rounds"
    )
    corpus = models.ForeignKey(
        Corpus,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="pretraining_rounds",
        help_text="The pre-training text its pretrain stage learned from.",
    )
    demonstrations = models.ForeignKey(
        Corpus,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="sft_rounds",
        help_text="Uploaded demonstrations its sft stage learned from (instead of "
        "the snapshot's).",
    )
    parent_policy = models.ForeignKey(
        Policy, on_delete=models.PROTECT, related_name="training_rounds_from"
    )
    output_policy = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_by_rounds",
    )
    config = models.JSONField(default=dict, blank=True, help_text="Launch options.")
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.QUEUED
    )
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"training round {self.pk} ({self.method}) of {self.project}"

    def get_absolute_url(self) -> str:
        return reverse("training:round", args=[self.pk])

    def stages(self) -> list[str]:
        """Return the stage names in order."""
        return [s for s in self.method.split(",") if s]


class TrainingJob(models.Model):
    """One stage of a round, run by a worker as a child process with a run directory."""

    round = models.ForeignKey(
        TrainingRound, on_delete=models.CASCADE, related_name="jobs"
    )
    stage = models.CharField(max_length=30)
    index = models.PositiveSmallIntegerField()
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.QUEUED
    )
    config = models.JSONField(default=dict, blank=True, help_text="Resolved config.")
    run_dir = models.CharField(max_length=500, blank=True)
    task_id = models.CharField(
        max_length=100, blank=True, help_text="Tasks API result id."
    )
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    last_metrics = models.JSONField(default=dict, blank=True)
    history = models.JSONField(
        default=list, blank=True, help_text="Metrics per logged step."
    )
    output_path = models.CharField(max_length=500, blank=True)
    output_policy = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_by_jobs",
        help_text="The registry row of this stage's artifact, set when the round succeeds.",
    )
    error = models.TextField(blank=True)
    pid = models.IntegerField(null=True, blank=True)
    worker = models.CharField(
        max_length=300,
        blank=True,
        help_text="host:pid:start time of the process running the stage "
        "(training.reaper.current_worker): the reaper fails the job at once when it is gone.",
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the stage last reported progress (a line of its progress "
        "file). The heartbeat says the worker lives; this says the stage moves.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["round", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["round", "index"], name="unique_stage_index"
            )
        ]

    def __str__(self) -> str:
        return f"{self.stage} job {self.pk}"

    def stalled_for(self, now: datetime | None = None) -> timedelta | None:
        """Return how long a running stage has gone without progress, when that is
        longer than settings.STAGE_STALL_MINUTES; else None."""
        if self.status != Status.RUNNING:
            return None
        since = self.progress_at or self.started_at
        if since is None:
            return None
        silent = (now or timezone.now()) - since
        return (
            silent if silent > timedelta(minutes=settings.STAGE_STALL_MINUTES) else None
        )

    def progress_fraction(self) -> float:
        """Return the share of steps done, 0 to 1."""
        if not self.total_steps:
            return 0.0
        return min(1.0, self.step / self.total_steps)


class Deployment(models.Model):
    """One change of a project's current policy: what was deployed, replacing what, by whom.

    The newest row per project names its current policy; rolling back deploys the
    policy the newest row replaced.
    """

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="deployments"
    )
    policy = models.ForeignKey(
        Policy, on_delete=models.PROTECT, related_name="deployments"
    )
    previous = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The policy that was current before this deployment.",
    )
    is_rollback = models.BooleanField(default=False)
    deployed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.policy} deployed to {self.project}"
