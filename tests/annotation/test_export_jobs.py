"""Snapshot exports built by the worker: a download of a snapshot over
REQUEST_MAX_PAIRS pairs, not exported in those options before, is queued (the API
answers 202 with Retry-After, the page follows a live bar), built once whole or failed
with the reason, and then sent as the file (a million pairs took some 10 s to write
in the web request)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

import annotation.export as export
from annotation.export import (
    LOST_AFTER_SECONDS,
    export_path,
    export_snapshot,
    fail_lost_exports,
    queue_export,
    run_export,
)
from annotation.models import SnapshotExport
from annotation.snapshots import freeze_snapshot
from config.workers import current_worker
from tests.annotation.data_factories import annotators, make_task, rank
from tests.api_world import client_for
from tests.training.conftest import run_root, start_worker, wait_for  # noqa: F401

OPTIONS = {
    "fmt": "trl",
    "style": "conversational",
    "prompt": "explicit",
    "file_format": "jsonl",
}


@pytest.fixture
def snapshot(project):
    """A snapshot of 36 pairs (three tasks, two annotators, all pairs)."""
    people = annotators(2)
    for i in range(3):
        task = make_task(project, f"Question {i}?")
        for person in people:
            rank(task, person, [[0], [1], [2], [3]])
    return freeze_snapshot(project, "s")


@pytest.fixture
def by_worker(settings):
    """Every snapshot is too large to export in the request."""
    settings.REQUEST_MAX_PAIRS = 0


def _download(client: Client, snapshot, **options):
    query = "&".join(f"{k}={v}" for k, v in {**OPTIONS, **options}.items())
    return client.get(f"/api/snapshots/{snapshot.pk}/download?{query}")


def test_a_small_snapshot_is_exported_in_the_request(snapshot, researcher):
    response = _download(client_for(researcher), snapshot)
    assert response.status_code == 200
    assert len(b"".join(response.streaming_content).splitlines()) == 36
    assert not SnapshotExport.objects.exists()


def test_the_api_queues_a_large_export_answers_202_then_the_file(
    snapshot, researcher, by_worker, tmp_path
):
    client = client_for(researcher)
    first = _download(client, snapshot)
    assert first.status_code == 202 and first["Retry-After"] == "2"
    body = first.json()
    assert (body["status"], body["progress"], body["snapshot"]) == (
        "queued",
        0.0,
        snapshot.pk,
    )
    again = _download(client, snapshot)  # asked again while queued: the same job
    assert (again.status_code, again.json()["id"]) == (202, body["id"])
    assert SnapshotExport.objects.count() == 1

    done = run_export(body["id"])
    assert (done.status, done.progress, done.error, done.rows) == ("done", 1.0, "", 36)
    assert done.size == export_path(snapshot, **OPTIONS).stat().st_size
    assert done.finished_at is not None and done.created_by == researcher

    sent = _download(client, snapshot)
    assert sent.status_code == 200
    direct = export_snapshot(snapshot, tmp_path / "direct.jsonl", card=False)
    assert b"".join(sent.streaming_content) == direct.read_bytes()


def test_other_options_are_another_export(snapshot, researcher, by_worker):
    client = client_for(researcher)
    a = _download(client, snapshot).json()["id"]
    b = _download(client, snapshot, file_format="parquet").json()["id"]
    assert a != b
    run_export(b)
    assert _download(client, snapshot, file_format="parquet").status_code == 200
    assert _download(client, snapshot).status_code == 202


def test_a_build_delivered_twice_runs_once(snapshot, by_worker, monkeypatch):
    job = queue_export(snapshot, **OPTIONS)
    assert run_export(job.pk).status == "done"
    monkeypatch.setattr(
        export, "cached_export", lambda *a, **k: pytest.fail("built twice")
    )
    assert run_export(job.pk).status == "done"


def test_a_failed_build_says_why_leaves_no_file_and_is_queued_again(
    snapshot, researcher, by_worker, monkeypatch
):
    job = queue_export(snapshot, **OPTIONS)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "export_snapshot", full_disk)
    with pytest.raises(OSError):
        run_export(job.pk)  # the job's own row keeps the traceback
    failed = SnapshotExport.objects.get(pk=job.pk)
    assert failed.status == "failed" and "No space left on device" in failed.error
    assert not export_path(snapshot, **OPTIONS).exists()
    assert not list(export_path(snapshot, **OPTIONS).parent.iterdir())

    monkeypatch.undo()
    retried = _download(client_for(researcher), snapshot)
    assert (retried.status_code, retried.json()["status"]) == (202, "queued")
    assert retried.json()["id"] == job.pk and retried.json()["error"] == ""
    assert run_export(job.pk).status == "done"


def test_an_export_whose_file_has_gone_is_built_again(snapshot, by_worker):
    job = queue_export(snapshot, **OPTIONS)
    run_export(job.pk)
    export_path(snapshot, **OPTIONS).unlink()  # EXPORT_DIR cleaned
    again = queue_export(snapshot, **OPTIONS)
    assert (again.pk, again.status) == (job.pk, "queued")
    assert run_export(job.pk).status == "done"
    assert export_path(snapshot, **OPTIONS).exists()


def test_a_lost_workers_build_fails_and_its_partial_file_goes_but_a_running_one_stays(
    snapshot, by_worker
):
    lost = queue_export(snapshot, **OPTIONS)
    alive = queue_export(snapshot, **{**OPTIONS, "file_format": "parquet"})
    old = timezone.now() - timedelta(seconds=LOST_AFTER_SECONDS + 5)
    SnapshotExport.objects.filter(pk=lost.pk).update(
        status="running", heartbeat_at=old, worker="elsewhere:1:1"
    )
    SnapshotExport.objects.filter(pk=alive.pk).update(
        status="running", heartbeat_at=old, worker=current_worker()
    )
    # What each was writing when its worker stopped: export_snapshot's temporary
    # folder beside the final name.
    partial = {}
    for job in (lost, alive):
        target = export_path(snapshot, **job.options())
        partial[job.pk] = target.parent / f".{target.name}.x1y2z3w4"
        partial[job.pk].mkdir(parents=True)
        (partial[job.pk] / target.name).write_text('{"prompt": "half')
    # A gzip build of the same options runs beside them: its folder's name starts
    # with the lost build's file name.
    gzip_target = export_path(snapshot, **{**OPTIONS, "file_format": "jsonl.gz"})
    gzip_partial = gzip_target.parent / f".{gzip_target.name}.a1b2c3d4"
    gzip_partial.mkdir()
    assert fail_lost_exports() == [lost.pk]
    failed = SnapshotExport.objects.get(pk=lost.pk)
    assert failed.status == "failed" and "download it again" in failed.error
    assert SnapshotExport.objects.get(pk=alive.pk).status == "running"
    assert not partial[lost.pk].exists()  # the lost build's half-written file goes
    assert partial[alive.pk].exists()  # the running one's stays
    assert gzip_partial.exists()  # and so does the gzip build's


def test_export_snapshot_reports_the_rows_written(snapshot, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "CHUNK", 10)
    seen: list[int] = []
    export_snapshot(snapshot, tmp_path / "s.jsonl", progress=seen.append)
    assert seen == [10, 20, 30, 36]


def test_the_page_follows_the_build_then_starts_the_download(
    snapshot, researcher, by_worker
):
    client = client_for(researcher)
    url = f"/data/snapshots/{snapshot.pk}/download/?fmt=trl&file_format=jsonl"
    queued = client.get(url)
    job = SnapshotExport.objects.get()
    assert (
        queued.status_code == 302 and queued["Location"] == f"/data/exports/{job.pk}/"
    )
    page = client.get(queued["Location"])
    assert b"Waiting for the worker" in page.content and b'hx-trigger="every 1s"' in (
        page.content
    )
    SnapshotExport.objects.filter(pk=job.pk).update(status="running", progress=0.42)
    partial = client.get(queued["Location"], headers={"HX-Request": "true"})
    assert b'id="export-percent">42%' in partial.content
    assert b"<html" not in partial.content

    SnapshotExport.objects.filter(pk=job.pk).update(status="queued")
    run_export(job.pk)
    url = (
        f"/data/snapshots/{snapshot.pk}/download/?fmt=trl&amp;style=conversational"
        "&amp;prompt=explicit&amp;file_format=jsonl"
    )
    finished = client.get(queued["Location"], headers={"HX-Request": "true"})
    body = finished.content.decode()
    assert "hx-trigger" not in body  # the poll stops
    assert f'id="export-download" href="{url}"' in body and "36 rows" in body
    assert body.count("window.location.assign(") == 1  # the download starts once
    sent = client.get(url.replace("&amp;", "&"))
    assert sent.status_code == 200 and sent["Content-Disposition"].startswith(
        "attachment"
    )
    ready = client.get(queued["Location"])  # a reload shows the link, starts nothing
    assert b'id="export-download"' in ready.content and b"36 rows" in ready.content
    assert b"window.location" not in ready.content


def test_the_page_shows_a_failed_build_and_a_way_to_try_again(
    snapshot, researcher, by_worker
):
    job = queue_export(snapshot, **OPTIONS)
    SnapshotExport.objects.filter(pk=job.pk).update(
        status="failed", error="the export stopped on an error: OSError(28)"
    )
    page = client_for(researcher).get(f"/data/exports/{job.pk}/")
    assert b"The export failed" in page.content and b"OSError(28)" in page.content
    assert b"hx-trigger" not in page.content


def test_an_export_of_another_teams_project_is_not_shown(snapshot, outsider, by_worker):
    job = queue_export(snapshot, **OPTIONS)
    assert client_for(outsider).get(f"/data/exports/{job.pk}/").status_code in (
        403,
        404,
    )


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_builds_a_queued_export(
    snapshot,
    researcher,
    by_worker,
    settings,
    monkeypatch,
    start_worker,  # noqa: F811
):
    monkeypatch.setenv("EXPORT_DIR", str(settings.EXPORT_DIR))
    client = client_for(researcher)
    assert _download(client, snapshot).status_code == 202
    worker = start_worker()
    try:
        wait_for(
            lambda: _download(client, snapshot).status_code == 200,
            timeout=180,
            what="the worker to build the export",
        )
    except AssertionError as exc:  # say where it got to (the job's row, the worker)
        rows = list(SnapshotExport.objects.values())
        log = worker.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"{exc}; jobs {rows}; worker log:\n{log}") from None
    job = SnapshotExport.objects.get()
    assert (job.status, job.rows) == ("done", 36)
    assert job.worker.split(":")[1] != str(os.getpid())
