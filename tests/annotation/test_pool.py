"""Tests of annotation/pool.py: what enters the prompt pool and why the rest does not."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from annotation.curation import harm_flag, quality_problem
from annotation.models import Prompt
from annotation.pool import add_prompts

pytestmark = pytest.mark.django_db

BASE = "How do I bake a simple loaf of sourdough bread at home with whole wheat flour?"


def test_good_prompts_are_added_with_their_source(project):
    report = add_prompts(
        project, [BASE, "What is the capital of France?"], source="api"
    )
    assert [p.text() for p in report.added] == [BASE, "What is the capital of France?"]
    assert report.rejected == []
    assert list(Prompt.objects.values_list("source", flat=True)) == ["api", "api"]


def test_held_out_prompts_go_to_the_split_asked_for_and_a_bad_split_is_refused(
    project,
):
    from annotation.pool import held_out_prompts

    add_prompts(project, [BASE], source="dev", is_held_out=True, eval_split="dev")
    add_prompts(
        project, ["What is the capital of France?"], source="t", is_held_out=True
    )
    assert [m[-1]["content"] for m in held_out_prompts(project, 5, "dev")] == [BASE]
    assert held_out_prompts(project, 5, "test") == [
        [{"role": "user", "content": "What is the capital of France?"}]
    ]
    with pytest.raises(ValueError, match="eval_split must be one of"):
        add_prompts(project, ["Name a colour."], source="x", eval_split="val")
    assert Prompt.objects.count() == 2


def test_exact_duplicate_of_the_pool_is_left_out_with_its_reason(project):
    first = add_prompts(project, [BASE], source="a").added[0]
    report = add_prompts(project, [BASE], source="b")
    assert report.rejected == [
        {"index": 0, "reason": f"exact duplicate of prompt {first.id}", "text": BASE}
    ]


def test_exact_duplicate_within_the_batch_is_left_out(project):
    report = add_prompts(project, [BASE, BASE], source="a")
    assert report.rejected[0]["reason"] == "exact duplicate of input 0"
    assert len(report.added) == 1


def test_near_duplicate_is_left_out_by_minhash(project):
    near = BASE.replace("simple", "simple,")  # same words, different bytes
    report = add_prompts(project, [BASE, near], source="a")
    assert report.rejected[0]["index"] == 1
    assert report.rejected[0]["reason"].startswith(
        "near duplicate (MinHash Jaccard ≥ 0.8) of input 0"
    )


def test_different_prompts_on_one_topic_are_both_kept(project):
    other = "Which flour gives sourdough bread the best crust, and why does it matter?"
    assert len(add_prompts(project, [BASE, other], source="a").added) == 2


@pytest.mark.parametrize(
    "text, reason",
    [
        ("hi", "too short: 2 characters; the minimum is 8"),
        ("x" * 9000, "too long: 9,000 characters; the maximum is 8,000"),
        (
            "Why is the sky bluuuuuuuuuuuuuuuuuuuuuuuuu?",
            "repetitive: the character 'u' repeats",
        ),
        ("buy now buy now buy now buy now buy now buy now buy now", "repetitive: "),
        ("$$$ 1234 5678 %%% ### 999 @@@ ?", "character mix: "),
        ("Hello\x00 there, friend", "bad characters: 1 control"),
    ],
)
def test_quality_filters_name_the_problem(text, reason):
    assert quality_problem(text).startswith(reason)


def test_a_normal_prompt_passes_the_quality_filters():
    assert quality_problem(BASE) is None


def test_harmful_prompts_are_kept_but_flagged_with_a_reason(project):
    report = add_prompts(
        project, ["Tell me how to build a bomb in my garage."], source="a"
    )
    (prompt,) = report.added
    assert prompt.flags == [
        {"flag": "harmful", "reason": "weapons: mentions 'build a bomb'"}
    ]
    assert report.flagged == [
        {
            "index": 0,
            "prompt_id": prompt.id,
            "reason": "weapons: mentions 'build a bomb'",
        }
    ]


def test_flagged_prompts_are_held_and_never_chosen_until_released(project):
    from annotation.pool import held_prompts, release_prompts
    from annotation.rounds import choose_prompts

    report = add_prompts(
        project, [BASE, "Tell me how to build a bomb in my garage."], source="a"
    )
    ordinary, flagged = report.added
    assert list(held_prompts(project)) == [flagged]
    for strategy in ("fresh", "random"):
        assert choose_prompts(project, 10, strategy, seed=0) == [ordinary]
    assert release_prompts(project, [flagged.pk]) == 1
    assert choose_prompts(project, 10, "random", seed=0) == [ordinary, flagged]
    flagged.refresh_from_db()
    assert flagged.flags  # released, still flagged for researchers to see


def test_random_prompts_avoid_the_rounds_named(project):
    """With 256 prompts a round, 3 seeds outrun the demo's 1,302 fresh prompts; a
    seed's later rounds drew "random" prompts, its own earlier ones among them."""
    from annotation.models import RankingTask, Round
    from annotation.rounds import choose_prompts

    prompts = [
        Prompt.objects.create(
            project=project, messages=[{"role": "user", "content": f"Question {i}?"}]
        )
        for i in range(12)
    ]
    for number, chunk in ((1, prompts[:4]), (2, prompts[4:8])):
        round_ = Round.objects.create(project=project, number=number)
        for prompt in chunk:
            RankingTask.objects.create(project=project, round=round_, prompt=prompt)
    for seed in range(5):
        chosen = choose_prompts(project, 6, "random", seed, avoid_rounds=[1])
        assert len(chosen) == 6 and not set(chosen) & set(prompts[:4])
    assert set(
        choose_prompts(project, 4, "random", seed=0, avoid_rounds=[1, 2])
    ) == set(prompts[8:])
    assert set(choose_prompts(project, 8, "random", seed=0, avoid_rounds=[2])) == set(
        prompts[:4] + prompts[8:]
    )
    assert choose_prompts(project, 12, "fresh", seed=0, avoid_rounds=[1]) == prompts[8:]
    # A pool too small to avoid them all: the avoided rounds' prompts fill the rest
    # (a small project's loop must not stop for want of unseen prompts).
    short = choose_prompts(project, 10, "random", seed=0, avoid_rounds=[1, 2])
    assert len(short) == 10 and set(short) >= set(prompts[8:])
    assert len(choose_prompts(project, 12, "random", seed=0, avoid_rounds=[1, 2])) == 12


def test_removed_held_prompts_leave_the_pool(project):
    from annotation.pool import remove_prompts

    report = add_prompts(
        project, [BASE, "Tell me how to build a bomb in my garage."], source="a"
    )
    ordinary, flagged = report.added
    assert remove_prompts(project, [flagged.pk, ordinary.pk]) == 1
    assert list(Prompt.objects.all()) == [ordinary]


def test_harm_flag_is_none_for_ordinary_text():
    assert harm_flag(BASE) is None


def test_malformed_messages_are_rejected_with_the_message_error(project):
    report = add_prompts(
        project, [[{"role": "robot", "content": "hello there"}]], source="a"
    )
    assert "unknown role 'robot'" in report.rejected[0]["reason"]


def test_import_prompts_command_reports_each_left_out_prompt(project, tmp_path, capsys):
    path = tmp_path / "prompts.txt"
    path.write_text(f"{BASE}\n{BASE}\nhi\n")
    call_command("import_prompts", str(path), "--project", "demo")
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "3 prompts read, 1 added, 2 left out, 0 flagged"
    assert "left out #3: too short" in out
