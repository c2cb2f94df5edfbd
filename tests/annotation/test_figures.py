"""A large project's dashboard and overview figures are the worker's: they read every
ranking (about 1 and 1.6 s at 30,000 rankings, bench/dashboard.py), so past
REQUEST_MAX_RANKINGS the page shows the kept figures, queues newer ones when rankings
came in, and reloads itself when they are ready."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.figures import (
    LOST_AFTER_SECONDS,
    fail_lost_figures,
    jsonable,
    page_figures,
    run_figures,
)
from annotation.models import ProjectFigures
from tests.annotation.data_factories import annotators, make_task, rank
from tests.conftest import login, make_user
from tests.training.conftest import run_root, start_worker, wait_for  # noqa: F401

DASHBOARD = "/projects/demo/dashboard/"
OVERVIEW = "/overview/demo/"


@pytest.fixture
def ranked(project):
    """Three tasks of four responses, each ranked by two annotators."""
    people = annotators(2)
    for i in range(3):
        task = make_task(project, f"Question {i}?")
        rank(task, people[0], [[0], [1], [2], [3]])
        rank(task, people[1], [[1], [0], [2], [3]])
    return project


@pytest.fixture
def by_worker(settings):
    """Every project is too large for its figures to be computed in the request."""
    settings.REQUEST_MAX_RANKINGS = 0


def test_a_small_projects_figures_are_computed_in_the_request(ranked, admin_user):
    page = login(admin_user).get(DASHBOARD)
    assert page.context["shown"].job is None and page.context["answers"] == 6
    assert b'id="figures-status"' not in page.content
    assert not ProjectFigures.objects.exists()


def test_the_dashboard_queues_its_figures_then_shows_the_workers(
    ranked, admin_user, settings
):
    inline = login(admin_user).get(DASHBOARD).context
    settings.REQUEST_MAX_RANKINGS = 0
    client = login(admin_user)
    first = client.get(DASHBOARD)
    job = ProjectFigures.objects.get()
    assert (job.page, job.status, job.created_by) == ("dashboard", "queued", admin_user)
    assert b"Computing the figures" in first.content
    assert b'hx-trigger="every 2s"' in first.content
    assert b"annotator-table" not in first.content  # nothing to show yet
    poll = client.get(DASHBOARD, {"figures": 1}, headers={"HX-Request": "true"})
    assert b"Computing the figures" in poll.content and b"<html" not in poll.content

    done = run_figures(job.pk)
    assert (done.status, done.fingerprint) == ("done", f"6:{ranked_newest()}")
    poll = client.get(DASHBOARD, {"figures": 1}, headers={"HX-Request": "true"})
    assert poll["HX-Refresh"] == "true"
    shown = client.get(DASHBOARD)
    assert shown.context["answers"] == inline["answers"] == 6
    assert shown.context["agreement"] == pytest.approx(jsonable(inline["agreement"]))
    assert (
        b"annotator-table" in shown.content
        and b"Computed by the worker" in shown.content
    )
    assert b"hx-trigger" not in shown.content  # fresh: nothing queued, no poll
    assert ProjectFigures.objects.get().status == "done"


def ranked_newest() -> int:
    from annotation.models import Ranking

    return Ranking.versions.order_by("-id").values_list("id", flat=True)[0]


def test_new_rankings_queue_newer_figures_at_most_once_a_minute(
    ranked, admin_user, by_worker
):
    client = login(admin_user)
    client.get(DASHBOARD)
    job = ProjectFigures.objects.get()
    run_figures(job.pk)
    late = make_user("late1", "annotator")
    rank(make_task(ranked, "Question 9?"), late, [[0], [1], [2], [3]])
    shown = client.get(DASHBOARD)  # computed just now: shown as they are
    assert ProjectFigures.objects.get().status == "done"
    assert shown.context["answers"] == 6 and b"hx-trigger" not in shown.content

    ProjectFigures.objects.update(computed_at=timezone.now() - timedelta(seconds=61))
    shown = client.get(DASHBOARD)  # a minute old and rankings came in: again
    assert ProjectFigures.objects.get().status == "queued"
    assert shown.context["answers"] == 6  # the kept ones, until the new ones land
    assert b"Computing newer figures" in shown.content
    run_figures(job.pk)
    assert client.get(DASHBOARD).context["answers"] == 7


def test_figures_are_computed_again_once_they_are_old_whatever_came_in(
    ranked, admin_user, by_worker, settings
):
    client = login(admin_user)
    client.get(DASHBOARD)
    run_figures(ProjectFigures.objects.get().pk)
    ProjectFigures.objects.update(
        computed_at=timezone.now() - timedelta(seconds=settings.FIGURES_MAX_AGE - 5)
    )
    client.get(DASHBOARD)
    assert ProjectFigures.objects.get().status == "done"
    ProjectFigures.objects.update(
        computed_at=timezone.now() - timedelta(seconds=settings.FIGURES_MAX_AGE + 5)
    )
    client.get(DASHBOARD)
    assert ProjectFigures.objects.get().status == "queued"


def test_a_failed_computation_says_why_stops_the_poll_and_is_asked_again(
    ranked, admin_user, by_worker, monkeypatch
):
    import annotation.figures as figures

    client = login(admin_user)
    client.get(DASHBOARD)
    job = ProjectFigures.objects.get()

    def broken(project, progress):
        raise MemoryError("out of memory")

    monkeypatch.setitem(figures.COMPUTE, "dashboard", broken)
    with pytest.raises(MemoryError):
        run_figures(job.pk)
    poll = client.get(DASHBOARD, {"figures": 1}, headers={"HX-Request": "true"})
    assert b"out of memory" in poll.content and b"hx-trigger" not in poll.content
    monkeypatch.undo()
    client.get(DASHBOARD)  # the next visit asks again
    assert ProjectFigures.objects.get().status == "queued"
    assert run_figures(job.pk).status == "done"


def test_a_lost_workers_computation_fails(ranked, by_worker):
    job = page_figures(ranked, "dashboard").job
    ProjectFigures.objects.filter(pk=job.pk).update(
        status="running",
        heartbeat_at=timezone.now() - timedelta(seconds=LOST_AFTER_SECONDS + 5),
        worker="elsewhere:1:1",
    )
    assert fail_lost_figures() == [job.pk]
    assert "asks for them again" in ProjectFigures.objects.get().error


def test_the_overview_shows_the_workers_leaderboards_as_it_computes_them(
    ranked, admin_user, settings
):
    inline = login(admin_user).get(OVERVIEW)
    settings.REQUEST_MAX_RANKINGS = 0
    client = login(admin_user)
    assert b"Computing the figures" in client.get(OVERVIEW).content
    run_figures(ProjectFigures.objects.get(page="overview").pk)
    shown = client.get(OVERVIEW)
    assert [b["source"] for b in shown.context["boards"]] == [
        b["source"] for b in inline.context["boards"]
    ]
    assert shown.context["boards"][0]["svg"] == inline.context["boards"][0]["svg"]
    assert shown.context["boards"][0]["svg"].startswith("<svg")


def test_jsonable_makes_dataclasses_dicts_and_nan_none():
    from dataclasses import dataclass

    @dataclass
    class Row:
        name: str
        score: float
        days: tuple

    assert jsonable({"rows": [Row("a", float("nan"), (1, 2))], None: 1.5}) == {
        "rows": [{"name": "a", "score": None, "days": [1, 2]}],
        "": 1.5,
    }


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_computes_the_dashboards_figures(
    ranked,
    admin_user,
    by_worker,
    start_worker,  # noqa: F811
):
    client = login(admin_user)
    client.get(DASHBOARD)
    start_worker()
    wait_for(
        lambda: ProjectFigures.objects.get().status == "done",
        timeout=120,
        what="the worker to compute the figures",
    )
    job = ProjectFigures.objects.get()
    assert job.worker.split(":")[1] != str(os.getpid())
    assert client.get(DASHBOARD).context["answers"] == 6
