"""Tests of annotation.snapshots.diff_snapshots, its page and its API operation."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from annotation.membership import add_member
from annotation.models import Project
from annotation.snapshots import diff_snapshots, freeze_snapshot
from tests.annotation.data_factories import (
    annotators,
    ids,
    make_policy,
    make_round,
    make_task,
    rank,
)
from tests.conftest import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_rounds(project):
    """Round 1 ranked by ann1; round 2 (another policy) ranked by ann2, then ann1."""
    r1 = make_round(project, 1, make_policy("p1"))
    r2 = make_round(project, 2, make_policy("p2"))
    t1 = make_task(project, "one", ("a", "b"), round=r1)
    t2 = make_task(project, "two", ("c", "d", "e"), round=r2)
    a, b = annotators(2)
    first, second = ids(t1)
    ratings = {str(first): {"help": 7}, str(second): {"help": 2}}
    rank(t1, a, [[0], [1]], aspect_ratings=ratings)
    rank(t2, b, [[2], [1, 0]])
    rank(t2, a, [[0], [1], [2]])
    return t1, t2, a, b


def test_a_wider_snapshot_adds_the_other_rounds_pairs(project, two_rounds):
    t1, t2, a, b = two_rounds
    old = freeze_snapshot(project, "round-1", filter={"rounds": [1]})
    new = freeze_snapshot(project, "all")
    diff = diff_snapshots(old, new)
    # t2: ann1 gives 3 pairs, ann2 gives 2 (its tie gives none).
    assert (diff.added, diff.removed, diff.unchanged) == (5, 0, 1)
    assert diff.by_round == [{"key": 2, "added": 5, "removed": 0}]
    assert diff.by_policy == [{"key": "p2", "added": 5, "removed": 0}]
    assert [(r["added"], r["removed"]) for r in diff.by_annotator] == [(3, 0), (2, 0)]
    reverse_diff = diff_snapshots(new, old)
    assert (reverse_diff.added, reverse_diff.removed) == (0, 5)


def test_annotators_are_matched_by_person_not_by_their_per_snapshot_label(
    project, two_rounds
):
    t1, t2, a, b = two_rounds
    # ann2 ranked t2 first: annotator-1 in "two", annotator-2 in "all".
    only_two = freeze_snapshot(project, "two", filter={"rounds": [2]})
    everything = freeze_snapshot(project, "all")
    diff = diff_snapshots(only_two, everything)
    assert (diff.added, diff.removed, diff.unchanged) == (1, 0, 5)
    (row,) = diff.added_sample
    assert (row["task"], row["chosen"], row["rejected"]) == (t1.pk, *ids(t1))
    assert row["annotator"] == "annotator-2 (a) = annotator-1 (b)"


def test_a_changed_order_removes_old_pairs_and_adds_new_ones(project, two_rounds):
    t1, t2, a, b = two_rounds
    before = freeze_snapshot(project, "before")
    ranking = t1.rankings.get(annotator=a)
    ranking.order = list(reversed(ranking.order))
    ranking.save()
    after = freeze_snapshot(project, "after")
    diff = diff_snapshots(before, after)
    assert (diff.added, diff.removed) == (1, 1)
    assert diff.by_round == [{"key": 1, "added": 1, "removed": 1}]


def test_margin_change_is_counted_apart_from_added_and_removed(project, two_rounds):
    by_rank = freeze_snapshot(project, "rank")
    by_aspects = freeze_snapshot(project, "aspects", margin_rule="aspects")
    diff = diff_snapshots(by_rank, by_aspects)
    assert (diff.added, diff.removed, diff.margin_changed) == (0, 0, 1)
    assert {r["key"]: r["differs"] for r in diff.rules}["margin_rule"] is True
    adjacent = freeze_snapshot(project, "adjacent", pair_rule="adjacent")
    # ann1's t2 pair (first, last) goes under the adjacent rule.
    assert diff_snapshots(by_rank, adjacent).removed == 1


def test_filter_specs_are_side_by_side_with_differences_marked(project, two_rounds):
    old = freeze_snapshot(project, "old", filter={"rounds": [1], "gold": "exclude"})
    new = freeze_snapshot(project, "new", filter={"gold": "exclude"})
    rows = {r["key"]: r for r in diff_snapshots(old, new).filters}
    assert rows["rounds"] == {"key": "rounds", "a": [1], "b": None, "differs": True}
    assert rows["gold"]["differs"] is False


def test_snapshots_of_different_projects_are_refused(project, two_rounds):
    other = Project.objects.create(name="other")
    make_task(other, "x", ("p", "q"))
    with pytest.raises(ValidationError, match="different projects"):
        diff_snapshots(freeze_snapshot(project, "s"), freeze_snapshot(other, "s"))


def test_diff_page_shows_counts_and_is_linked_from_the_snapshot(
    project, two_rounds, researcher
):
    old = freeze_snapshot(project, "round-1", filter={"rounds": [1]})
    new = freeze_snapshot(project, "all")
    client = login(researcher)
    page = client.get(reverse("data:snapshot", args=[new.pk])).content.decode()
    assert reverse("data:snapshot_diff", args=[new.pk]) in page
    response = client.get(
        reverse("data:snapshot_diff", args=[old.pk]), {"against": new.pk}
    )
    assert response.status_code == 200
    assert response.context["diff"].added == 5
    assert b"round-1" in response.content and b"Added" in response.content


def test_diff_page_is_for_researchers(project, two_rounds, annotator):
    snap = freeze_snapshot(project, "s")
    response = login(annotator).get(
        reverse("data:snapshot_diff", args=[snap.pk]), {"against": snap.pk}
    )
    assert response.status_code == 403


def test_diff_api_returns_counts_and_breakdowns(project, two_rounds, researcher):
    old = freeze_snapshot(project, "round-1", filter={"rounds": [1]})
    new = freeze_snapshot(project, "all")
    client = login(researcher)
    body = client.get(f"/api/snapshots/{old.pk}/diff", {"against": new.pk}).json()
    assert (body["added"], body["removed"], body["unchanged"]) == (5, 0, 1)
    assert body["by_round"] == [{"key": 2, "added": 5, "removed": 0}]
    assert body["a"]["name"] == "round-1" and body["b"]["name"] == "all"
    other = Project.objects.create(name="other")
    make_task(other, "x", ("p", "q"))
    foreign = freeze_snapshot(other, "f")
    outside = client.get(f"/api/snapshots/{old.pk}/diff", {"against": foreign.pk})
    assert outside.status_code == 404  # not one of the researcher's projects
    add_member(researcher, other)
    response = client.get(f"/api/snapshots/{old.pk}/diff", {"against": foreign.pk})
    assert response.status_code == 400
    assert "different projects" in response.json()["detail"]


def test_a_rewrites_pairs_are_listed_when_the_rule_makes_them_chosen(
    project, researcher
):
    """Under the rewrite rule "chosen" a rewrite's pairs are the snapshot's pairs like
    any other: the diff against the same rankings frozen with "sft" lists them as
    added (chosen None, policy "rewrite") and the old best's pairs as removed."""
    task = make_task(project, "What is 2 + 2?", ("Four.", "5", "No idea."))
    (a,) = annotators(1)
    rank(task, a, [[0], [1], [2]], rewrite="2 + 2 = 4.")
    plain = freeze_snapshot(project, "plain", pair_rule="best_vs_rest")
    chosen = freeze_snapshot(
        project, "chosen", pair_rule="best_vs_rest", rewrite_rule="chosen"
    )
    diff = diff_snapshots(plain, chosen)
    assert (diff.added, diff.removed, diff.unchanged) == (3, 2, 0)
    assert [(r["chosen"], r["rejected"]) for r in diff.added_sample] == [
        (None, i) for i in ids(task)
    ]
    assert {r["chosen_policy"] for r in diff.added_sample} == {"rewrite"}
    assert {r["key"]: r["added"] for r in diff.by_policy}["rewrite"] == 3
    assert (
        diff_snapshots(chosen, chosen).added,
        diff_snapshots(chosen, chosen).unchanged,
    ) == (0, 3)
    assert {r["key"]: r["differs"] for r in diff.rules}["rewrite_rule"] is True
    # The API and the page show them too.
    client = login(researcher)
    body = client.get(f"/api/snapshots/{plain.pk}/diff", {"against": chosen.pk}).json()
    assert [r["chosen"] for r in body["added_sample"]] == [None, None, None]
    page = client.get(
        reverse("data:snapshot_diff", args=[plain.pk]), {"against": chosen.pk}
    ).content.decode()
    assert "<td>rewrite</td>" in page and "rewrite / " in page


