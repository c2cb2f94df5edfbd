"""The pairwise workspace in Chromium: A and B, and the strength scale by keyboard."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from annotation.models import Lease, Project, Ranking
from tests.annotation.factories import make_task, response_ids
from tests.conftest import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pair_in_browser(live_server, page, sign_in):
    """A pairwise project with two tasks, the workspace open for its annotator."""
    project = Project.objects.create(
        name="ab",
        title="A/B",
        mode=Project.Mode.PAIRWISE,
        responses_per_task=2,
        overlap=3,
        gold_rate=0,
    )
    first = make_task(project, texts=["Hello! How can I help?", "hi"])
    make_task(project)
    user = make_user("pairannotator", "annotator", projects=[project])
    sign_in(user)
    page.goto(live_server.url + reverse("annotation:annotate", args=[project.name]))
    page.wait_for_selector("#workspace[data-ready]")
    return project, first, user


def wait_for_next_task(page, lease_id: int) -> None:
    page.wait_for_function(
        "id => document.querySelector('#workspace') && document.querySelector('#workspace').dataset.lease !== String(id)",
        arg=lease_id,
    )


def test_keys_choose_a_strength_flag_and_submit(pair_in_browser, page):
    project, task, user = pair_in_browser
    a, b = response_ids(task)
    lease = Lease.objects.get(annotator=user)
    page.keyboard.press("6")
    expect(page.locator("#ranking-status")).to_have_text("B better.")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#point-7 input")).to_be_checked()
    for key in ["f", "a", "b"]:
        page.keyboard.press(key)
    expect(page.locator("#unsafe-1")).to_be_checked()
    expect(page.locator("#all-bad")).to_be_checked()
    page.keyboard.press("Enter")
    wait_for_next_task(page, lease.pk)
    assert page.locator("#ws-notice").inner_text() == "Ranking saved."
    ranking = Ranking.objects.get(annotator=user)
    assert (ranking.order, ranking.strength) == ([[b], [a]], 3)
    assert (ranking.unsafe_response_ids, ranking.all_bad) == ([a], True)


def test_enter_without_a_choice_asks_for_one_and_equals_is_about_the_same(
    pair_in_browser, page
):
    project, task, user = pair_in_browser
    lease = Lease.objects.get(annotator=user)
    page.keyboard.press("Enter")
    expect(page.locator("#ranking-status")).to_have_text(
        "Choose a point on the scale first: keys 1 to 7."
    )
    assert Ranking.objects.count() == 0
    page.keyboard.press("3")
    page.keyboard.press("=")
    expect(page.locator("#point-4 input")).to_be_checked()
    page.keyboard.press("Enter")
    wait_for_next_task(page, lease.pk)
    ranking = Ranking.objects.get(annotator=user)
    assert (ranking.order, ranking.strength) == ([response_ids(task)], 0)
