"""One convention for user-fixable input: the workflow raises ValidationError, the API
answers 400 with its message (config/api.py) and a page shows it (config/forms.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.urls import reverse

from inference.models import Policy
from tests.api_world import client_for
from tests.conftest import login
from training.models import Status, TrainingRound

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def deployed(project, tmp_path) -> Policy:
    base = tmp_path / "demo-sft"
    base.mkdir()
    policy = Policy.objects.create(name="demo-sft", base_path=str(base))
    project.current_policy = policy
    project.save()
    return policy


@pytest.fixture
def finished_round(project, deployed, admin_user) -> TrainingRound:
    return TrainingRound.objects.create(
        project=project,
        method="dpo",
        parent_policy=deployed,
        status=Status.SUCCEEDED,
        created_by=admin_user,
    )


def _post(user, url: str, body: dict | None = None):
    return client_for(user).post(url, body or {}, content_type="application/json")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"method": "dpo,warp"}, "unknown stage(s) ['warp'] in method 'dpo,warp'"),
        (
            {"method": "dpo", "options": {"dpo": {"beta": "-1"}}},
            "beta must be > 0, got -1.0",
        ),
        ({"method": "dpo"}, "has no preference pairs"),
    ],
)
def test_api_launch_refusal_is_400_with_the_workflow_message(
    admin_user, project, deployed, body, message
):
    response = _post(admin_user, "/api/projects/demo/training-rounds", body)

    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert TrainingRound.objects.count() == 0


def test_api_cancel_and_resume_refusals_are_400_with_the_message(
    admin_user, finished_round
):
    cancel = _post(admin_user, f"/api/training-rounds/{finished_round.pk}/cancel")
    resume = _post(admin_user, f"/api/training-rounds/{finished_round.pk}/resume")

    assert cancel.status_code == 400
    assert cancel.json()["detail"] == (
        f"round {finished_round.pk} is already succeeded; nothing to cancel"
    )
    assert resume.status_code == 400
    assert resume.json()["detail"] == (
        f"round {finished_round.pk} is succeeded; only a failed or cancelled round "
        "can be resumed"
    )


def test_api_deploy_refusal_is_400_with_the_message(admin_user, project, deployed):
    response = _post(admin_user, "/api/projects/demo/deploy", {"policy": "demo-sft"})

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "demo-sft is already the current policy of demo"
    )


def test_page_buttons_show_the_refusal_as_a_message(
    admin_user, project, deployed, finished_round
):
    client = login(admin_user)
    cancel = client.post(
        reverse("training:cancel", args=[finished_round.pk]), follow=True
    )
    deploy = client.post(
        reverse("training:deploy", args=[deployed.pk]), {"project": "demo"}, follow=True
    )

    assert "is already succeeded; nothing to cancel" in cancel.content.decode()
    assert "demo-sft is already the current policy of demo" in deploy.content.decode()


def _handled_names(handler: ast.ExceptHandler) -> set[str]:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {k.id if isinstance(k, ast.Name) else getattr(k, "attr", "") for k in kinds}


VIEW_MODULES = sorted(
    str(path.relative_to(REPO))
    for app in ("annotation", "inference", "training", "config")
    for pattern in ("views.py", "*_views.py", "api.py")
    for path in (REPO / app).glob(pattern)
)


def test_the_convention_reads_every_view_and_api_module():
    assert {
        "annotation/api.py",
        "annotation/people_views.py",
        "training/views.py",
    } <= set(VIEW_MODULES)


@pytest.mark.parametrize("module", VIEW_MODULES)
def test_no_view_or_api_operation_catches_user_errors_by_hand(module):
    tree = ast.parse((REPO / module).read_text())
    caught = [
        f"{module}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ExceptHandler)
        and node.type is not None
        and _handled_names(node) & {"ValueError", "ValidationError"}
    ]
    assert caught == [], "map user errors once: config/api.py and config/forms.act"