def test_a_comparison_read_a_few_rows_at_a_time_is_the_whole_comparison(
    project, monkeypatch
):
    """The comparison reads both snapshots in task order, a chunk of rows at a time,
    and compares a task at a time: with two-row chunks (every task cut across
    chunks, rewrites' policies looked up in pieces) it finds what one read finds,
    and its samples are the first pairs in task order."""
    import annotation.snapshots as snapshots

    round_ = make_round(project, 1, make_policy("p1"))
    a, b = annotators(2)
    tasks = []
    for n in range(25):
        task = make_task(project, f"q{n}", ("x", "y", "z"), round=round_)
        rank(task, a, [[0], [1], [2]], rewrite=f"better {n}")
        if n % 3 == 0:
            rank(task, b, [[2], [0], [1]])
        tasks.append(task)
    plain = freeze_snapshot(project, "plain", pair_rule="best_vs_rest")
    chosen = freeze_snapshot(
        project, "chosen", pair_rule="all_pairs", rewrite_rule="chosen"
    )
    whole = diff_snapshots(plain, chosen)
    monkeypatch.setattr(snapshots, "_DIFF_CHUNK", 2)
    shares: list[float] = []
    pieces = diff_snapshots(plain, chosen, shares.append)

    assert pieces == whole
    # plain: 2 best-vs-rest pairs a ranking (34 rankings); chosen: 3 pairs and 3
    # rewrite pairs for a's rankings, 3 pairs for b's.
    assert (whole.added, whole.removed, whole.unchanged) == (25 * 4 + 9 * 1, 0, 68)
    assert len(whole.added_sample) == snapshots.DIFF_SAMPLE_ROWS
    keys = [(r["task"], r["chosen"] or 0, r["rejected"]) for r in whole.added_sample]
    assert keys == sorted(keys) and keys[0][0] == tasks[0].pk
    assert shares == sorted(shares) and 0 < shares[-1] < 1


