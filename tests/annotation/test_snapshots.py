"""Tests of annotation/snapshots.py: filters, pair/tie/dedup rules, hashing."""

from __future__ import annotations

from datetime import UTC

import pytest
from django.core.exceptions import ValidationError

from annotation.models import AnnotatorProfile, SnapshotPair, SnapshotRanking
from annotation.snapshots import clean_filter, freeze_snapshot
from tests.annotation.data_factories import (
    annotators,
    ids,
    make_policy,
    make_round,
    make_task,
    rank,
)

pytestmark = pytest.mark.django_db


def pair_positions(snapshot, task) -> list[tuple[int, int, float]]:
    position = {rid: i for i, rid in enumerate(ids(task))}
    return [
        (position[p.chosen_id], position[p.rejected_id], p.margin)
        for p in SnapshotPair.objects.filter(snapshot=snapshot).order_by("id")
    ]


def test_every_ordered_pair_of_differing_rank_is_frozen_and_ties_give_none(project):
    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1, 2], [3]])
    snapshot = freeze_snapshot(project, "s1")
    assert pair_positions(snapshot, task) == [
        (0, 1, 1.0),
        (0, 2, 1.0),
        (0, 3, 2.0),
        (1, 3, 1.0),
        (2, 3, 1.0),
    ]
    assert snapshot.row_count == 5


def test_best_vs_rest_pairs_the_top_response_with_each_worse_one(project):
    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1], [2], [3]])
    snapshot = freeze_snapshot(project, "s1", pair_rule="best_vs_rest")
    assert pair_positions(snapshot, task) == [(0, 1, 1.0), (0, 2, 2.0), (0, 3, 3.0)]


def test_adjacent_rule_pairs_neighbouring_ranks_only(project):
    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1], [2], [3]])
    snapshot = freeze_snapshot(project, "s1", pair_rule="adjacent")
    assert pair_positions(snapshot, task) == [(0, 1, 1.0), (1, 2, 1.0), (2, 3, 1.0)]


def test_keep_tie_rule_adds_tied_pairs_with_margin_zero(project):
    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0, 1], [2, 3]])
    snapshot = freeze_snapshot(project, "s1", pair_rule="adjacent", tie_rule="keep")
    assert pair_positions(snapshot, task) == [
        (0, 2, 1.0),
        (0, 3, 1.0),
        (1, 2, 1.0),
        (1, 3, 1.0),
        (0, 1, 0.0),
        (2, 3, 0.0),
    ]


def test_same_filter_over_same_data_gives_the_same_hash(project):
    task = make_task(project)
    a, b = annotators(2)
    rank(task, a, [[0], [1], [2], [3]])
    rank(task, b, [[1], [0], [2], [3]])
    first = freeze_snapshot(project, "first", filter={"gold": "include"})
    second = freeze_snapshot(project, "second", filter={"gold": "include"})
    assert first.sha256 == second.sha256
    assert len(first.sha256) == 64


def test_new_data_changes_the_hash(project):
    task = make_task(project)
    a, b = annotators(2)
    rank(task, a, [[0], [1], [2], [3]])
    first = freeze_snapshot(project, "first")
    rank(task, b, [[1], [0], [2], [3]])
    second = freeze_snapshot(project, "second")
    assert first.sha256 != second.sha256
    assert (first.row_count, second.row_count) == (6, 12)


def test_annotator_labels_are_pseudonymous_and_stable_per_snapshot(project):
    t1, t2 = make_task(project, "one?"), make_task(project, "two?")
    a, b = annotators(2)
    rank(t1, b, [[0], [1], [2], [3]])
    rank(t2, a, [[0], [1], [2], [3]])
    rank(t2, b, [[0], [1], [2], [3]])
    snapshot = freeze_snapshot(project, "s1")
    labels = list(
        SnapshotPair.objects.filter(snapshot=snapshot)
        .order_by("id")
        .values_list("annotator_label", flat=True)
    )
    assert labels == ["annotator-1"] * 6 + ["annotator-2"] * 6 + ["annotator-1"] * 6


def test_simulated_annotators_are_labelled_and_can_be_excluded(project):
    task = make_task(project)
    a, sim = annotators(2)
    AnnotatorProfile.objects.create(user=sim, is_simulated=True, simulator="judge")
    rank(task, a, [[0], [1], [2], [3]])
    rank(task, sim, [[0], [1], [2], [3]])
    every = freeze_snapshot(project, "every")
    humans = freeze_snapshot(project, "humans", filter={"simulated": "exclude"})
    assert every.stats["annotator_labels"] == ["annotator-1", "simulated-1"]
    assert humans.row_count == 6


