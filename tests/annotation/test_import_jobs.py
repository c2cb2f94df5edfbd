"""Imports run by the worker: staged uploads, a report that follows the job, caps
that refuse a bomb with a clear error (issue 12, item 6)."""

from __future__ import annotations

import gzip
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from annotation.importing import (
    LOST_AFTER_SECONDS,
    fail_lost_imports,
    queue_upload,
    remove_orphan_uploads,
    run_import,
)
from annotation.models import Corpus, ImportReport, Prompt, Ranking
from tests.api_world import client_for
from tests.training.conftest import run_root, start_worker, wait_for  # noqa: F401

ROW = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}


def _jsonl(n: int) -> bytes:
    return "".join(
        json.dumps({**ROW, "prompt": f"Hi number {i}?"}) + "\n" for i in range(n)
    ).encode()


def _bomb() -> bytes:
    """About 200 KB of gzip that would inflate to 200 MiB of blank lines."""
    return gzip.compress(b"\n" * (200 << 20), compresslevel=9)


@pytest.fixture
def exports(settings, tmp_path, monkeypatch) -> Path:
    """This test's EXPORT_DIR, for the test and for a worker it starts."""
    settings.EXPORT_DIR = tmp_path / "exports"
    monkeypatch.setenv("EXPORT_DIR", str(settings.EXPORT_DIR))
    return settings.EXPORT_DIR


def test_an_upload_is_staged_whole_queued_and_imported_once(
    researcher, project, exports
):
    upload = SimpleUploadedFile("prefs.jsonl", _jsonl(3))
    report = queue_upload(project, upload, user=researcher)
    staged = Path(report.staged_path)
    assert report.status == ImportReport.Status.QUEUED
    assert [p.name for p in (exports / "uploads").iterdir()] == [staged.parent.name]
    assert [p.name for p in staged.parent.iterdir()] == ["prefs.jsonl"]
    assert staged.read_bytes() == _jsonl(3)
    assert Ranking.objects.count() == 0  # the web process imported nothing

    done = run_import(report.pk)
    assert (done.status, done.is_applied, done.rankings_created) == ("done", True, 3)
    assert (done.progress, done.staged_path, staged.exists()) == (1.0, "", False)
    assert run_import(report.pk).rankings_created == 3  # delivered twice: once
    assert Ranking.objects.count() == 3


def test_the_page_queues_an_upload_and_its_report_shows_the_progress(
    researcher, project, exports
):
    client = client_for(researcher)
    url = reverse("data:imports", args=[project.name])
    answer = client.post(url, {"file": SimpleUploadedFile("p.jsonl", _jsonl(2))})
    report = ImportReport.objects.get()
    assert answer.status_code == 302
    assert answer.url == reverse("data:import_report", args=[report.pk])
    page = client.get(answer.url).content.decode()
    assert "waiting for the worker" in page and 'hx-trigger="every 1s"' in page
    # What the worker writes as it reads the file, as the page polls it.
    ImportReport.objects.filter(pk=report.pk).update(
        status="running", progress=0.42, records=1234
    )
    poll = client.get(answer.url, HTTP_HX_REQUEST="true").content.decode()
    assert poll.startswith('<section id="import-report"')
    assert '<progress id="import-progress" max="100" value="42">' in poll
    assert "1234 records so far" in poll and "every 1s" in poll
    ImportReport.objects.filter(pk=report.pk).update(status="queued")
    run_import(report.pk)
    final = client.get(answer.url, HTTP_HX_REQUEST="true").content.decode()
    assert "p.jsonl: imported" in final and "hx-trigger" not in final


def test_a_staged_upload_no_import_needs_is_removed(researcher, project, exports):
    """A process killed between staging and queueing runs no clean-up; the next
    import does it, an hour on."""
    queued = queue_upload(project, SimpleUploadedFile("a.jsonl", _jsonl(1)))
    hour_ago = time.time() - 3601
    os.utime(Path(queued.staged_path), (hour_ago, hour_ago))
    os.utime(Path(queued.staged_path).parent, (hour_ago, hour_ago))
    stray = exports / "uploads" / "left-by-a-killed-process"
    stray.mkdir()
    (stray / "prefs.jsonl").write_bytes(b"{}\n")
    arriving = exports / "uploads" / "still-arriving"
    arriving.mkdir()
    (arriving / "prefs.jsonl.part").write_bytes(b"{")
    for path in (stray / "prefs.jsonl", stray, arriving):
        os.utime(path, (hour_ago, hour_ago))  # the .part file is still written to
    assert remove_orphan_uploads() == [stray.name]
    assert Path(queued.staged_path).exists() and arriving.exists()
    assert not stray.exists()


