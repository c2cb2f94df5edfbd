"""Rounds launched, cancelled and resumed, and deployments and rollbacks, are audited."""

from __future__ import annotations

import pytest

from annotation.models import AuditEntry
from tests.annotation.data_factories import annotators, make_policy, make_task, rank
from training.deployment import deploy_policy, rollback_policy
from training.jobs import freeze_round_snapshot
from training.models import Status
from training.rounds import cancel_round, resume_round
from training.tasks import launch

pytestmark = pytest.mark.django_db


def only(action: str) -> AuditEntry:
    entries = list(AuditEntry.objects.filter(action=action))
    assert len(entries) == 1, [e.action for e in AuditEntry.objects.all()]
    return entries[0]


@pytest.fixture
def deployed(project):
    policy = make_policy("demo-sft")
    project.current_policy = policy
    project.save()
    return policy


def test_a_round_launched_cancelled_and_resumed_is_recorded(
    project, admin_user, deployed
):
    rank(make_task(project), annotators(1)[0], [[0], [1], [2], [3]])
    training_round = launch(project, "dpo", user=admin_user, options={})
    launched = only("round.launch")
    assert (launched.actor, launched.project, launched.object_type) == (
        admin_user,
        project,
        "traininground",
    )
    assert launched.after["method"] == "dpo" and launched.after["stages"][0] == "dpo"
    # The round's own snapshot is recorded too, by whom launched it, when its
    # first stage has frozen it in the worker.
    assert not AuditEntry.objects.filter(action="snapshot.freeze").exists()
    assert freeze_round_snapshot(training_round.jobs.get()) == ""
    assert only("snapshot.freeze").actor == admin_user
    cancel_round(training_round, user=admin_user)
    cancelled = only("round.cancel")
    assert cancelled.before == {"status": Status.QUEUED}
    assert cancelled.after == {"status": Status.CANCELLED}
    resume_round(training_round, user=admin_user)
    assert only("round.resume").before == {"status": Status.CANCELLED}


def test_deployments_and_rollbacks_record_the_policy_before_and_after(
    project, admin_user, deployed, tmp_path
):
    newer = make_policy("newer")
    deploy_policy(project, newer, user=admin_user)
    entry = only("deployment.deploy")
    assert (entry.actor, entry.project) == (admin_user, project)
    assert (entry.before, entry.after) == ({"policy": "demo-sft"}, {"policy": "newer"})
    rollback_policy(project, user=admin_user)
    back = only("deployment.rollback")
    assert (back.before, back.after) == ({"policy": "newer"}, {"policy": "demo-sft"})


def _registration(name: str) -> AuditEntry:
    entry = only("model.register")
    assert entry.after["name"] == name
    return entry


def test_a_model_registered_by_command_page_or_api_is_recorded_with_who_asked(
    admin_user, tiny_model_dir
):
    from io import StringIO

    from django.core.management import call_command

    from inference.models import Policy
    from tests.conftest import login

    call_command("register_model", "by-command", str(tiny_model_dir), stdout=StringIO())
    entry = _registration("by-command")
    assert (entry.actor, entry.actor_name, entry.project) == (None, "", None)
    assert (entry.object_type, entry.object_id) == (
        "policy",
        str(Policy.objects.get(name="by-command").pk),
    )
    assert entry.after["source"] == str(tiny_model_dir)
    assert (entry.after["source_kind"], entry.after["architecture"]) == (
        "folder",
        "LlamaForCausalLM",
    )
    AuditEntry.objects.all().delete()

    client = login(admin_user)
    client.post(
        "/training/models/register/",
        {"name": "by-page", "source": str(tiny_model_dir), "kind": "policy"},
    )
    assert _registration("by-page").actor == admin_user
    AuditEntry.objects.all().delete()

    response = client.post(
        "/api/policies",
        {"name": "by-api", "source": str(tiny_model_dir)},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert _registration("by-api").actor == admin_user


def test_a_refused_registration_records_nothing(admin_user, tiny_model_dir):
    from django.core.exceptions import ValidationError

    from inference.registry import register_model

    with pytest.raises(ValidationError):
        register_model("x", "/no/such/model", actor=admin_user)
    register_model("tiny", str(tiny_model_dir), actor=admin_user)
    with pytest.raises(ValidationError, match="already registered"):
        register_model("tiny", str(tiny_model_dir), actor=admin_user)

    assert _registration("tiny").actor == admin_user
