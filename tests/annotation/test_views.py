"""Tests of the annotation pages through Django's test client."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotation.assignment import next_task
from annotation.models import AnnotatorProfile, Lease, Ranking, RankingTask
from tests.annotation.factories import (
    handles,
    make_annotators,
    make_task,
    make_tasks,
    response_ids,
)
from tests.conftest import login


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def annotate_url(project) -> str:
    return reverse("annotation:annotate", args=[project.name])


def submit_url(project) -> str:
    return reverse("annotation:submit", args=[project.name])


def held_lease(user) -> Lease:
    return Lease.objects.get(annotator=user, status=Lease.Status.ACTIVE)


def test_workspace_shows_prompt_and_every_response(project, annotator):
    task = make_task(
        project, texts=["alpha answer", "beta answer", "gamma answer", "delta answer"]
    )
    page = login(annotator).post(annotate_url(project), follow=True)
    assert page.status_code == 200
    body = page.content.decode()
    assert task.prompt.text() in body
    for text in ("alpha answer", "beta answer", "gamma answer", "delta answer"):
        assert body.count(text) == 2  # the response card and its chip


def test_model_text_is_escaped_never_html(project, annotator):
    make_task(
        project,
        texts=[
            "<script>alert(1)</script>",
            '<img src=x onerror="alert(2)">',
            "**bold**\n`code`",
            "ok",
        ],
    )
    body = login(annotator).post(annotate_url(project), follow=True).content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<img src=x" not in body
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in body
    assert "**bold**\n`code`" in body


def test_multi_turn_prompt_is_shown_as_a_transcript(project, annotator):
    make_task(
        project,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one?"},
        ],
    )
    body = login(annotator).post(annotate_url(project), follow=True).content.decode()
    positions = [
        body.index(f'turn-{role}"') for role in ("system", "user", "assistant")
    ]
    assert positions == sorted(positions)
    assert body.count('class="turn turn-user"') == 2


def test_guidelines_are_rendered_markdown_without_scripts(project, annotator):
    project.guidelines = "# Rules\n\nPrefer **correct** answers.<script>alert(3)</script><img src=x onerror=alert(4)>"
    project.save()
    make_task(project)
    body = login(annotator).post(annotate_url(project), follow=True).content.decode()
    assert "<h1>Rules</h1>" in body
    assert "<strong>correct</strong>" in body
    assert "alert(3)" not in body
    assert "onerror" not in body


def test_submitting_json_order_stores_it_and_redirects_to_the_next_task(
    project, annotator
):
    make_tasks(project, 2)
    client = login(annotator)
    client.post(annotate_url(project))
    lease = held_lease(annotator)
    a, b, c, d = response_ids(lease.task)
    response = client.post(
        submit_url(project),
        {"lease": lease.pk, "order": "[[3], [1, 4], [2]]", "active_seconds": "7"},
    )
    assert response.status_code == 303
    assert response.url == annotate_url(project)
    ranking = Ranking.objects.get(annotator=annotator)
    assert (ranking.order, ranking.active_seconds) == ([[c], [a, d], [b]], 7.0)
    follow = client.get(response.url)
    assert "Ranking saved." in follow.content.decode()
    assert held_lease(annotator).task_id != lease.task_id


def test_rank_fields_without_javascript_give_the_same_order(project, annotator):
    make_task(project)
    client = login(annotator)
    client.post(annotate_url(project))
    lease = held_lease(annotator)
    a, b, c, d = response_ids(lease.task)
    fields = {"lease": lease.pk, "rank-1": "2", "rank-2": "3", "rank-3": "1"}
    fields["rank-4"] = "2"
    assert client.post(submit_url(project), fields).status_code == 303
    assert Ranking.objects.get(annotator=annotator).order == [[c], [a, d], [b]]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "missing from the order"),
        ("repeated", "ranked more than once"),
        ("unknown", "unknown responses [5]"),
        ("not json", "must be JSON tie groups"),
    ],
)
def test_bad_order_is_rejected_with_a_message_and_nothing_stored(
    project, annotator, kind, message
):
    make_task(project)
    client = login(annotator)
    client.post(annotate_url(project))
    lease = held_lease(annotator)
    order = {
        "missing": json.dumps([[1], [2], [3]]),
        "repeated": json.dumps([[1], [2], [3, 1]]),
        "unknown": json.dumps([[1], [2], [3], [5]]),
        "not json": "[[1],",
    }[kind]
    response = client.post(submit_url(project), {"lease": lease.pk, "order": order})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert "Nothing was stored" in response.content.decode()
    assert Ranking.objects.count() == 0
    assert held_lease(annotator).pk == lease.pk


def test_htmx_submit_answers_with_the_next_task_in_place(project, annotator):
    make_tasks(project, 2)
    client = login(annotator)
    client.post(annotate_url(project))
    lease = held_lease(annotator)
    order = json.dumps([[h] for h in handles(lease.task)])
    response = client.post(
        submit_url(project), {"lease": lease.pk, "order": order}, HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.startswith('<section id="workspace"')
    assert "Ranking saved." in body
    assert f'name="lease" value="{held_lease(annotator).pk}"' in body


def test_someone_elses_lease_is_rejected(project, annotator):
    make_task(project)
    (other,) = make_annotators(1, prefix="other")
    lease = next_task(project, other)
    order = json.dumps([[h] for h in handles(lease.task)])
    response = login(annotator).post(
        submit_url(project), {"lease": lease.pk, "order": order}
    )
    assert response.status_code == 400
    assert f"lease {lease.pk} is not yours" in response.content.decode()
    assert Ranking.objects.count() == 0


def test_skip_without_a_reason_is_rejected_and_with_one_is_stored(project, annotator):
    make_task(project)
    client = login(annotator)
    client.post(annotate_url(project))
    lease = held_lease(annotator)
    url = reverse("annotation:skip", args=[project.name])
    assert client.post(url, {"lease": lease.pk, "reason": " "}).status_code == 400
    assert (
        client.post(url, {"lease": lease.pk, "reason": "not English"}).status_code
        == 303
    )
    ranking = Ranking.objects.get(annotator=annotator)
    assert (ranking.is_skip, ranking.skip_reason) == (True, "not English")


def test_required_rationale_is_enforced_by_the_page(project, annotator):
    project.require_rationale = True
    project.save()
    make_task(project)
    client = login(annotator)
    client.post(annotate_url(project))
    lease = held_lease(annotator)
    order = json.dumps([[h] for h in handles(lease.task)])
    response = client.post(submit_url(project), {"lease": lease.pk, "order": order})
    assert response.status_code == 400
    assert "requires a rationale" in response.content.decode()


def test_flags_rewrite_and_aspect_ratings_are_stored(project, annotator):
    project.aspects = ["helpfulness", "honesty"]
    project.save()
    make_task(project)
    client = login(annotator)
    client.post(annotate_url(project))
    lease = held_lease(annotator)
    a, b, c, d = response_ids(lease.task)
    client.post(
        submit_url(project),
        {
            "lease": lease.pk,
            "order": json.dumps([[1], [2], [3], [4]]),
            "all_bad": "on",
            "unsafe": ["2", "4"],
            "rewrite": "Better.",
            "aspect-1-honesty": "6",
            "aspect-2-helpfulness": "",
        },
    )
    ranking = Ranking.objects.get(annotator=annotator)
    assert ranking.all_bad is True
    assert ranking.unsafe_response_ids == sorted([b, d])
    assert ranking.rewrite == "Better."
    assert ranking.aspect_ratings == {str(a): {"honesty": 6}}


def test_late_submission_refused_when_overlap_filled_shows_a_message(
    project, annotator
):
    make_task(project, overlap=1)
    client = login(annotator)
    client.post(annotate_url(project))
    lease = held_lease(annotator)
    Lease.objects.filter(pk=lease.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    (fast,) = make_annotators(1, prefix="fast")
    login(fast).post(
        submit_url(project),
        {
            "lease": next_task(project, fast).pk,
            "order": json.dumps([[h] for h in handles(lease.task)]),
        },
    )
    response = client.post(
        submit_url(project),
        {
            "lease": lease.pk,
            "order": json.dumps([[h] for h in handles(lease.task)]),
        },
        follow=True,
    )
    assert "your ranking was not stored" in response.content.decode()
    assert Ranking.objects.filter(annotator=annotator).count() == 0


def test_paused_annotator_sees_the_reason_and_gets_no_task(project, annotator):
    make_task(project)
    AnnotatorProfile.objects.create(
        user=annotator, is_paused=True, paused_reason="gold accuracy 20%"
    )
    response = login(annotator).get(annotate_url(project))
    assert response.status_code == 403
    assert "gold accuracy 20%" in response.content.decode()


def test_no_task_left_says_so(project, annotator):
    body = login(annotator).post(annotate_url(project), follow=True).content.decode()
    assert "No task for you right now" in body


def test_workspace_shows_progress_today_and_in_project(project, annotator):
    make_tasks(project, 3)
    client = login(annotator)
    for _ in range(2):
        client.post(annotate_url(project))
        lease = held_lease(annotator)
        client.post(
            submit_url(project),
            {
                "lease": lease.pk,
                "order": json.dumps([[h] for h in handles(lease.task)]),
            },
        )
    body = client.get(annotate_url(project)).content.decode()
    assert 'Done today: <strong id="done-today">2</strong>' in body
    assert 'In this project: <strong id="done-total">2</strong>' in body


@pytest.mark.parametrize("which", ["annotate", "submit"])
def test_queries_per_request_do_not_grow_with_the_data(
    project, annotator, which, django_assert_max_num_queries
):
    from annotation.assignment import RankingSubmission, submit_ranking

    make_tasks(project, 40)
    client = login(annotator)

    def count() -> int:
        if which == "submit":
            client.post(annotate_url(project))
        with CaptureQueriesContext(connection) as ctx:
            if which == "annotate":
                Lease.objects.filter(annotator=annotator).delete()
                client.post(annotate_url(project), HTTP_HX_REQUEST="true")
            else:
                lease = held_lease(annotator)
                order = json.dumps([[h] for h in handles(lease.task)])
                client.post(submit_url(project), {"lease": lease.pk, "order": order})
        return len(ctx.captured_queries) - (1 if which == "annotate" else 0)

    count()  # warm up: the first request creates the annotator's profile
    small = count()
    for user in make_annotators(3, prefix="busy"):
        for _ in range(10):
            lease = next_task(project, user)
            submit_ranking(
                lease, user, RankingSubmission([[h] for h in handles(lease.task)])
            )
    make_tasks(project, 40)
    large = count()
    assert large == small
    # The limit: session, user, roles, project, profile lock, lease, pick, render.
    if which == "annotate":
        Lease.objects.filter(annotator=annotator).delete()
        with django_assert_max_num_queries(20):
            client.post(annotate_url(project), HTTP_HX_REQUEST="true")
    else:
        client.post(annotate_url(project))
        lease = held_lease(annotator)
        order = json.dumps([[h] for h in handles(lease.task)])
        with django_assert_max_num_queries(20):
            client.post(submit_url(project), {"lease": lease.pk, "order": order})


def test_home_invites_annotators_with_their_progress(project, annotator):
    make_tasks(project, 2)
    body = login(annotator).get(reverse("home")).content.decode()
    assert "Start annotating" in body
    assert "You have ranked 0 tasks here." in body
    assert "2 tasks still need rankings." in body


def _disagreeing_task(project):
    task = make_task(project, k=3)
    users = make_annotators(2, prefix="dis")
    from annotation.assignment import RankingSubmission, submit_ranking

    submit_ranking(
        next_task(project, users[0]),
        users[0],
        RankingSubmission([[1], [2], [3]], rationale="a is right"),
    )
    submit_ranking(
        next_task(project, users[1]),
        users[1],
        RankingSubmission([[3], [2], [1]], rationale="c is kinder"),
    )
    return task


def test_review_queue_lists_low_agreement_tasks(project, researcher):
    task = _disagreeing_task(project)
    agreed = make_task(project, k=2)
    RankingTask.objects.filter(pk=agreed.pk).update(ranking_count=2, agreement=1.0)
    body = (
        login(researcher)
        .get(reverse("annotation:review", args=[project.name]))
        .content.decode()
    )
    assert f"#{task.pk}</a>" in body
    assert f"#{agreed.pk}</a>" not in body


def test_review_page_shows_every_ranking_and_rationale(project, researcher):
    task = _disagreeing_task(project)
    body = (
        login(researcher)
        .get(reverse("annotation:review_task", args=[project.name, task.pk]))
        .content.decode()
    )
    assert "a is right" in body and "c is kinder" in body
    assert "1 &gt; 2 &gt; 3" in body and "3 &gt; 2 &gt; 1" in body


def test_adjudication_records_the_order_who_and_when(project, researcher):
    task = _disagreeing_task(project)
    a, b, c = response_ids(task)
    url = reverse("annotation:review_task", args=[project.name, task.pk])
    response = login(researcher).post(
        url, {f"rank-{a}": "2", f"rank-{b}": "1", f"rank-{c}": "2"}
    )
    assert response.status_code == 303
    task.refresh_from_db()
    assert task.adjudicated_order == [[b], [a, c]]
    assert task.adjudicated_by == researcher
    assert task.adjudicated_at is not None


def test_admin_marks_a_task_gold_by_its_best_response(project, admin_user):
    task = make_task(project, k=3)
    a, b, c = response_ids(task)
    url = reverse("annotation:gold", args=[project.name])
    assert login(admin_user).post(url, {"task": task.pk, "best": b}).status_code == 303
    task.refresh_from_db()
    assert (task.is_gold, task.gold_order) == (True, [[b], sorted([a, c])])


def test_gold_form_rejects_a_response_of_another_task(project, admin_user):
    task, other = make_task(project, k=2), make_task(project, k=2)
    url = reverse("annotation:gold", args=[project.name])
    response = login(admin_user).post(
        url, {"task": task.pk, "best": response_ids(other)[0]}
    )
    assert response.status_code == 400
    assert RankingTask.objects.get(pk=task.pk).is_gold is False


def test_admin_reinstates_a_paused_annotator(project, admin_user, annotator):
    AnnotatorProfile.objects.create(
        user=annotator, is_paused=True, paused_reason="gold"
    )
    url = reverse("annotation:reinstate", args=[project.name, annotator.pk])
    assert login(admin_user).post(url).status_code == 303
    assert AnnotatorProfile.objects.get(user=annotator).is_paused is False


def test_settings_save_and_reject_out_of_range_values(project, admin_user):
    url = reverse("annotation:settings", args=[project.name])
    client = login(admin_user)
    fields = {
        "title": "Demo",
        "guidelines": "Be kind.",
        "responses_per_task": 3,
        "overlap": 2,
        "lease_minutes": 20,
        "aspects": "helpfulness, honesty",
        "require_rationale": "on",
        "gold_rate": 0.2,
        "gold_threshold": 0.6,
        "gold_min_tasks": 4,
        "revision_minutes": 15,
    }
    assert client.post(url, fields).status_code == 303
    project.refresh_from_db()
    assert project.revision_minutes == 15
    assert (project.overlap, project.aspects, project.require_rationale) == (
        2,
        ["helpfulness", "honesty"],
        True,
    )
    bad = client.post(url, {**fields, "responses_per_task": 12, "gold_rate": 1.5})
    assert bad.status_code == 400
    assert "responses per task must be 2 to 9, got 12" in bad.content.decode()
    assert "gold rate must be between 0 and 1, got 1.5" in bad.content.decode()


def test_dashboard_draws_charts_and_the_annotator_table(project, admin_user):
    _disagreeing_task(project)
    body = (
        login(admin_user)
        .get(reverse("annotation:dashboard", args=[project.name]))
        .content.decode()
    )
    assert body.count("<svg") == 3  # no gold task yet: that chart says so
    assert "No data yet." in body
    assert "Rankings per day" in body
    assert "dis0" in body and "dis1" in body
    assert "Krippendorff" in body


@pytest.mark.parametrize(
    "model",
    [
        "project",
        "annotatorprofile",
        "prompt",
        "rankingtask",
        "lease",
        "ranking",
        "snapshot",
        "snapshotexport",
        "snapshotcomparison",
        "projectfigures",
        "round",
    ],
)
def test_django_admin_lists_annotation_rows(project, model):
    from django.contrib.auth.models import User

    _disagreeing_task(project)
    superuser = User.objects.create_superuser("root", password="root-pw-123")
    response = login(superuser).get(f"/django-admin/annotation/{model}/")
    assert response.status_code == 200


def test_double_submit_over_http_stores_one_ranking(project, annotator):
    make_tasks(project, 2)
    client = login(annotator)
    client.post(annotate_url(project))
    lease = held_lease(annotator)
    fields = {
        "lease": lease.pk,
        "order": json.dumps([[h] for h in handles(lease.task)]),
    }
    assert client.post(submit_url(project), fields).status_code == 303
    assert client.post(submit_url(project), fields).status_code == 303
    assert Ranking.objects.filter(annotator=annotator).count() == 1
    assert RankingTask.objects.get(pk=lease.task_id).ranking_count == 1


def test_annotator_paused_by_a_gold_task_sees_the_reason_in_place(project, annotator):
    from annotation.gold import mark_gold

    project.gold_rate, project.gold_min_tasks, project.gold_threshold = 1.0, 1, 0.5
    project.save()
    task = make_task(project, k=2)
    make_task(project, k=2)
    a, b = response_ids(task)
    mark_gold(task, [[a], [b]])
    client = login(annotator)
    client.post(annotate_url(project))
    response = client.post(
        submit_url(project),
        {"lease": held_lease(annotator).pk, "order": json.dumps([[2], [1]])},
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert response.status_code == 403
    assert body.startswith('<section id="workspace"')
    assert "gold accuracy 0% over 1 gold tasks" in body
