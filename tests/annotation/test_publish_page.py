"""Admins publish the next round from the overview page; the worker generates it."""

import pytest
from django_tasks_db.models import DBTaskResult

from annotation.tasks import publish_round_task
from inference.registry import register_policy
from tests.conftest import login


@pytest.fixture
def deployed(project, tiny_model_dir):
    policy = register_policy("tiny-sft", base_path=str(tiny_model_dir))
    project.current_policy = policy
    project.responses_per_task = 2
    project.save()
    from annotation.models import Prompt

    for i in range(3):
        Prompt.objects.create(project=project, messages=f"What colour is thing {i}?")
    return project


def test_admin_queues_a_round_for_the_worker(admin_user, deployed):
    response = login(admin_user).post(
        f"/overview/{deployed.name}/publish/",
        {"prompts": 2, "strategy": "fresh", "temperature": 0.7, "seed": 1},
    )
    assert response.status_code == 302
    job = DBTaskResult.objects.get()
    assert job.task_path == "annotation.tasks.publish_round_task"
    assert job.args_kwargs["args"][:3] == [deployed.pk, 2, "fresh"]


@pytest.mark.parametrize("who", ["annotator", "researcher"])
def test_only_admins_may_publish(who, request, deployed):
    user = request.getfixturevalue(who)
    response = login(user).post(f"/overview/{deployed.name}/publish/", {"prompts": 2})
    assert response.status_code == 403
    assert DBTaskResult.objects.count() == 0


def test_bad_settings_are_refused_and_nothing_is_queued(admin_user, deployed):
    response = login(admin_user).post(
        f"/overview/{deployed.name}/publish/",
        {"prompts": 2, "strategy": "loudest", "temperature": 0.7, "seed": 1},
    )
    assert response.status_code == 400
    assert b"strategy" in response.content
    assert DBTaskResult.objects.count() == 0


def test_the_task_publishes_a_round_from_the_deployed_policy(deployed):
    number = publish_round_task.call(deployed.pk, 2, "fresh", 0.7, 0, False)
    round_ = deployed.rounds.get(number=number)
    assert round_.policy.name == "tiny-sft"
    assert round_.tasks.count() == 2
    assert {t.responses.count() for t in round_.tasks.all()} == {2}
