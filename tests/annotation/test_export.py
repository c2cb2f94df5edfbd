"""Tests of annotation/export.py: every format and file format, atomic writes, TRL training."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.export import export_snapshot, iter_rows
from annotation.models import Snapshot
from annotation.snapshots import freeze_snapshot
from tests.annotation.data_factories import annotators, ids, make_task, rank

pytestmark = pytest.mark.django_db


@pytest.fixture
def ranked(project):
    """One task ranked [[0], [1, 2], [3]] by one annotator, with a rewrite."""
    task = make_task(project, "What is 2 + 2?")
    (a,) = annotators(1)
    rank(task, a, [[0], [1, 2], [3]], rewrite="2 + 2 = 4.")
    return task


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trl_conversational_rows_carry_messages_and_provenance(project, ranked):
    snapshot = freeze_snapshot(project, "s")
    rows = list(iter_rows(snapshot))
    rids = ids(ranked)
    assert rows[0] == {
        "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
        "chosen": [{"role": "assistant", "content": "Four."}],
        "rejected": [{"role": "assistant", "content": "4"}],
        "margin": 1.0,
        "annotator": "annotator-1",
        "round": 1,
        "policy": "demo-sft",
        "chosen_policy": "demo-sft",
        "rejected_policy": "demo-sft",
        "prompt_id": ranked.prompt_id,
        "ranking_id": ranked.rankings.get().id,
        "chosen_id": rids[0],
        "rejected_id": rids[1],
    }
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("Four.", "4"),
        ("Four.", "It is 5."),
        ("Four.", "No idea."),
        ("4", "No idea."),
        ("It is 5.", "No idea."),
    ]


def test_standard_explicit_rows_are_plain_strings(project, ranked):
    row = next(iter_rows(freeze_snapshot(project, "s"), style="standard"))
    assert (row["prompt"], row["chosen"], row["rejected"]) == (
        "What is 2 + 2?",
        "Four.",
        "4",
    )


def test_implicit_prompt_rows_put_the_prompt_inside_chosen_and_rejected(
    project, ranked
):
    row = next(iter_rows(freeze_snapshot(project, "s"), prompt="implicit"))
    assert "prompt" not in row
    assert row["chosen"] == [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "Four."},
    ]


def test_hh_rows_are_human_assistant_transcripts(project, ranked):
    row = next(iter_rows(freeze_snapshot(project, "s"), fmt="hh"))
    assert row["chosen"] == "\n\nHuman: What is 2 + 2?\n\nAssistant: Four."
    assert row["rejected"] == "\n\nHuman: What is 2 + 2?\n\nAssistant: 4"


def test_kto_rows_label_winners_desirable_and_drop_even_responses(project, ranked):
    rows = list(iter_rows(freeze_snapshot(project, "s"), fmt="kto", style="standard"))
    # Four. wins 3; 4 and "It is 5." win 1 and lose 1 (even, left out); No idea. loses 3.
    assert [(r["completion"], r["label"]) for r in rows] == [
        ("Four.", True),
        ("No idea.", False),
    ]


def test_kto_rows_count_a_chosen_rewrites_pairs_and_add_the_rewrite_as_desirable(
    project, ranked
):
    snapshot = freeze_snapshot(project, "s", rewrite_rule="chosen")
    rows = list(iter_rows(snapshot, fmt="kto", style="standard"))
    # Each response also loses to the rewrite: Four. 3-1 wins, 4 and "It is 5."
    # now lose more than they win, No idea. loses 4; the rewrite comes last.
    assert [(r["completion"], r["label"], r["policy"]) for r in rows] == [
        ("Four.", True, "demo-sft"),
        ("4", False, "demo-sft"),
        ("It is 5.", False, "demo-sft"),
        ("No idea.", False, "demo-sft"),
        ("2 + 2 = 4.", True, "rewrite"),
    ]
    assert rows[-1]["response_id"] is None


@pytest.mark.parametrize("fmt", ["trl", "kto", "hh"])
def test_a_chosen_rewrite_exports_to_every_file_format_and_loads_back(
    project, ranked, tmp_path, fmt
):
    import datasets

    snapshot = freeze_snapshot(project, "s", rewrite_rule="chosen")
    expected = list(iter_rows(snapshot, fmt=fmt))
    for suffix in ("out.jsonl", "out.parquet"):
        path = export_snapshot(snapshot, tmp_path / f"{fmt}-{suffix}", fmt=fmt)
        kind = "parquet" if suffix.endswith("parquet") else "json"
        loaded = datasets.load_dataset(kind, data_files=str(path), split="train")
        assert loaded.num_rows == len(expected)
        assert loaded[-1] == expected[-1]


def test_ranking_rows_keep_tie_groups(project, ranked):
    (row,) = iter_rows(freeze_snapshot(project, "s"), fmt="ranking")
    rids = ids(ranked)
    assert row["order"] == [[rids[0]], [rids[1], rids[2]], [rids[3]]]
    assert [r["text"] for r in row["responses"]] == [
        "Four.",
        "4",
        "It is 5.",
        "No idea.",
    ]


def test_sft_rows_hold_rewrites_and_top_ranked_responses(project, ranked):
    rows = list(iter_rows(freeze_snapshot(project, "s"), fmt="sft", style="standard"))
    assert [(r["completion"], r["origin"]) for r in rows] == [
        ("2 + 2 = 4.", "rewrite"),
        ("Four.", "top_ranked"),
    ]


def test_a_chosen_rewrite_is_its_orders_only_demonstration(project, ranked):
    """Under the rewrite rule "chosen" the rewrite ranks above the best response, so
    an SFT stage (a loop's `sft,dpo` round) must not imitate the answer it corrects;
    an order without a rewrite still gives its top-ranked responses."""
    other = make_task(project, "What is 3 + 3?", ("Six.", "7"))
    rank(other, ranked.rankings.get().annotator, [[0], [1]])
    snapshot = freeze_snapshot(project, "s", rewrite_rule="chosen")
    rows = list(iter_rows(snapshot, fmt="sft", style="standard"))
    assert [(r["completion"], r["origin"]) for r in rows] == [
        ("2 + 2 = 4.", "rewrite"),
        ("Six.", "top_ranked"),
    ]


@pytest.mark.parametrize("fmt", ["trl", "kto", "ranking", "hh", "sft"])
@pytest.mark.parametrize(
    "suffix", ["out.jsonl", "out.jsonl.gz", "out.parquet", "outdir"]
)
def test_every_format_loads_back_with_datasets(project, ranked, tmp_path, fmt, suffix):
    import datasets

    snapshot = freeze_snapshot(project, "s")
    path = export_snapshot(snapshot, tmp_path / suffix, fmt=fmt)
    expected = list(iter_rows(snapshot, fmt=fmt))
    if suffix == "outdir":
        loaded = datasets.load_from_disk(str(path))
    else:
        kind = "parquet" if suffix.endswith("parquet") else "json"
        loaded = datasets.load_dataset(kind, data_files=str(path), split="train")
    assert loaded.num_rows == len(expected)
    assert loaded[0] == expected[0]


def test_export_writes_a_dataset_card_beside_the_file(project, ranked, tmp_path):
    snapshot = freeze_snapshot(project, "s", filter={"gold": "exclude"})
    export_snapshot(snapshot, tmp_path / "prefs.jsonl")
    card = (tmp_path / "prefs.README.md").read_text()
    assert f"Snapshot SHA-256: `{snapshot.sha256}`" in card
    assert '"gold": "exclude"' in card
    assert "Pair rule: `all_pairs`" in card


def test_folder_export_puts_the_card_inside(project, ranked, tmp_path):
    export_snapshot(freeze_snapshot(project, "s"), tmp_path / "ds")
    assert (tmp_path / "ds" / "README.md").read_text().startswith("---\nlicense: other")


def test_interrupted_export_leaves_no_file_under_the_final_name(
    project, ranked, tmp_path
):
    snapshot = freeze_snapshot(project, "s")

    class Boom(Exception):
        pass

    import annotation.export as export

    original = export.write_jsonl

    def failing(rows, out, schema=None):
        out.write("{partial")
        raise Boom()

    export.write_jsonl = failing
    try:
        with pytest.raises(Boom):
            export_snapshot(snapshot, tmp_path / "prefs.jsonl")
    finally:
        export.write_jsonl = original
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_both_commands_take_the_rewrite_rule(project, ranked, tmp_path):
    out = tmp_path / "prefs.jsonl"
    call_command(
        "export_preferences",
        *("--project", "demo", "--out", str(out), "--rewrite-rule", "chosen"),
        *("--pair-rule", "best_vs_rest", "--name", "cmd"),
    )
    rows = read_jsonl(out)
    # Best vs rest with the rewrite on top: the rewrite over each of the four.
    assert [r["chosen_policy"] for r in rows] == ["rewrite"] * 4
    call_command(
        "freeze_snapshot", "frozen", "--project", "demo", "--rewrite-rule", "chosen"
    )
    assert Snapshot.objects.get(name="frozen").row_count == 5 + 4
    with pytest.raises(CommandError, match="invalid choice: 'pairs'"):
        call_command(
            "freeze_snapshot", "x", "--project", "demo", "--rewrite-rule", "pairs"
        )


def test_gzip_export_is_gzip(project, ranked, tmp_path):
    path = export_snapshot(freeze_snapshot(project, "s"), tmp_path / "p.jsonl.gz")
    with gzip.open(path, "rt") as f:
        assert len(f.read().splitlines()) == 5


def test_export_preferences_command_freezes_and_writes(project, ranked, tmp_path):
    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", "--project", "demo", "--out", str(out))
    snapshot = Snapshot.objects.get()
    assert snapshot.row_count == 5
    assert len(read_jsonl(out)) == 5


def _prefs_file(project, tmp_path: Path) -> Path:
    """Export a few dozen pairs from three annotators as TRL conversational JSONL."""
    a, b, c = annotators(3)
    for i in range(6):
        task = make_task(
            project,
            f"How many legs has the cat {i}?",
            (
                f"A cat has {4 + i % 2} legs.",
                "Cats have legs.",
                "I don't know.",
                "Fish.",
            ),
        )
        rank(task, a, [[0], [1], [2], [3]])
        rank(task, b, [[0], [2], [1], [3]])
        rank(task, c, [[0], [1, 2], [3]])
    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", "--project", "demo", "--out", str(out))
    return out


@pytest.mark.slow
def test_dpo_trainer_trains_on_the_export_unchanged(project, tmp_path, tiny_model_dir):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = datasets.load_dataset(
        "json", data_files=str(_prefs_file(project, tmp_path)), split="train"
    )
    assert dataset.num_rows == 6 * (6 + 6 + 5)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    before = [p.detach().clone() for p in model.parameters()]
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        bf16=False,
        activation_checkpointing=False,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
    )
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any(
        not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=False)
    )


@pytest.mark.slow
def test_reward_trainer_trains_on_the_export_unchanged(
    project, tmp_path, tiny_model_dir
):
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    dataset = datasets.load_dataset(
        "json", data_files=str(_prefs_file(project, tmp_path)), split="train"
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    before = [p.detach().clone() for p in model.parameters()]
    args = RewardConfig(
        output_dir=str(tmp_path / "rm"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        bf16=False,
        activation_checkpointing=False,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
    )
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any(
        not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=False)
    )
