"""The project overview page: who may see it and what it shows."""

from __future__ import annotations

import pytest
from django.test import Client

from annotation.models import Prompt, Ranking, RankingTask, Response, Round
from annotation.simulated import simulated_user
from inference.models import Policy
from tests.conftest import login, make_user

URL = "/overview/demo/"


@pytest.fixture
def compared(project):
    """Two policies, dpo-r1 deployed, compared in four human rankings (dpo-r1 wins 3)."""
    sft = Policy.objects.create(name="demo-sft", base_path="/m/sft")
    dpo = Policy.objects.create(
        name="dpo-r1",
        base_path="/m/sft",
        parent=sft,
        snapshot_name="round-1",
        snapshot_sha256="ab" * 32,
        metrics={"judge_win_rate_vs_sft": 0.8125, "kl": 0.042},
    )
    project.current_policy = dpo
    project.save()
    round_ = Round.objects.create(project=project, number=1, policy=dpo)
    human = make_user("h1", "annotator")
    for n in range(4):
        prompt = Prompt.objects.create(project=project, messages=f"question {n}")
        task = RankingTask.objects.create(project=project, prompt=prompt, round=round_)
        a = Response.objects.create(task=task, policy=sft, text="old", position=0)
        b = Response.objects.create(task=task, policy=dpo, text="new", position=1)
        order = [[b.pk], [a.pk]] if n else [[a.pk], [b.pk]]
        Ranking.objects.create(task=task, annotator=human, order=order)
    return project


@pytest.mark.parametrize(
    "persona, status",
    [("admin_user", 200), ("researcher", 200), ("annotator", 403), ("outsider", 403)],
)
def test_only_admins_and_researchers_see_the_overview(
    request, project, persona, status
):
    user = request.getfixturevalue(persona)
    assert login(user).get(URL).status_code == status


def test_anonymous_visitors_are_sent_to_log_in(project):
    response = Client().get(URL)
    assert (response.status_code, response["Location"]) == (
        302,
        "/login/?next=/overview/demo/",
    )


def test_unknown_project_is_not_found(admin_user):
    assert login(admin_user).get("/overview/nope/").status_code == 404


def test_overview_shows_rounds_policies_win_rates_and_the_leaderboard(
    compared, admin_user
):
    html = login(admin_user).get(URL).content.decode()
    assert (
        "<td>1</td><td>dpo-r1</td><td>fresh</td>\n        <td>4</td><td>4</td>" in html
    )
    assert "dpo-r1 <strong>(current)</strong>" in html
    assert 'demo-sft <span class="muted">(SFT)</span>' in html
    assert "<td>0.813</td>" in html  # judge win rate vs SFT, 3 decimals
    assert "4 comparisons from 4 rankings" in html
    assert "<td>1</td><td>dpo-r1</td>" in html and "<td>2</td><td>demo-sft</td>" in html
    assert html.count("<svg") == 1
    assert "simulated annotators' comparisons" not in html


def test_simulated_comparisons_get_their_own_labelled_leaderboard(compared, admin_user):
    bot = simulated_user("sim-judge-1", "judge")
    task = RankingTask.objects.first()
    old, new = task.responses.order_by("position")
    Ranking.objects.create(task=task, annotator=bot, order=[[new.pk], [old.pk]])
    html = login(admin_user).get(URL).content.decode()
    assert "simulated annotators' comparisons" in html
    assert html.count("<svg") == 2
    assert "<td>sim-judge-1</td><td>judge</td><td>1</td><td>1</td>" in html


def test_policy_names_are_shown_as_text(project, admin_user):
    evil = Policy.objects.create(name="<script>x()</script>", base_path="/m")
    project.current_policy = evil
    project.save()
    html = login(admin_user).get(URL).content.decode()
    assert "<script>x()" not in html
    assert "&lt;script&gt;x()&lt;/script&gt;" in html


def test_a_simulator_with_no_task_in_common_with_people_is_not_listed(
    compared, admin_user
):
    bot = simulated_user("sim-judge-1", "judge")
    prompt = Prompt.objects.create(project=compared, messages="only the bot saw this")
    task = RankingTask.objects.create(project=compared, prompt=prompt)
    sft, dpo = Policy.objects.order_by("id")
    a = Response.objects.create(task=task, policy=sft, text="a", position=0)
    b = Response.objects.create(task=task, policy=dpo, text="b", position=1)
    Ranking.objects.create(task=task, annotator=bot, order=[[b.pk], [a.pk]])
    html = login(admin_user).get(URL).content.decode()
    assert "Simulated annotators against people" not in html
