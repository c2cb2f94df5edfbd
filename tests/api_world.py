"""A small world for API tests: a project with a round, a leased task, a snapshot,
a policy, a training round and a corpus, plus clients per persona."""

from __future__ import annotations

from datetime import timedelta

from django.test import Client
from django.utils import timezone

from annotation.models import Corpus, ImportReport, Lease, SnapshotExport
from annotation.snapshots import freeze_snapshot
from tests.annotation.data_factories import make_policy, make_round, make_task
from training.models import TrainingRound


def build_world(project, annotator) -> dict:
    """Return ids the API tests address: task, lease, snapshot, policy, training round.

    Each id is under its own name and under the name of the OpenAPI path parameter.
    """
    policy = make_policy("demo-sft")
    make_round(project, 1, policy)
    task = make_task(project, "What is 2 + 2?")
    now = timezone.now()
    lease = Lease.objects.create(
        task=task,
        annotator=annotator,
        leased_at=now,
        expires_at=now + timedelta(minutes=30),
    )
    snapshot = freeze_snapshot(project, "first")
    training_round = TrainingRound.objects.create(
        project=project, method="dpo", snapshot=snapshot, parent_policy=policy
    )
    corpus = Corpus.objects.create(
        project=project, name="wiki", path="/nowhere/wiki.jsonl", sha256="0" * 64
    )
    report = ImportReport.objects.create(project=project, source="old.jsonl")
    export = SnapshotExport.objects.create(
        snapshot=snapshot,
        fmt="trl",
        style="conversational",
        prompt="explicit",
        file_format="jsonl",
    )
    return {
        "project": project.name,
        "name": project.name,
        "task": task.pk,
        "task_id": task.pk,
        "lease": lease.pk,
        "lease_id": lease.pk,
        "responses": list(
            task.responses.order_by("position").values_list("pk", flat=True)
        ),
        "snapshot": snapshot.pk,
        "snapshot_id": snapshot.pk,
        "policy": policy.pk,
        "policy_id": policy.pk,
        "training_round": training_round.pk,
        "round_id": training_round.pk,
        "corpus": corpus.name,
        "report": report.pk,
        "report_id": report.pk,
        "export": export.pk,
        "export_id": export.pk,
    }


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client