def test_an_import_whose_worker_still_runs_here_is_not_lost_however_late_its_heartbeat(
    project, exports
):
    """On SQLite the landing transaction holds the database's lock, so the import's
    heartbeat cannot be written while its rows land, for minutes on a big file; a
    worker of this host that still runs is asked, not the clock (as the training
    reaper does). A gone one's import is failed, as before."""
    from config.workers import current_worker

    queued = queue_upload(project, SimpleUploadedFile("a.jsonl", _jsonl(1)))
    started = timezone.now()
    ImportReport.objects.filter(pk=queued.pk).update(
        status=ImportReport.Status.RUNNING,
        heartbeat_at=started,
        worker=current_worker(),  # this test's process: it runs
    )
    later = started + timedelta(seconds=LOST_AFTER_SECONDS * 10)
    assert fail_lost_imports(now=later) == []
    assert ImportReport.objects.get(pk=queued.pk).status == "running"
    assert Path(queued.staged_path).exists()

    machine, _, _ = current_worker().rsplit(":", 2)
    ImportReport.objects.filter(pk=queued.pk).update(worker=f"{machine}:999999999:1")
    assert fail_lost_imports(now=later) == [queued.pk]
    assert ImportReport.objects.get(pk=queued.pk).status == "failed"
    assert not Path(queued.staged_path).exists()


def _poll(client, report_id: int) -> dict:
    return client.get(f"/api/imports/{report_id}").json()


def test_a_real_worker_imports_an_upload_and_the_page_follows_it(
    researcher,
    project,
    exports,
    start_worker,  # noqa: F811
):
    client = client_for(researcher)
    answer = client.post(
        f"/api/projects/{project.name}/imports",
        {"file": SimpleUploadedFile("many.jsonl.gz", gzip.compress(_jsonl(3000)))},
    )
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    report_id = answer.json()["id"]
    start_worker()
    seen = []

    def finished() -> bool:
        body = _poll(client, report_id)
        seen.append((body["status"], body["progress"]))
        return body["status"] in ("done", "failed")

    wait_for(finished, timeout=120, what="the worker to import the upload")
    body = _poll(client, report_id)
    assert (body["status"], body["error"]) == ("done", "")
    assert (body["rankings_created"], body["progress"]) == (3000, 1.0)
    assert Ranking.objects.filter(task__project=project).count() == 3000
    assert list((exports / "uploads").iterdir()) == []
    page = client.get(reverse("data:import_report", args=[report_id]))
    assert "many.jsonl.gz: imported" in page.content.decode()
    assert [s for s, _ in seen] == sorted(
        (s for s, _ in seen), key=["queued", "running", "done"].index
    )


def test_a_real_worker_refuses_a_gzip_bomb_with_a_clear_error(
    researcher,
    project,
    exports,
    start_worker,  # noqa: F811
):
    client = client_for(researcher)
    bomb = _bomb()
    assert len(bomb) < 1 << 20
    answer = client.post(
        f"/api/projects/{project.name}/imports",
        {"file": SimpleUploadedFile("bomb.jsonl.gz", bomb)},
    )
    report_id = answer.json()["id"]
    start_worker()
    started = time.monotonic()
    wait_for(
        lambda: _poll(client, report_id)["status"] in ("done", "failed"),
        timeout=120,
        what="the worker to refuse the bomb",
    )
    body = _poll(client, report_id)
    assert body["status"] == "failed"
    assert body["error"].startswith("bomb.jsonl.gz would decompress to more than")
    assert "compression bomb" in body["error"]
    assert time.monotonic() - started < 120
    assert Ranking.objects.count() == 0 and body["is_applied"] is False
    assert list((exports / "uploads").iterdir()) == []
    page = client.get(reverse("data:import_report", args=[report_id])).content
    assert b"refused, nothing imported" in page and b"compression bomb" in page


