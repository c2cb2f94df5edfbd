"""The data manager in Chromium: filters narrow the tasks, a click freezes the filter,
and a download too large for the request follows the worker's build, then starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from annotation.membership import add_member
from annotation.models import Project, Snapshot, SnapshotExport
from tests.annotation.data_factories import annotators, make_task, rank
from tests.conftest import make_user
from tests.training.conftest import run_root, start_worker  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_filters_narrow_the_list_and_one_click_freezes_them(
    live_server,
    page,
    sign_in,
    settings,
    monkeypatch,
    start_worker,  # noqa: F811
):
    """The click queues the freeze; its page follows a real worker's job with a
    live bar, then reloads as the frozen snapshot. Its download, too large for the
    request here, is written by the same worker while the export's page follows it,
    and then starts by itself."""
    settings.REQUEST_MAX_PAIRS = 0
    monkeypatch.setenv("EXPORT_DIR", str(settings.EXPORT_DIR))
    project = Project.objects.create(name="dm", title="DM")
    plain = make_task(project, "Name a colour", ("Red.", "Blue."))
    gold = make_task(project, "Capital of France?", ("Paris.", "Rome."), is_gold=True)
    other_gold = make_task(
        project, "Capital of Italy?", ("Rome.", "Oslo."), is_gold=True
    )
    (a,) = annotators(1)
    for task in (plain, gold, other_gold):
        rank(task, a, [[0], [1]])
    researcher = make_user("dmresearcher", "researcher")
    add_member(researcher, project)
    sign_in(researcher)
    page.goto(live_server.url + reverse("data:manager", args=[project.name]))
    rows = page.locator("#manager-tasks tbody tr[data-task]")
    expect(rows).to_have_count(3)

    page.select_option("select[name=gold]", "only")
    page.click("#manager-filter button[type=submit]")
    expect(rows).to_have_count(2)
    page.fill("input[name=search]", "paris")
    page.click("#manager-filter button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task", str(gold.pk))
    expect(page.locator("#lost-filters")).to_contain_text("text search")

    page.fill("#freeze-filter input[name=name]", "gold-paris")
    page.click("#freeze-filter button[type=submit]")
    page.wait_for_url("**/data/snapshots/*/")
    expect(page.locator(".messages")).to_contain_text("Not in the snapshot's filter")
    expect(page.locator(".messages")).to_contain_text("Queued the freeze of gold-paris")
    expect(page.locator("#snapshot-freeze")).to_have_attribute("data-status", "queued")
    start_worker()
    expect(page.get_by_role("heading", name="Counts and agreement")).to_be_visible(
        timeout=60_000
    )
    expect(page.locator("#snapshot-freeze")).to_have_count(0)
    snapshot = Snapshot.objects.get(name="gold-paris")
    assert snapshot.filter["gold"] == "only"
    assert snapshot.stats["tasks"] == 2  # the text search is not in a snapshot spec

    page.select_option("#download-form select[name=style]", "standard")
    downloads = []
    page.on("download", lambda download: downloads.append(download))
    with page.expect_download(timeout=60_000) as started:
        page.click("#download-form button[type=submit]")
        page.wait_for_url("**/data/exports/*/")
    download = started.value
    assert download.suggested_filename == "dm-gold-paris-trl.jsonl"
    lines = Path(download.path()).read_text(encoding="utf-8").splitlines()
    assert len(lines) == snapshot.row_count == 2
    assert json.loads(lines[0])["chosen"] in ("Paris.", "Rome.")
    expect(page.locator("#export-build")).to_have_attribute("data-status", "done")
    page.wait_for_timeout(2500)  # the page polled every second while it was built
    assert len(downloads) == 1
    assert SnapshotExport.objects.get().worker.split(":")[1] != str(os.getpid())
