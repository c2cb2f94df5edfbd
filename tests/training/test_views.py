"""The training and registry pages: roles, launch, round monitor, cancel, deploy, roll back."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from inference.models import Policy
from tests.annotation.data_factories import annotators, make_task, rank
from tests.conftest import login
from training.deployment import deploy_policy
from training.models import Deployment, Status, TrainingJob, TrainingRound


@pytest.fixture
def deployed(project, tmp_path) -> Policy:
    base = tmp_path / "demo-sft"
    base.mkdir()
    policy = Policy.objects.create(name="demo-sft", base_path=str(base))
    project.current_policy = policy
    project.save()
    return policy


@pytest.fixture
def ranked(project, deployed) -> None:
    user = annotators(1)[0]
    rank(
        make_task(project, "What is 2 + 2?", policy=deployed),
        user,
        [[0], [1], [2], [3]],
    )


@pytest.fixture
def failed_round(project, deployed, admin_user) -> TrainingRound:
    training_round = TrainingRound.objects.create(
        project=project,
        method="dpo",
        parent_policy=deployed,
        status=Status.FAILED,
        error="stage 1 (dpo) failed: ValueError: boom <script>",
        created_by=admin_user,
    )
    TrainingJob.objects.create(
        round=training_round,
        stage="dpo",
        index=0,
        status=Status.FAILED,
        step=3,
        total_steps=4,
        error="Traceback ...\nValueError: boom <script>",
        history=[
            {"step": s, "loss": 1.0 / s, "rewards/margins": 0.1 * s} for s in (1, 2, 3)
        ],
    )
    return training_round


@pytest.mark.parametrize(
    "url_name, persona, status",
    [
        ("training:rounds", "admin_user", 200),
        ("training:rounds", "researcher", 200),
        ("training:rounds", "annotator", 403),
        ("training:rounds", "outsider", 403),
        ("training:launch", "admin_user", 200),
        ("training:launch", "researcher", 403),
        ("training:launch", "annotator", 403),
        ("training:launch", "outsider", 403),
        ("training:registry", "admin_user", 200),
        ("training:registry", "researcher", 200),
        ("training:registry", "annotator", 403),
        ("training:registry", "outsider", 403),
    ],
)
def test_pages_answer_each_role(request, project, url_name, persona, status):
    user = request.getfixturevalue(persona)

    response = login(user).get(reverse(url_name))

    assert response.status_code == status


@pytest.mark.parametrize(
    "url_name", ["training:rounds", "training:launch", "training:registry"]
)
def test_anonymous_visitors_are_sent_to_login(client, db, url_name):
    response = client.get(reverse(url_name))

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_the_old_registry_address_redirects_to_the_registry_page(researcher):
    response = login(researcher).get("/models/")

    assert response.status_code == 302
    assert response["Location"] == reverse("training:registry") == "/training/models/"


@pytest.mark.parametrize(
    "persona, status",
    [("admin_user", 200), ("researcher", 200), ("annotator", 403), ("outsider", 403)],
)
def test_the_round_page_answers_each_role(request, failed_round, persona, status):
    user = request.getfixturevalue(persona)

    response = login(user).get(failed_round.get_absolute_url())

    assert response.status_code == status


@pytest.mark.parametrize(
    "name, persona, status",
    [
        ("training:cancel", "researcher", 403),
        ("training:cancel", "annotator", 403),
        ("training:resume", "researcher", 403),
        ("training:resume", "outsider", 403),
    ],
)
def test_only_admins_cancel_or_resume(request, failed_round, name, persona, status):
    user = request.getfixturevalue(persona)

    response = login(user).post(reverse(name, args=[failed_round.pk]))

    assert response.status_code == status
    failed_round.refresh_from_db()
    assert failed_round.status == Status.FAILED


def test_the_launch_page_shows_stage_options_with_their_help(admin_user, project):
    response = login(admin_user).get(reverse("training:launch"))

    html = response.content.decode()
    assert 'name="dpo__beta"' in html
    assert "Strength of the implicit KL to the reference" in html
    assert 'name="dpo__base_path"' not in html  # set by the platform, not the user
    assert 'name="sleep__steps"' not in html  # the test stage stays off the page
    assert '<option value="zero3">zero3</option>' in html
    # A judge is picked from the registered ones, not typed.
    assert '<select name="evaluate__judge"' in html
    assert '<option value="demo">demo</option>' in html
    assert '<option value="instructions">instructions</option>' in html


def test_launching_from_the_page_queues_the_round_with_the_options(
    admin_user, project, ranked
):
    response = login(admin_user).post(
        reverse("training:launch"),
        {
            "project": "demo",
            "method": "dpo",
            "queue": "default",
            "accelerate": "",
            "dpo__beta": "0.25",
            "dpo__use_lora": "false",
            "sft__max_steps": "7",
        },
    )

    training_round = TrainingRound.objects.get()
    job = training_round.jobs.get()
    assert response.status_code == 302
    assert response["Location"] == training_round.get_absolute_url()
    assert (job.config["beta"], job.config["use_lora"]) == (0.25, False)
    assert training_round.config["queue"] == "default"
    assert "sft" not in training_round.config  # options of stages not in the pipeline


def test_a_judge_that_is_not_registered_is_a_form_error(admin_user, project, ranked):
    response = login(admin_user).post(
        reverse("training:launch"),
        {
            "project": "demo",
            "method": "dpo",
            "queue": "default",
            "evaluate__judge": "oracle",
        },
    )

    assert response.status_code == 400
    assert "Select a valid choice. oracle is not one of the available choices." in (
        response.content.decode()
    )
    assert TrainingRound.objects.count() == 0


def test_a_refused_launch_shows_the_reason_with_400(admin_user, project, deployed):
    response = login(admin_user).post(
        reverse("training:launch"),
        {"project": "demo", "method": "dpo", "queue": "default"},
    )

    assert response.status_code == 400
    assert "has no preference pairs" in response.content.decode()
    assert TrainingRound.objects.count() == 0


def test_a_bad_stage_value_is_refused_with_the_config_message(
    admin_user, project, ranked
):
    response = login(admin_user).post(
        reverse("training:launch"),
        {"project": "demo", "method": "dpo", "queue": "default", "dpo__beta": "-2"},
    )

    assert response.status_code == 400
    assert "beta must be &gt; 0, got -2.0" in response.content.decode()


def test_an_unknown_stage_is_a_form_error(admin_user, project, ranked):
    response = login(admin_user).post(
        reverse("training:launch"),
        {"project": "demo", "method": "dpo,warp", "queue": "default"},
    )

    assert response.status_code == 400
    assert "unknown stage(s) [&#x27;warp&#x27;]" in response.content.decode()


def test_the_round_page_shows_progress_curves_and_escaped_error_text(
    admin_user, failed_round
):
    response = login(admin_user).get(failed_round.get_absolute_url())

    html = response.content.decode()
    assert "Steps 3 of 4" in html
    assert 'value="75"' in html
    assert "ValueError: boom &lt;script&gt;" in html
    assert "<script>" not in html.split("</head>")[1]
    assert html.count("<svg") == 2  # loss and reward curves
    assert "Resume from last checkpoint" in html
    assert 'hx-trigger="every 2s"' not in html  # a finished round is not polled


def test_a_running_round_is_polled_and_htmx_gets_only_the_status(
    admin_user, failed_round
):
    TrainingRound.objects.filter(pk=failed_round.pk).update(status=Status.RUNNING)
    TrainingJob.objects.filter(round=failed_round).update(
        status=Status.RUNNING, heartbeat_at=timezone.now()
    )
    client = login(admin_user)

    page = client.get(failed_round.get_absolute_url()).content.decode()
    part = client.get(
        failed_round.get_absolute_url(), HTTP_HX_REQUEST="true"
    ).content.decode()

    assert 'hx-trigger="every 2s"' in page
    assert part.lstrip().startswith('<section id="round-status"')
    assert "Cancel round" in part


def test_an_admin_cancels_a_running_round_from_its_page(admin_user, failed_round):
    TrainingRound.objects.filter(pk=failed_round.pk).update(status=Status.RUNNING)

    response = login(admin_user).post(
        reverse("training:cancel", args=[failed_round.pk])
    )

    failed_round.refresh_from_db()
    assert response.status_code == 302
    assert failed_round.status == Status.CANCELLED


def test_the_registry_shows_lineage_round_and_disk_use(
    admin_user, project, deployed, failed_round, tmp_path
):
    child_dir = tmp_path / "child"
    child_dir.mkdir()
    (child_dir / "adapter_model.safetensors").write_bytes(b"x" * 2048)
    child = Policy.objects.create(
        name="demo-round1-dpo",
        base_path=deployed.base_path,
        adapter_path=str(child_dir),
        parent=deployed,
        snapshot_name="snap-1",
        snapshot_sha256="ab" * 32,
        metrics={"win_rate": 0.625},
    )
    TrainingJob.objects.filter(round=failed_round).update(output_policy=child)

    html = login(admin_user).get(reverse("training:registry")).content.decode()

    assert 'aria-label="Lineage graph of 2 models"' in html
    assert "marker-end" in html  # one parent -> child edge
    assert f'href="#policy-{deployed.pk}">demo-sft</a>' in html
    assert "snap-1 <code>abababababababab…</code>" in html
    assert f"training round {failed_round.pk}</a>, stage 1 (dpo)" in html
    assert "2.0\xa0KB" in html
    assert "0.625" in html


def test_an_admin_deploys_a_policy_and_rolls_back(
    admin_user, project, deployed, tmp_path
):
    newer = Policy.objects.create(
        name="demo-round1-dpo",
        base_path=deployed.base_path,
        parent=deployed,
        metrics={"evaluated": 1.0, "win_rate": 0.6},
    )
    client = login(admin_user)

    client.post(reverse("training:deploy", args=[newer.pk]), {"project": "demo"})
    project.refresh_from_db()
    assert project.current_policy == newer

    client.post(reverse("training:rollback"), {"project": "demo"})
    project.refresh_from_db()
    assert project.current_policy == deployed
    assert list(Deployment.objects.values_list("policy__name", "is_rollback")) == [
        ("demo-sft", True),
        ("demo-round1-dpo", False),
    ]


@pytest.mark.parametrize("persona", ["researcher", "annotator", "outsider"])
def test_only_admins_deploy(request, project, deployed, persona):
    newer = Policy.objects.create(name="newer", base_path=deployed.base_path)

    response = login(request.getfixturevalue(persona)).post(
        reverse("training:deploy", args=[newer.pk]), {"project": "demo"}
    )

    project.refresh_from_db()
    assert response.status_code == 403
    assert project.current_policy == deployed


def test_a_reward_model_cannot_be_deployed(admin_user, project, deployed):
    reward = Policy.objects.create(
        name="rm", base_path=deployed.base_path, kind="reward_model"
    )

    with pytest.raises(ValidationError, match="rm is a reward model, not a policy"):
        deploy_policy(project, reward, user=admin_user)


def test_rolling_back_without_an_earlier_deployment_is_refused(
    admin_user, project, deployed
):
    response = login(admin_user).post(
        reverse("training:rollback"), {"project": "demo"}, follow=True
    )

    assert "has no earlier deployed policy to roll back to" in response.content.decode()


def test_a_trained_policy_that_was_not_evaluated_cannot_be_deployed(
    admin_user, project, deployed
):
    newer = Policy.objects.create(
        name="unevaluated",
        base_path=deployed.base_path,
        parent=deployed,
        metrics={"loss": 0.3},
    )

    with pytest.raises(
        ValidationError,
        match="unevaluated has not been evaluated against its parent demo-sft",
    ):
        deploy_policy(project, newer, user=admin_user)


def test_a_policy_with_a_win_rate_counts_as_evaluated(admin_user, project, deployed):
    newer = Policy.objects.create(
        name="judged",
        base_path=deployed.base_path,
        parent=deployed,
        metrics={"judge_win_rate_vs_sft": 0.7},
    )

    deploy_policy(project, newer, user=admin_user)

    project.refresh_from_db()
    assert project.current_policy == newer


def test_the_round_page_says_its_snapshot_is_frozen_by_its_first_stage(
    admin_user, project, ranked
):
    from training.jobs import freeze_round_snapshot
    from training.tasks import launch

    training_round = launch(project, "dpo", user=admin_user)
    client = login(admin_user)
    page = client.get(training_round.get_absolute_url()).content.decode()
    assert 'id="round-snapshot-freeze" data-status="queued"' in page
    assert "queued; the first stage freezes it in the worker" in page
    follow = f'href="/data/snapshots/{training_round.snapshot_id}/"'  # its live bar
    assert follow in page

    assert freeze_round_snapshot(training_round.jobs.get()) == ""
    page = client.get(training_round.get_absolute_url()).content.decode()
    assert f"{training_round.snapshot.name}: 6 pairs, SHA-256" in page