def test_rounds_filter_keeps_only_those_rounds(project):
    r1 = make_round(project, 1)
    r2 = make_round(project, 2, make_policy("dpo-1"))
    (a,) = annotators(1)
    rank(make_task(project, "a?", round=r1), a, [[0], [1], [2], [3]])
    rank(make_task(project, "b?", round=r2), a, [[0], [1], [2, 3]])
    snapshot = freeze_snapshot(project, "r2", filter={"rounds": [2]})
    assert snapshot.row_count == 5
    assert snapshot.filter["rounds"] == [2]


def test_gold_tasks_can_be_excluded(project):
    (a,) = annotators(1)
    rank(make_task(project, "gold?", is_gold=True), a, [[0], [1], [2], [3]])
    rank(make_task(project, "real?"), a, [[0], [1], [2], [3]])
    assert freeze_snapshot(project, "s", filter={"gold": "exclude"}).row_count == 6
    assert freeze_snapshot(project, "t", filter={"gold": "only"}).row_count == 6
    assert freeze_snapshot(project, "u").row_count == 12


def test_flagged_rankings_can_be_excluded(project):
    task = make_task(project)
    a, b = annotators(2)
    rank(task, a, [[0], [1], [2], [3]])
    rank(task, b, [[0], [1], [2], [3]], unsafe_response_ids=[ids(task)[3]])
    assert freeze_snapshot(project, "s", filter={"flagged": "exclude"}).row_count == 6


def test_skipped_tasks_can_be_excluded_and_skips_never_give_pairs(project):
    task = make_task(project)
    a, b = annotators(2)
    rank(task, a, [[0], [1], [2], [3]])
    from annotation.models import Ranking

    Ranking.objects.create(task=task, annotator=b, is_skip=True, skip_reason="unclear")
    assert freeze_snapshot(project, "with").row_count == 6
    assert (
        freeze_snapshot(project, "without", filter={"skipped": "exclude"}).row_count
        == 0
    )


def test_min_agreement_keeps_tasks_at_or_above_it(project):
    (a,) = annotators(1)
    low, high = make_task(project, "low?"), make_task(project, "high?")
    low.agreement, high.agreement = 0.4, 0.8
    low.save(), high.save()
    rank(low, a, [[0], [1], [2], [3]])
    rank(high, a, [[0], [1], [2], [3]])
    snapshot = freeze_snapshot(project, "s", filter={"min_agreement": 0.8})
    assert snapshot.row_count == 6
    assert snapshot.stats["mean_task_agreement"] == 0.8


def test_min_reliability_drops_annotators_failing_gold(project):
    gold = make_task(project, "gold?", is_gold=True)
    gold.gold_order = [[i] for i in ids(gold)]
    gold.save()
    good, bad = annotators(2)
    rank(gold, good, [[0], [1], [2], [3]])
    rank(gold, bad, [[3], [2], [1], [0]])
    task = make_task(project, "real?")
    rank(task, good, [[0], [1], [2], [3]])
    rank(task, bad, [[3], [2], [1], [0]])
    # Reliability (annotation.quality): good (6 + 0 + 1) / (6 + 12 + 2) = 0.35,
    # bad (0 + 0 + 1) / 20 = 0.05.
    snapshot = freeze_snapshot(
        project, "s", filter={"min_reliability": 0.3, "gold": "exclude"}
    )
    assert pair_positions(snapshot, task) == [
        (0, 1, 1.0),
        (0, 2, 2.0),
        (0, 3, 3.0),
        (1, 2, 1.0),
        (1, 3, 2.0),
        (2, 3, 1.0),
    ]


def test_consensus_votes_give_one_order_per_task(project):
    task = make_task(project)
    a, b, c = annotators(3)
    rank(task, a, [[0], [1], [2], [3]])
    rank(task, b, [[0], [2], [1], [3]])
    rank(task, c, [[0], [1], [2], [3]])
    snapshot = freeze_snapshot(project, "s", filter={"votes": "consensus"})
    assert SnapshotRanking.objects.get(snapshot=snapshot).order == [
        [i] for i in ids(task)
    ]
    assert snapshot.row_count == 6


def test_adjudicated_order_replaces_the_votes(project):
    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1], [2], [3]])
    rids = ids(task)
    task.adjudicated_order = [[rids[3]], [rids[2], rids[1], rids[0]]]
    task.save()
    snapshot = freeze_snapshot(project, "s")
    assert pair_positions(snapshot, task) == [(3, 2, 1.0), (3, 1, 1.0), (3, 0, 1.0)]
    ignored = freeze_snapshot(project, "t", filter={"adjudicated": False})
    assert ignored.row_count == 6


def test_exact_dedup_keeps_identical_pairs_once(project):
    task = make_task(project)
    a, b = annotators(2)
    rank(task, a, [[0], [1], [2], [3]])
    rank(task, b, [[0], [1], [2], [3]])
    assert freeze_snapshot(project, "s", dedup_rule="exact").row_count == 6