def test_an_import_whose_worker_is_killed_fails_and_lands_nothing(
    researcher,
    project,
    exports,
    start_worker,  # noqa: F811
):
    client = client_for(researcher)
    answer = client.post(
        f"/api/projects/{project.name}/imports",
        {"file": SimpleUploadedFile("big.jsonl", _jsonl(20_000))},
    )
    report_id = answer.json()["id"]
    worker = start_worker()
    wait_for(
        lambda: _poll(client, report_id)["status"] != "queued",
        timeout=120,
        what="the worker to take the import",
    )
    assert _poll(client, report_id)["status"] == "running"
    worker.kill()
    # The worker's process ran on this host and is gone: the next look at the
    # import fails it, without waiting for its heartbeat to go silent.
    body = _poll(client, report_id)
    assert body["status"] == "failed", body
    assert body["error"].startswith("the worker running this import stopped")
    assert "is gone" in body["error"]
    assert Ranking.objects.count() == 0
    assert list((exports / "uploads").iterdir()) == []
    # Resumable: the same file uploaded again lands whole.
    again = client.post(
        f"/api/projects/{project.name}/imports",
        {"file": SimpleUploadedFile("big.jsonl", _jsonl(20_000))},
    ).json()["id"]
    start_worker()
    wait_for(
        lambda: _poll(client, again)["status"] in ("done", "failed"),
        timeout=300,
        what="the second worker to import the file",
    )
    assert _poll(client, again)["rankings_created"] == 20_000


def test_a_real_worker_curates_prompt_files_and_corpora_the_pages_follow(
    admin_user,
    project,
    exports,
    start_worker,  # noqa: F811
):
    """Prompt-file and corpus uploads take the same road: staged by the request,
    curated by the worker, followed by their job page; a corpus that is a gzip bomb
    is refused by the import's ratio cap."""
    client = client_for(admin_user)
    prompts = "".join(
        f"Question number {i}: what is {i} times {i + 3}?\n" for i in range(30)
    )
    answer = client.post(
        reverse("projects:prompts", args=[project.name]),
        {"file": SimpleUploadedFile("prompts.txt", prompts.encode() + b"ok\n")},
    )
    assert answer.status_code == 303
    prompt_job = ImportReport.objects.get(kind="prompts").pk
    documents = "".join(
        json.dumps({"text": f"Document {i} tells of the river and town number {i}."})
        + "\n"
        for i in range(2000)
    )
    corpus_job = client.post(
        f"/api/projects/{project.name}/corpora",
        {
            "file": SimpleUploadedFile(
                "town.jsonl.gz", gzip.compress(documents.encode())
            ),
            "corpus": "town",
        },
    ).json()["id"]
    bomb_job = client.post(
        f"/api/projects/{project.name}/corpora",
        {"file": SimpleUploadedFile("bomb.txt.gz", _bomb()), "corpus": "bomb"},
    ).json()["id"]
    assert Prompt.objects.count() == 0 and not Corpus.objects.exists()
    start_worker()
    jobs = (prompt_job, corpus_job, bomb_job)
    wait_for(
        lambda: all(_poll(client, j)["status"] in ("done", "failed") for j in jobs),
        timeout=300,
        what="the worker to curate the uploads",
    )
    prompt_page = client.get(answer.url).content.decode()
    assert "31 records read: 30 added, 1 dropped, 0 held for review." in prompt_page
    assert "too short" in prompt_page and "hx-trigger" not in prompt_page
    assert Prompt.objects.filter(project=project).count() == 30
    corpus = _poll(client, corpus_job)
    assert (corpus["status"], corpus["progress"]) == ("done", 1.0)
    assert corpus["details"]["corpus"] == "town"
    assert Corpus.objects.get(name="town").records == 2000
    bomb = _poll(client, bomb_job)
    assert bomb["status"] == "failed" and "compression bomb" in bomb["error"]
    assert not Corpus.objects.filter(name="bomb").exists()
    assert list((exports / "uploads").iterdir()) == []