def test_a_comparison_streams_the_pair_table_alone(project, two_rounds):
    """The streamed reads (ordered by task) join nothing: joined into a server-side
    cursor's query, PostgreSQL chose a nested loop over every task and every pair
    for 180,000 pairs before ANALYZE had seen them (minutes, against 0.3 s)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    old = freeze_snapshot(project, "round-1", filter={"rounds": [1]})
    new = freeze_snapshot(project, "all")
    with CaptureQueriesContext(connection) as queries:
        diff_snapshots(old, new)
    streamed = [
        q["sql"] for q in queries if 'FROM "annotation_snapshotpair"' in q["sql"]
    ]
    assert len(streamed) == 2  # each snapshot's pairs (no rewrites here)
    assert all("JOIN" not in sql for sql in streamed)


# Comparisons of snapshots over REQUEST_MAX_PAIRS pairs are the worker's job.


@pytest.fixture
def by_worker(settings):
    """Every snapshot is too large to compare in the request."""
    settings.REQUEST_MAX_PAIRS = 0


def test_the_api_queues_a_large_comparison_answers_202_then_the_same_diff(
    project, two_rounds, researcher, by_worker
):
    from annotation.models import SnapshotComparison
    from annotation.snapshots import run_comparison

    old = freeze_snapshot(project, "round-1", filter={"rounds": [1]})
    new = freeze_snapshot(project, "all")
    client = login(researcher)
    url = f"/api/snapshots/{old.pk}/diff"
    first = client.get(url, {"against": new.pk})
    assert first.status_code == 202 and first["Retry-After"] == "2"
    job = first.json()
    assert (job["status"], job["a"], job["b"]) == ("queued", old.pk, new.pk)
    assert client.get(url, {"against": new.pk}).json()["id"] == job["id"]
    assert SnapshotComparison.objects.count() == 1

    done = run_comparison(job["id"])
    assert (done.status, done.progress, done.error) == ("done", 1.0, "")
    assert done.created_by == researcher
    body = client.get(url, {"against": new.pk}).json()
    assert (body["added"], body["removed"], body["unchanged"]) == (5, 0, 1)
    assert body["by_round"] == [{"key": 2, "added": 5, "removed": 0}]
    assert body["a"]["name"] == "round-1" and body["b"]["name"] == "all"
    direct = diff_snapshots(old, new)
    kept = SnapshotComparison.objects.get().result
    assert kept["added_sample"] == direct.added_sample
    assert kept["by_annotator"] == direct.by_annotator
    # b against a is another comparison.
    assert (
        client.get(f"/api/snapshots/{new.pk}/diff", {"against": old.pk}).status_code
        == 202
    )


def test_a_failed_comparison_says_why_and_the_next_request_queues_it_again(
    project, two_rounds, researcher, by_worker, monkeypatch
):
    import annotation.snapshots as snapshots
    from annotation.models import SnapshotComparison
    from annotation.snapshots import queue_comparison, run_comparison

    old = freeze_snapshot(project, "round-1", filter={"rounds": [1]})
    new = freeze_snapshot(project, "all")
    job = queue_comparison(old, new)

    def broken(snapshot):
        raise MemoryError("out of memory")

    monkeypatch.setattr(snapshots, "_task_groups", broken)
    with pytest.raises(MemoryError):
        run_comparison(job.pk)
    failed = SnapshotComparison.objects.get(pk=job.pk)
    assert failed.status == "failed" and "out of memory" in failed.error
    assert failed.result == {}

    # The page's poll shows the failure and stops; it does not queue it again.
    client = login(researcher)
    url = reverse("data:snapshot_diff", args=[old.pk])
    poll = client.get(url, {"against": new.pk}, headers={"HX-Request": "true"})
    assert (
        b"The comparison failed" in poll.content and b"hx-trigger" not in poll.content
    )
    assert SnapshotComparison.objects.get(pk=job.pk).status == "failed"
    # Opening the page again does.
    monkeypatch.undo()
    page = client.get(url, {"against": new.pk})
    assert page.context["job"].status == "queued" and page.context["diff"] is None
    assert run_comparison(job.pk).status == "done"


def test_the_page_follows_the_comparison_then_shows_it(
    project, two_rounds, researcher, by_worker
):
    from annotation.models import SnapshotComparison
    from annotation.snapshots import run_comparison

    old = freeze_snapshot(project, "round-1", filter={"rounds": [1]})
    new = freeze_snapshot(project, "all")
    client = login(researcher)
    url = reverse("data:snapshot_diff", args=[old.pk])
    page = client.get(url, {"against": new.pk})
    assert b"Waiting for the worker" in page.content
    assert b'hx-trigger="every 1s"' in page.content
    job = SnapshotComparison.objects.get()
    SnapshotComparison.objects.filter(pk=job.pk).update(status="running", progress=0.45)
    poll = client.get(url, {"against": new.pk}, headers={"HX-Request": "true"})
    assert (
        b'id="comparison-percent">45%' in poll.content and b"<html" not in poll.content
    )
    SnapshotComparison.objects.filter(pk=job.pk).update(status="queued")
    run_comparison(job.pk)
    poll = client.get(url, {"against": new.pk}, headers={"HX-Request": "true"})
    assert poll["HX-Refresh"] == "true"
    shown = client.get(url, {"against": new.pk})
    assert shown.context["diff"].added == 5 and shown.context["job"] is None
    assert b"Waiting for the worker" not in shown.content


def test_a_lost_workers_comparison_fails(project, two_rounds, by_worker):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.models import SnapshotComparison
    from annotation.snapshots import (
        LOST_AFTER_SECONDS,
        fail_lost_comparisons,
        queue_comparison,
    )

    old = freeze_snapshot(project, "round-1", filter={"rounds": [1]})
    new = freeze_snapshot(project, "all")
    job = queue_comparison(old, new)
    SnapshotComparison.objects.filter(pk=job.pk).update(
        status="running",
        heartbeat_at=timezone.now() - timedelta(seconds=LOST_AFTER_SECONDS + 5),
        worker="elsewhere:1:1",
    )
    assert fail_lost_comparisons() == [job.pk]
    assert "ask for the comparison again" in SnapshotComparison.objects.get().error
