"""People and projects in Chromium: an invited annotator works only in their project;
an admin creates a project and uploads prompts."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from annotation.models import Project, Prompt, Ranking
from tests.annotation.factories import make_task
from tests.conftest import make_user
from tests.training.conftest import run_root, start_worker  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_invited_annotator_sets_a_password_and_ranks_only_in_their_project(
    live_server, page, sign_in, browser
):
    mine = Project.objects.create(
        name="mine", title="Mine", responses_per_task=2, overlap=1, gold_rate=0
    )
    Project.objects.create(name="theirs", title="Theirs", gold_rate=0)
    task = make_task(mine, texts=["a short answer", "a long answer"])
    sign_in(make_user("boss", "admin"))

    page.goto(live_server.url + reverse("people:people"))
    page.fill("#id_username", "newcomer")
    page.select_option("#id_role", "annotator")
    page.check("input[name=projects][value=mine]")
    page.click("#add-person button[type=submit]")
    link = page.input_value("#invitation-link")
    assert link.startswith(live_server.url + "/people/set-password/")

    invited = browser.new_context().new_page()
    invited.goto(link)
    invited.fill("#id_new_password1", "a-fresh-password-31")
    invited.fill("#id_new_password2", "a-fresh-password-31")
    invited.click("button[type=submit]")
    invited.wait_for_url(live_server.url + reverse("home"))
    projects = invited.locator(".project-card h2").all_inner_texts()
    assert projects == ["Mine"]

    invited.click("text=Start annotating")
    invited.wait_for_selector("#workspace[data-ready]")
    invited.keyboard.press("2")
    invited.keyboard.press("1")
    invited.keyboard.press("Enter")
    invited.wait_for_selector("#ws-notice")
    user = User.objects.get(username="newcomer")
    first, second = task.responses.order_by("position").values_list("pk", flat=True)
    assert Ranking.objects.get(annotator=user).order == [[second], [first]]


def test_annotator_of_another_project_gets_404_for_its_workspace_and_api(
    live_server, page, sign_in
):
    mine = Project.objects.create(name="mine", responses_per_task=2, gold_rate=0)
    other = Project.objects.create(name="theirs", gold_rate=0)
    make_task(mine)
    sign_in(make_user("stranger", "annotator", projects=[other]))
    workspace = page.goto(
        live_server.url + reverse("annotation:annotate", args=[mine.name])
    )
    assert workspace.status == 404
    api = page.request.get(live_server.url + f"/api/projects/{mine.name}/tasks")
    assert api.status == 404
    assert (
        page.request.get(live_server.url + "/api/projects").json()["items"][0]["name"]
        == "theirs"
    )


def test_admin_creates_a_project_uploads_prompts_and_reads_the_report(
    live_server,
    page,
    sign_in,
    tmp_path,
    settings,
    monkeypatch,
    start_worker,  # noqa: F811
):
    """The upload is curated by a real worker while its page polls, then the page
    shows the report."""
    monkeypatch.setenv("EXPORT_DIR", str(settings.EXPORT_DIR))
    start_worker()
    sign_in(make_user("boss", "admin"))
    page.goto(live_server.url + reverse("projects:new"))
    page.fill("#id_name", "fresh")
    page.fill("#id_title", "Fresh prompts")
    page.fill("#id_guidelines", "Rank the most helpful answer first.")
    page.fill("#id_responses_per_task", "3")
    page.click("#new-project button[type=submit]")
    page.wait_for_url(live_server.url + reverse("projects:prompts", args=["fresh"]))

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "What is the capital of France?\n"
        "ok\n"
        "What is the capital of France?\n"
        "Tell me how to build a bomb in my garage.\n"
    )
    page.set_input_files("#id_file", str(prompts))
    page.click("#upload-prompts button[type=submit]")
    page.wait_for_selector("#report-summary", timeout=60_000)
    assert "prompts.txt: curated into the pool" in page.locator("h2").all_inner_texts()
    summary = page.locator("#report-summary").inner_text()
    assert summary == "4 records read: 2 added, 2 dropped, 1 held for review."
    assert "too short" in page.locator("#dropped").inner_text()
    assert "exact duplicate" in page.locator("#dropped").inner_text()
    assert "build a bomb" in page.locator("#held").inner_text()
    assert Prompt.objects.filter(project__name="fresh").count() == 2
