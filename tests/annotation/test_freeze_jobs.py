"""Snapshot freezes run by the worker: the pages and the API queue them, a freeze
lands whole or fails with the reason, a lost worker's freeze is failed, and its
name may be used again (a large freeze took 20 CPU seconds in the web request)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

import annotation.snapshots as snapshots
from annotation.models import Snapshot, SnapshotPair, SnapshotRanking
from annotation.snapshots import (
    LOST_AFTER_SECONDS,
    fail_lost_freezes,
    freeze_snapshot,
    queue_freeze,
    run_freeze,
)
from config.workers import current_worker
from tests.annotation.data_factories import annotators, make_task, rank
from tests.training.conftest import run_root, start_worker, wait_for  # noqa: F401


@pytest.fixture
def ranked(project):
    """Three tasks of four responses, each ranked by two annotators: 36 pairs."""
    people = annotators(2)
    for i in range(3):
        task = make_task(project, f"Question {i}?")
        for person in people:
            rank(task, person, [[0], [1], [2], [3]])
    return project


def test_a_queued_freeze_lands_the_same_snapshot_as_one_in_process(ranked, researcher):
    queued = queue_freeze(ranked, "queued", user=researcher, pair_rule="adjacent")
    assert (queued.status, queued.progress, queued.sha256) == ("queued", 0.0, "")
    seen = []
    direct = freeze_snapshot(
        ranked, "direct", pair_rule="adjacent", progress=seen.append
    )
    done = run_freeze(queued.pk)
    assert (done.status, done.progress, done.error) == ("done", 1.0, "")
    assert done.finished_at is not None and done.created_by == researcher
    assert (done.row_count, done.sha256, done.stats) == (
        direct.row_count,
        direct.sha256,
        direct.stats,
    )
    assert done.pairs.count() == direct.pairs.count() == 18
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 4


def test_a_freeze_the_data_refuses_fails_with_the_reason_and_frees_its_name(
    ranked, monkeypatch
):
    queued = queue_freeze(ranked, "s")

    def refuse(project, f):
        raise ValidationError("min_reliability needs gold tasks; add some")

    monkeypatch.setattr(snapshots, "_select_tasks", refuse)
    failed = run_freeze(queued.pk)
    assert (failed.status, failed.error) == (
        "failed",
        "min_reliability needs gold tasks; add some",
    )
    assert not Snapshot.objects.exists() and failed.finished_at is not None
    monkeypatch.undo()
    again = queue_freeze(ranked, "s")  # the failed one's name is free
    assert list(Snapshot.any_state.values_list("pk", flat=True)) == [again.pk]
    assert run_freeze(again.pk).row_count == 36


def test_an_error_while_pairs_land_leaves_nothing_half_written(ranked, monkeypatch):
    queued = queue_freeze(ranked, "s")
    real_store = snapshots._store_pairs

    def store_then_fail(snapshot, rows, progress=None):
        real_store(snapshot, rows[: len(rows) // 2], progress)
        raise RuntimeError("disk full")

    monkeypatch.setattr(snapshots, "_store_pairs", store_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        run_freeze(queued.pk)
    failed = Snapshot.any_state.get(pk=queued.pk)
    assert failed.status == "failed"
    assert failed.error == (
        "the freeze stopped on an internal error: RuntimeError('disk full')"
    )
    assert (SnapshotPair.objects.count(), SnapshotRanking.objects.count()) == (0, 0)
    assert (failed.row_count, failed.sha256) == (0, "")


def test_a_freeze_delivered_twice_runs_once(ranked):
    queued = queue_freeze(ranked, "s")
    assert run_freeze(queued.pk).status == "done"
    assert run_freeze(queued.pk).status == "done"
    assert SnapshotPair.objects.count() == 36


def test_a_lost_workers_freeze_fails_and_one_still_running_here_does_not(ranked):
    queued = queue_freeze(ranked, "s")
    started = timezone.now()
    Snapshot.any_state.filter(pk=queued.pk).update(
        status="running", heartbeat_at=started, worker=current_worker()
    )
    later = started + timedelta(seconds=LOST_AFTER_SECONDS * 10)
    assert fail_lost_freezes(now=later) == []  # this process runs: not lost

    # Another host's worker: only its silent heartbeat tells it is lost.
    Snapshot.any_state.filter(pk=queued.pk).update(worker="elsewhere:12:34")
    assert fail_lost_freezes(now=started) == []
    assert fail_lost_freezes(now=later) == [queued.pk]
    failed = Snapshot.any_state.get(pk=queued.pk)
    assert failed.status == "failed" and "no heartbeat for 30 s" in failed.error


def test_a_freeze_whose_process_here_is_gone_fails_at_once(ranked):
    """A killed worker of this host is lost without waiting for its heartbeat to go
    silent: the chaos bench's killed export waited 30 s for that."""
    queued = queue_freeze(ranked, "s")
    started = timezone.now()
    machine, _, _ = current_worker().rsplit(":", 2)
    Snapshot.any_state.filter(pk=queued.pk).update(
        status="running", heartbeat_at=started, worker=f"{machine}:999999999:1"
    )
    assert fail_lost_freezes(now=started) == [queued.pk]
    failed = Snapshot.any_state.get(pk=queued.pk)
    assert failed.status == "failed"
    assert "(its process 999999999 is gone)" in failed.error
    assert "freeze it again" in failed.error


