"""Tests of annotation/importing.py: every format, rejections, whole-or-nothing, round trips."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.export import export_snapshot, iter_rows
from annotation.importing import import_preferences, parse_file
from annotation.models import ImportReport, Prompt, Ranking, RankingTask
from annotation.snapshots import freeze_snapshot
from inference.models import Policy
from tests.annotation.data_factories import annotators, make_task, rank

pytestmark = pytest.mark.django_db

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"public sample data not found at {SHARED.resolve()}"
)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    )
    return path


def pairs_of(snapshot) -> list[tuple[str, str, str]]:
    return [
        (row["prompt"], row["chosen"], row["rejected"])
        for row in iter_rows(snapshot, style="standard")
    ]


def test_trl_standard_pairs_land_with_provenance(project, tmp_path):
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}],
    )
    report = import_preferences(project, path)
    assert (report.format, report.is_applied, report.rankings_created) == (
        "trl",
        True,
        1,
    )
    ranking = Ranking.objects.get()
    assert ranking.annotator.username == "imported:mine"
    assert ranking.source == "mine.jsonl:1"
    assert ranking.task.responses.first().policy.kind == Policy.Kind.IMPORTED
    assert ranking.task.responses.first().policy.name == "imported:mine"
    assert ranking.task.ranking_count >= ranking.task.overlap


def test_conversational_implicit_prompt_is_split_off(project, tmp_path):
    user = {"role": "user", "content": "Hi?"}
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {
                "chosen": [user, {"role": "assistant", "content": "Hello!"}],
                "rejected": [user, {"role": "assistant", "content": "No."}],
            }
        ],
    )
    import_preferences(project, path)
    assert Prompt.objects.get().messages == [user]


def test_prompts_are_deduplicated_against_the_project(project, tmp_path):
    make_task(project, "Hi?")
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "Hi?", "chosen": "A", "rejected": "B"},
            {"prompt": "Hi?", "chosen": "C", "rejected": "D"},
            {"prompt": "New?", "chosen": "E", "rejected": "F"},
        ],
    )
    report = import_preferences(project, path)
    assert report.prompts_created == 1
    assert Prompt.objects.filter(project=project).count() == 2


@pytest.mark.parametrize(
    "row, reason",
    [
        ('{"prompt": "x", "chosen": ', "bad JSON"),
        ({"prompt": "x", "chosen": "a"}, "missing field 'rejected'"),
        (
            {"prompt": "x", "chosen": "same", "rejected": "same"},
            "identical chosen and rejected",
        ),
        ({"prompt": "x", "chosen": "  ", "rejected": "b"}, "empty text in response 0"),
        ({"prompt": "x", "chosen": "a" * 100_001, "rejected": "b"}, "oversized text"),
        (
            {
                "prompt": [{"role": "robot", "content": "x"}],
                "chosen": "a",
                "rejected": "b",
            },
            "unknown role 'robot'",
        ),
    ],
)
def test_a_bad_record_is_reported_with_its_line_and_nothing_lands(
    project, tmp_path, row, reason
):
    good = {"prompt": "ok", "chosen": "a", "rejected": "b"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    report = import_preferences(project, path, fmt="trl")
    assert report.is_applied is False
    assert [r["line"] for r in report.rejected] == [2]
    assert reason in report.rejected[0]["reason"]
    assert (Prompt.objects.count(), Ranking.objects.count()) == (0, 0)


def test_skip_invalid_imports_the_valid_records_and_reports_the_rest(project, tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "a", "chosen": "x", "rejected": "y"},
            {"prompt": "b", "chosen": "same", "rejected": "same"},
            {"prompt": "c", "chosen": "x", "rejected": "y"},
        ],
    )
    report = import_preferences(project, path, skip_invalid=True)
    assert (report.is_applied, report.rankings_created) == (True, 2)
    assert report.rejected == [{"line": 2, "reason": report.rejected[0]["reason"]}]
    assert ImportReport.objects.get().accepted == 2


def test_kto_rows_become_a_ranking_of_desirable_over_undesirable(project, tmp_path):
    path = write_jsonl(
        tmp_path / "k.jsonl",
        [
            {"prompt": "p", "completion": "good", "label": True},
            {"prompt": "p", "completion": "bad", "label": False},
            {"prompt": "p", "completion": "worse", "label": False},
        ],
    )
    import_preferences(project, path)
    ranking = Ranking.objects.get()
    texts = {r.id: r.text for r in ranking.task.responses.all()}
    assert [[texts[i] for i in g] for g in ranking.order] == [
        ["good"],
        ["bad", "worse"],
    ]


def test_ultrafeedback_scores_become_a_ranking_with_ties(project, tmp_path):
    path = write_jsonl(
        tmp_path / "uf.jsonl",
        [
            {
                "instruction": "p",
                "completions": [
                    {"response": "a", "overall_score": 7},
                    {"response": "b", "overall_score": 9},
                    {"response": "c", "overall_score": 7},
                ],
            }
        ],
    )
    import_preferences(project, path)
    ranking = Ranking.objects.get()
    texts = {r.id: r.text for r in ranking.task.responses.all()}
    assert [[texts[i] for i in g] for g in ranking.order] == [["b"], ["a", "c"]]


def test_gzip_and_parquet_files_are_read(project, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    gz = tmp_path / "g.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps(rows[0]) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "q.parquet")
    assert len(parse_file(gz).records) == 1
    assert len(parse_file(tmp_path / "q.parquet").records) == 1


def test_forced_format_overrides_detection(project, tmp_path):
    path = write_jsonl(tmp_path / "h.jsonl", [{"chosen": "x", "rejected": "y"}])
    assert parse_file(path).format == "hh"
    parsed = parse_file(path, "trl")
    assert parsed.rejected[0].reason.startswith("missing field 'prompt'")


def test_our_own_ranking_export_imports_back_with_the_same_pairs(project, tmp_path):
    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1, 2], [3]])
    first = freeze_snapshot(project, "first")
    out = export_snapshot(first, tmp_path / "ranks.jsonl", fmt="ranking")
    other = type(project).objects.create(name="other")
    import_preferences(other, out)
    again = freeze_snapshot(other, "again")
    assert pairs_of(again) == pairs_of(first)


def test_import_command_creates_the_project_and_fails_on_invalid_records(tmp_path, db):
    path = write_jsonl(
        tmp_path / "x.jsonl",
        [
            {"prompt": "a", "chosen": "x", "rejected": "x"},
            {"prompt": "b", "chosen": "x", "rejected": "y"},
        ],
    )
    with pytest.raises(CommandError, match="1 invalid records; nothing imported"):
        call_command("import_preferences", str(path), "--project", "fresh")
    assert Ranking.objects.count() == 0
    call_command(
        "import_preferences", str(path), "--project", "fresh", "--skip-invalid"
    )
    assert RankingTask.objects.filter(project__name="fresh").count() == 1


@needs_shared
def test_hh_rlhf_sample_round_trips_through_import_and_export(project):
    source = SHARED / "hh-rlhf" / "helpful-base.test-sample.jsonl.gz"
    with gzip.open(source, "rt") as f:
        originals = [json.loads(line) for line in f]
    report = import_preferences(project, source, skip_invalid=True)
    assert (report.format, report.records, report.accepted) == ("hh", 1147, 1145)
    assert [r["line"] for r in report.rejected] == [
        r["line"] for r in report.rejected if "empty" in r["reason"]
    ]
    bad_lines = {r["line"] for r in report.rejected}
    snapshot = freeze_snapshot(project, "hh")
    exported = [(r["chosen"], r["rejected"]) for r in iter_rows(snapshot, fmt="hh")]
    expected = [
        (o["chosen"], o["rejected"])
        for line, o in enumerate(originals, start=1)
        if line not in bad_lines
    ]
    assert exported == expected


@needs_shared
def test_hh_rlhf_identical_pairs_are_rejected_by_line(project):
    source = SHARED / "hh-rlhf" / "helpful-rejection-sampled.test-sample.jsonl.gz"
    report = import_preferences(project, source)
    assert report.is_applied is False
    assert len(report.rejected) == 15
    assert {r["reason"] for r in report.rejected} == {
        "identical chosen and rejected (or repeated response) texts"
    }
    assert Ranking.objects.count() == 0


@needs_shared
def test_ultrafeedback_sample_round_trips_with_ties_giving_no_pair(project):
    source = SHARED / "ultrafeedback-binarized" / "ultrafeedback_binarized.sample.jsonl"
    originals = [json.loads(line) for line in source.read_text().splitlines()]
    report = import_preferences(project, source, skip_invalid=True)
    assert (report.format, report.accepted) == ("trl", 994)
    assert [r["line"] for r in report.rejected] == [307, 479, 656, 834, 911, 998]
    snapshot = freeze_snapshot(project, "uf")
    bad = {r["line"] for r in report.rejected}
    expected = [
        (o["prompt"], o["chosen"], o["rejected"])
        for line, o in enumerate(originals, start=1)
        if line not in bad
        and o["metadata"]["score_chosen"] != o["metadata"]["score_rejected"]
    ]
    assert pairs_of(snapshot) == expected
    assert len(expected) == 994 - 111 + sum(
        1
        for line in bad
        if originals[line - 1]["metadata"]["score_chosen"]
        == originals[line - 1]["metadata"]["score_rejected"]
    )


@needs_shared
def test_oasst_flat_messages_give_every_ranked_sibling_pair(project):
    source = SHARED / "oasst" / "oasst1_en_validation.messages.jsonl"
    report = import_preferences(project, source)
    assert (report.format, report.is_applied, report.rankings_created) == (
        "oasst_flat",
        True,
        195,
    )
    # SOURCE.md: 195 parents with at least two ranked replies, 470 pairs.
    assert freeze_snapshot(project, "oa").row_count == 470


@needs_shared
def test_oasst_nested_trees_give_every_ranked_sibling_pair(project):
    source = SHARED / "oasst" / "oasst_en_ready_trees.jsonl"
    report = import_preferences(project, source)
    assert (report.format, report.is_applied) == ("oasst_tree", True)
    assert report.rankings_created == 106
    assert freeze_snapshot(project, "trees").row_count == 320


@needs_shared
def test_oasst_export_back_keeps_the_conversation_as_the_prompt(project):
    source = SHARED / "oasst" / "oasst_en_ready_trees.jsonl"
    first = json.loads(source.read_text().splitlines()[0])["prompt"]
    import_preferences(project, source)
    row = next(iter_rows(freeze_snapshot(project, "t")))
    assert row["prompt"] == [{"role": "user", "content": first["text"]}]
    ranked = sorted(
        (r for r in first["replies"] if r.get("rank") is not None),
        key=lambda r: r["rank"],
    )
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"]) == (
        ranked[0]["text"],
        ranked[1]["text"],
    )