def test_majority_dedup_keeps_the_direction_most_annotators_gave(project):
    task = make_task(project, texts=("A", "B"))
    a, b, c = annotators(3)
    rank(task, a, [[0], [1]])
    rank(task, b, [[0], [1]])
    rank(task, c, [[1], [0]])
    snapshot = freeze_snapshot(project, "s", dedup_rule="majority")
    assert pair_positions(snapshot, task) == [(0, 1, 1.0)]
    assert SnapshotPair.objects.get(snapshot=snapshot).annotator_label == "majority"


def test_aspect_margin_uses_rating_difference(project):
    task = make_task(project, texts=("A", "B"))
    (a,) = annotators(1)
    rids = ids(task)
    rank(
        task,
        a,
        [[0], [1]],
        aspect_ratings={
            str(rids[0]): {"helpful": 7, "safe": 5},
            str(rids[1]): {"helpful": 2, "safe": 4},
        },
    )
    snapshot = freeze_snapshot(project, "s", margin_rule="aspects")
    assert pair_positions(snapshot, task) == [(0, 1, 3.0)]


def test_policies_filter_keeps_pairs_between_those_policies(project):
    task = make_task(project, texts=("A", "B"))
    other = make_policy("other")
    from annotation.models import Response

    extra = Response.objects.create(task=task, policy=other, text="C", position=2)
    (a,) = annotators(1)
    rank(task, a, [[0], [2], [1]])
    assert Response.objects.get(pk=extra.pk).policy.name == "other"
    snapshot = freeze_snapshot(project, "s", filter={"policies": ["demo-sft"]})
    assert pair_positions(snapshot, task) == [(0, 1, 1.0)]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"colour": "red"}, "unknown filter keys ['colour']"),
        ({"gold": "maybe"}, "filter gold must be one of"),
        (
            {"min_agreement": 1.5},
            "filter min_agreement must be a number in [0, 1], got 1.5",
        ),
        ({"since": "yesterday"}, "filter since must be an ISO date"),
        ({"rounds": "1"}, "filter rounds must be a list of round numbers"),
    ],
)
def test_bad_filter_is_rejected_with_the_value_named(bad, message):
    with pytest.raises(ValidationError) as info:
        clean_filter(bad)
    assert message in info.value.messages[0]


def test_duplicate_snapshot_name_is_rejected(project):
    freeze_snapshot(project, "s")
    with pytest.raises(ValidationError, match="already has a snapshot named 's'"):
        freeze_snapshot(project, "s")


def test_unknown_pair_rule_is_rejected(project):
    with pytest.raises(ValidationError, match="pair_rule must be one of"):
        freeze_snapshot(project, "s", pair_rule="random")


def test_date_range_keeps_rankings_inside_it(project):
    from datetime import datetime

    from annotation.models import Ranking

    task = make_task(project)
    a, b = annotators(2)
    old = rank(task, a, [[0], [1], [2], [3]])
    rank(task, b, [[0], [1], [2], [3]])
    Ranking.objects.filter(pk=old.pk).update(
        created_at=datetime(2020, 1, 1, tzinfo=UTC)
    )
    snapshot = freeze_snapshot(project, "s", filter={"since": "2021-01-01"})
    assert snapshot.row_count == 6
    assert snapshot.filter["since"] == "2021-01-01T00:00:00+00:00"


def test_a_consensus_keeps_the_earliest_votes_rewrite_for_sft(project):
    """A consensus order stood for the votes but dropped their rewrites, so the SFT
    export of a consensus snapshot (the loop's) lost every annotator's rewrite."""
    from annotation.export import iter_rows

    task = make_task(project)
    a, b, c = annotators(3)
    rank(task, a, [[0], [1], [2], [3]])
    rank(task, b, [[0], [2], [1], [3]], rewrite="The better answer.")
    rank(task, c, [[0], [1], [2], [3]], rewrite="Another one.")
    snapshot = freeze_snapshot(project, "s", filter={"votes": "consensus"})
    assert (
        SnapshotRanking.objects.get(snapshot=snapshot).rewrite == "The better answer."
    )
    rows = list(iter_rows(snapshot, fmt="sft", style="standard"))
    assert ("The better answer.", "rewrite") in [
        (r["completion"], r["origin"]) for r in rows
    ]


