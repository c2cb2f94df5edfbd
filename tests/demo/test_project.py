"""The demo set-up behind `make run`: users, project, round 1, and nothing twice."""

import pytest
from django.contrib.auth.models import User

from annotation.models import Project, RankingTask
from config.roles import roles_of
from demo.policies import register_demo_models
from demo.project import DEMO_USERS, setup_demo


@pytest.fixture
def registered_demo_models(db, demo_models):
    register_demo_models(demo_models)


def test_setup_demo_creates_users_project_and_round_one(
    registered_demo_models, monkeypatch
):
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "chosen-by-env")
    report = setup_demo(prompts_per_round=4)
    assert set(report.new_passwords) == set(DEMO_USERS)
    assert report.new_passwords["admin"] == "chosen-by-env"
    assert User.objects.get(username="admin").check_password("chosen-by-env") is True
    for username, role in DEMO_USERS.items():
        assert role in roles_of(User.objects.get(username=username))
    project = Project.objects.get(name="demo")
    assert set(project.members.values_list("username", flat=True)) == set(DEMO_USERS)
    assert project.current_policy.name == "demo-sft"
    assert report.published_round == 1
    assert RankingTask.objects.filter(project=project).count() == 4
    held_out = project.prompts.filter(is_held_out=True)
    assert held_out.filter(eval_split="test").count() == 306
    assert held_out.filter(eval_split="dev").count() == 180
    assert project.prompts.filter(is_held_out=False).count() == 4470


def test_the_demo_pool_asks_no_held_out_question(registered_demo_models):
    from demo.world import parse_prompt, question_split

    setup_demo(prompts_per_round=4)
    project = Project.objects.get(name="demo")
    for prompt in project.prompts.all():
        split = question_split(parse_prompt(prompt.messages))
        if prompt.is_held_out:
            assert split == prompt.eval_split
        else:
            assert split == "train"


def test_second_setup_changes_nothing(registered_demo_models):
    setup_demo(prompts_per_round=4)
    again = setup_demo(prompts_per_round=4)
    assert again.new_passwords == {}
    assert again.created_project is False
    assert again.published_round is None
    assert RankingTask.objects.count() == 4