def test_a_freeze_failed_as_lost_while_it_ran_does_not_land(ranked, monkeypatch):
    """A worker thought lost (its heartbeat held back) that ends after all must not
    turn the failed snapshot, whose name may be taken again, into a done one."""
    queued = queue_freeze(ranked, "s")
    real_derive = snapshots._derive

    def derive_then_lose(snapshot, progress):
        derived = real_derive(snapshot, progress)
        Snapshot.any_state.filter(pk=snapshot.pk).update(status="failed", error="lost")
        return derived

    monkeypatch.setattr(snapshots, "_derive", derive_then_lose)
    failed = run_freeze(queued.pk)
    assert failed.status == "failed" and "stopped being frozen" in failed.error
    assert SnapshotPair.objects.count() == 0


def test_a_name_being_frozen_is_taken_for_either_path(ranked):
    queue_freeze(ranked, "s")
    for freeze in (queue_freeze, freeze_snapshot):
        with pytest.raises(ValidationError, match="already has a snapshot named 's'"):
            freeze(ranked, "s")


def test_a_round_refuses_a_snapshot_still_being_frozen(ranked):
    from training.rounds import _snapshot_for

    queue_freeze(ranked, "s")
    with pytest.raises(ValidationError, match="has no pairs yet: its freeze is queued"):
        _snapshot_for(ranked, {"snapshot": "s"}, None)


def test_the_command_draws_the_freeze_as_a_bar(ranked, capsys):
    call_command("freeze_snapshot", "s", "--project", ranked.name)
    out, err = capsys.readouterr()
    assert out.startswith("s: 36 pairs, sha256 ")
    assert err.splitlines()[-1] == "freezing s [" + "#" * 30 + "] 100%"


def _many_rankings(project, tasks: int) -> int:
    """Rank `tasks` tasks of four responses by three annotators in bulk; return the
    pairs a freeze of them gives (all pairs, six an order)."""
    from annotation.models import Prompt, Ranking, RankingTask, Response
    from tests.annotation.data_factories import make_policy

    policy = make_policy("bulk")
    people = annotators(3)
    prompts = Prompt.objects.bulk_create(
        Prompt(
            project=project,
            messages=[{"role": "user", "content": f"Question {i}?"}],
            content_hash=f"{i:064x}",
        )
        for i in range(tasks)
    )
    rows = RankingTask.objects.bulk_create(
        RankingTask(project=project, prompt=p, overlap=3) for p in prompts
    )
    responses = Response.objects.bulk_create(
        Response(task=t, policy=policy, text=f"Answer {k}.", position=k)
        for t in rows
        for k in range(4)
    )
    Ranking.objects.bulk_create(
        Ranking(
            task=task,
            annotator=person,
            order=[[r.pk] for r in responses[4 * n : 4 * n + 4]],
        )
        for n, task in enumerate(rows)
        for person in people
    )
    return tasks * 3 * 6


@pytest.mark.django_db(transaction=True)
def test_a_freeze_whose_worker_is_killed_fails_lands_nothing_and_is_frozen_again(
    project,
    start_worker,  # noqa: F811
):
    pairs = _many_rankings(project, 6000)
    queued = queue_freeze(project, "big")
    worker = start_worker()
    wait_for(
        lambda: Snapshot.any_state.get(pk=queued.pk).status != "queued",
        timeout=120,
        what="the worker to take the freeze",
    )
    worker.kill()
    assert Snapshot.any_state.get(pk=queued.pk).status == "running"  # killed mid-way
    later = timezone.now() + timedelta(seconds=LOST_AFTER_SECONDS + 1)
    assert fail_lost_freezes(now=later) == [queued.pk]
    assert (SnapshotPair.objects.count(), SnapshotRanking.objects.count()) == (0, 0)

    again = queue_freeze(project, "big")  # the failed one's name is free
    start_worker()
    wait_for(
        lambda: Snapshot.any_state.get(pk=again.pk).is_finished(),
        timeout=300,
        what="the second worker to freeze it",
    )
    frozen = Snapshot.objects.get(pk=again.pk)
    assert frozen.row_count == SnapshotPair.objects.count() == pairs


def test_the_export_command_says_a_snapshot_is_still_being_frozen(ranked, tmp_path):
    from django.core.management import CommandError

    queue_freeze(ranked, "s")
    with pytest.raises(CommandError, match="has no pairs yet: its freeze is queued"):
        call_command(
            "export_preferences",
            "--project",
            ranked.name,
            "--snapshot",
            "s",
            "--out",
            str(tmp_path / "s.jsonl"),
        )
    assert not (tmp_path / "s.jsonl").exists()