def test_rewrite_rule_chosen_ranks_a_rewrite_above_its_orders_best(project):
    """Best-vs-rest over [rewrite] + order: the rewrite beats every response, and the
    old best is no longer the order's best, so it gives no pair of its own."""
    from annotation.export import iter_rows

    task = make_task(project, "What is 2 + 2?")
    other = make_task(project, "What is 3 + 3?")
    a, b = annotators(2)
    rank(task, a, [[0], [1, 2], [3]], rewrite="2 + 2 = 4.")
    rank(other, b, [[0], [1], [2], [3]])  # no rewrite: response pairs only
    plain = freeze_snapshot(project, "plain", pair_rule="best_vs_rest")
    snapshot = freeze_snapshot(
        project, "s", pair_rule="best_vs_rest", rewrite_rule="chosen"
    )
    assert plain.rewrite_rule == "sft" and snapshot.rewrite_rule == "chosen"
    assert (plain.row_count, snapshot.row_count) == (6, 3 + 4)
    assert snapshot.stats["rewrites"] == 1 and snapshot.stats["rewrite_pairs"] == 4
    assert snapshot.stats["pairs"] == 7
    assert SnapshotPair.objects.filter(snapshot=snapshot, task=task).count() == 0
    # The rule and the rewrite's pairs are part of what the hash covers.
    assert snapshot.sha256 != plain.sha256
    rows = list(iter_rows(snapshot, style="standard"))
    assert len(rows) == snapshot.row_count
    rewrites = [r for r in rows if r["chosen_policy"] == "rewrite"]
    rids = ids(task)
    assert [(r["chosen"], r["rejected_id"], r["margin"]) for r in rewrites] == [
        ("2 + 2 = 4.", rids[0], 1.0),
        ("2 + 2 = 4.", rids[1], 2.0),
        ("2 + 2 = 4.", rids[2], 2.0),
        ("2 + 2 = 4.", rids[3], 3.0),
    ]
    assert {r["chosen_id"] for r in rewrites} == {None}
    assert {r["rejected"] for r in rewrites} == {"Four.", "4", "It is 5.", "No idea."}
    assert all(r["prompt"] == "What is 2 + 2?" for r in rewrites)
    # HH transcripts carry the rewrite as the chosen assistant turn.
    hh = [r for r in iter_rows(snapshot, fmt="hh") if "2 + 2 = 4." in r["chosen"]]
    assert len(hh) == 4
    assert hh[0]["chosen"].endswith("\n\nAssistant: 2 + 2 = 4.")


@pytest.mark.parametrize(
    "pair_rule, responses_pairs, rewrite_pairs",
    [
        # [[0], [1, 2], [3]] with the rewrite above: (rejected position, distance).
        ("all_pairs", 5, [(0, 1.0), (1, 2.0), (2, 2.0), (3, 3.0)]),
        ("adjacent", 4, [(0, 1.0)]),
        ("best_vs_rest", 0, [(0, 1.0), (1, 2.0), (2, 2.0), (3, 3.0)]),
    ],
)
def test_the_pair_rule_applies_to_the_order_with_the_rewrite_on_top(
    project, pair_rule, responses_pairs, rewrite_pairs
):
    from annotation.export import iter_rows

    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1, 2], [3]], rewrite="Better.")
    snapshot = freeze_snapshot(project, "s", pair_rule=pair_rule, rewrite_rule="chosen")
    assert SnapshotPair.objects.filter(snapshot=snapshot).count() == responses_pairs
    position = {rid: i for i, rid in enumerate(ids(task))}
    rows = [r for r in iter_rows(snapshot) if r["chosen_policy"] == "rewrite"]
    assert [(position[r["rejected_id"]], r["margin"]) for r in rows] == rewrite_pairs
    assert snapshot.row_count == responses_pairs + len(rewrite_pairs)


def test_the_default_rewrite_rule_leaves_an_older_snapshots_hash_unchanged(project):
    """The rewrite rule joined the hashed rules only when it is not the default, so a
    snapshot frozen before it existed hashes the same when frozen again."""
    import hashlib

    from annotation.snapshots import _canonical

    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1]], rewrite="Better.")
    snapshot = freeze_snapshot(project, "s")
    expected = hashlib.sha256()
    expected.update(
        _canonical(
            {
                "filter": snapshot.filter,
                "pair_rule": "all_pairs",
                "tie_rule": "drop",
                "dedup_rule": "none",
                "margin_rule": "rank",
            }
        )
    )
    first, second = (task.responses.get(id=i) for i in ids(task)[:2])
    expected.update(
        _canonical(
            [
                task.prompt.messages,
                first.text,
                second.text,
                1.0,
                "annotator-1",
                task.round.number,
                first.policy.name,
                second.policy.name,
            ]
        )
    )
    assert snapshot.sha256 == expected.hexdigest()


def test_unknown_rewrite_rule_is_rejected_naming_the_choices(project):
    with pytest.raises(ValidationError, match="rewrite_rule must be one of"):
        freeze_snapshot(project, "s", rewrite_rule="pairs")
