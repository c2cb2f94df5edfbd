"""The headless loop: figures, table, JSON line, lineage, and the run_loop command."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Project, Prompt, Ranking
from demo.world import JUDGE, eval_prompts, make_prompts, parse_prompt, question_split
from inference.models import Policy
from training.charts import table_header, table_row
from training.loop import (
    METHOD_DEFAULTS,
    LoopConfig,
    RoundFigures,
    judge_win_rate,
    load_figures,
    run_loop,
    stage_options,
)
from training.models import TrainingRound

SUMMARY_KEYS = [
    "round",
    "win_rate_vs_sft",
    "win_rate_ci",
    "win_rate_vs_previous",
    "accuracy",
    "accuracy_sft",
    "accuracy_gain_ci",
    "kl",
    "distinct_2",
    "distinct_2_sft",
    "seeds",
    "win_rate_by_seed",
    "accuracy_by_seed",
    "wall_s",
    "cpu_s",
]


def test_judge_win_rate_counts_a_tie_as_half():
    prompt = make_prompts(1, seed=0)[0]
    good = "Sure! I don't know, ask someone else."
    bad = "Ugh. I don't know, ask someone else."
    rate = judge_win_rate([prompt], [[good, good, bad]], [[bad, good, good]], JUDGE)
    assert rate == (1 + 0.5 + 0) / 3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rounds": 0}, "rounds must be at least 1, got 0"),
        (
            {"method": "sft"},
            "method must be one of \\['dpo', 'grpo', 'ppo', 'rloo', 'sft-dpo', "
            "'sft-grpo', 'sft-ppo', 'sft-rloo'\\], got 'sft'",
        ),
        ({"flip_rate": 2.0}, "flip_rate must be in \\[0, 1\\], got 2.0"),
        ({"eval_samples": 1}, "eval_samples at least 2"),
        ({"train": {"ppo": {}}}, "train options name stages \\['ppo'\\]"),
        ({"train": {"evaluate": {}}}, "the loop evaluates each round itself"),
        ({"seeds": 0}, "seeds must be 1 to 10, got 0"),
        ({"split": "train"}, "split must be 'dev' or 'test', got 'train'"),
        ({"pairs": "best"}, "pairs must be 'all_pairs' or 'best_vs_rest'"),
        ({"candidates": 9}, "candidates must be 0 \\(the project's\\) or 2 to 8"),
        ({"rewrites": 1.5}, "rewrites must be in \\[0, 1\\], got 1.5"),
        ({"reward": "rm"}, "reward must be 'model' or 'judge', got 'rm'"),
        (
            {"reward": "judge", "method": "sft-ppo"},
            "reward='judge' is for GRPO and RLOO \\(a verifiable reward\\); method "
            "'sft-ppo' trains no group stage",
        ),
        (
            {"reward": "judge", "method": "grpo", "reward_ensemble": 2},
            "reward_ensemble=2 is for the reward models of PPO, GRPO or RLOO",
        ),
        (
            {"reward": "judge", "method": "grpo", "train": {"reward": {}}},
            "train options name stages \\['reward'\\] that the grpo pipeline "
            "\\(grpo\\) does not run",
        ),
        (
            {"reward_ensemble": 9, "method": "ppo"},
            "reward_ensemble must be 1 to 8, got 9",
        ),
        (
            {"reward_ensemble": 2},
            "reward_ensemble=2 is for the reward models of PPO, GRPO or RLOO",
        ),
    ],
)
def test_bad_loop_settings_are_refused_with_the_value(options, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(**options)


def test_table_row_lines_up_with_the_header():
    figures = RoundFigures(
        1,
        "demo-round1-1-dpo",
        120,
        None,
        0.61,
        0.7,
        0.25,
        0.4,
        0.5,
        33.3,
        accuracy=0.5,
        accuracy_sft=0.25,
        win_rate_ci=(0.65, 0.75),
        seeds=[0, 1, 2],
        win_rate_by_seed=[0.6, 0.7, 0.8],
        accuracy_by_seed=[0.4, 0.5, 0.6],
        cpu_s=60.0,
    )
    assert len(table_row(figures)) == len(table_header())
    assert figures.summary() == {
        "round": 1,
        "win_rate_vs_sft": 0.7,
        "win_rate_ci": [0.65, 0.75],
        "win_rate_vs_previous": 0.61,
        "accuracy": 0.5,
        "accuracy_sft": 0.25,
        "accuracy_gain_ci": None,  # no per-prompt values to resample
        "kl": 0.25,
        "distinct_2": 0.4,
        "distinct_2_sft": 0.5,
        "seeds": [0, 1, 2],
        "win_rate_by_seed": [0.6, 0.7, 0.8],
        "accuracy_by_seed": [0.4, 0.5, 0.6],
        "wall_s": 33.3,
        "cpu_s": 60.0,
    }


def test_the_mean_over_seeds_averages_each_prompt_before_resampling_prompts():
    from training.loop import mean_over_seeds

    def seed_figures(seed, wins, accuracy):
        return RoundFigures(
            2,
            f"p{seed}",
            10,
            None,
            0.5,
            sum(wins) / 2,
            1.0,
            0.6,
            0.8,
            10.0,
            accuracy=sum(accuracy) / 2,
            accuracy_sft=0.2,
            win_rate_ci=(0, 1),
            seeds=[seed],
            win_by_prompt=wins,
            accuracy_by_prompt=accuracy,
            accuracy_sft_by_prompt=[0.2, 0.2],
        )

    mean = mean_over_seeds(
        [
            seed_figures(0, [1.0, 0.5], [1.0, 0.0]),
            seed_figures(1, [0.5, 0.0], [0.5, 0.5]),
        ]
    )
    assert mean.win_by_prompt == [0.75, 0.25]
    assert mean.win_rate_vs_sft == 0.5
    assert mean.win_rate_by_seed == [0.75, 0.25]
    assert mean.accuracy == 0.5 and mean.accuracy_sft == 0.2
    assert mean.seeds == [0, 1]
    assert 0.25 <= mean.win_rate_ci[0] <= 0.5 <= mean.win_rate_ci[1] <= 0.75
    # The gain's interval pairs each prompt's accuracy with SFT's on that prompt:
    # per prompt 0.75 - 0.2 and 0.25 - 0.2.
    low, high = mean.accuracy_gain_ci()
    assert (round(low, 6), round(high, 6)) == (0.05, 0.55)
    assert mean.summary()["accuracy_gain_ci"] == [0.05, 0.55]
    assert "loose_accuracy" not in mean.summary()  # the demo judge has no loose reading


def _seed_run(seed: int, wins: list[float], rounds: int = 2) -> list[RoundFigures]:
    return [
        RoundFigures(
            r,
            f"p{seed}-{r}",
            10,
            None,
            0.5,
            sum(wins) / len(wins),
            1.0,
            0.6,
            0.8,
            10.0,
            accuracy=0.5,
            accuracy_sft=0.25,
            win_rate_ci=(0.0, 1.0),
            seeds=[seed],
            win_by_prompt=wins,
            accuracy_by_prompt=[0.5] * len(wins),
            accuracy_sft_by_prompt=[0.25] * len(wins),
        )
        for r in range(1, rounds + 1)
    ]


PROMPTS = [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]]


def _save(path, runs, prompts=PROMPTS, method="dpo", cpu_s=60.0):
    from training.loop import save_figures

    return save_figures(
        path,
        runs,
        project="demo",
        method=method,
        split="test",
        prompts=prompts,
        wall_s=30.0,
        cpu_s=cpu_s,
    )


def test_seeds_saved_by_separate_runs_pool_as_if_one_run_had_made_them(tmp_path):
    from training.loop import mean_over_seeds, pool_figures

    runs = [_seed_run(0, [1.0, 0.5]), _seed_run(1, [0.5, 0.0]), _seed_run(2, [1, 1])]
    one = _save(tmp_path / "one.json", runs[:2])
    other = _save(tmp_path / "other.json", runs[2:], cpu_s=40.0)
    lines: list[str] = []
    pooled = pool_figures([one, other], out=lines.append)

    expected = mean_over_seeds([run[1] for run in runs])
    assert pooled[1].win_by_prompt == expected.win_by_prompt == [2.5 / 3, 1.5 / 3]
    assert pooled[1].win_rate_ci == expected.win_rate_ci
    assert pooled[1].seeds == [0, 1, 2]
    summary = json.loads(lines[-1])
    assert summary["seeds"] == [0, 1, 2] and summary["round"] == 2
    assert summary["cpu_s"] == 100.0  # both processes' CPU time
    assert lines[0] == table_header()
    assert all(any(f"p{s}-2" in line for line in lines) for s in (0, 1, 2))
    assert "mean of 3 seeds, test split, 2 prompts:" in lines


def test_pooling_refuses_other_prompts_other_methods_a_seed_twice_and_other_files(
    tmp_path,
):
    from training.loop import pool_figures

    base = _save(tmp_path / "base.json", [_seed_run(0, [1.0, 0.5])])
    other_prompts = _save(
        tmp_path / "p.json", [_seed_run(1, [1.0, 0.5])], prompts=PROMPTS[:1]
    )
    with pytest.raises(ValueError, match="prompts_digest"):
        pool_figures([base, other_prompts], out=lambda _: None)
    ppo = _save(tmp_path / "ppo.json", [_seed_run(1, [1.0, 0.5])], method="ppo")
    with pytest.raises(ValueError, match="method 'ppo' against 'dpo'"):
        pool_figures([base, ppo], out=lambda _: None)
    one_round = _save(tmp_path / "r.json", [_seed_run(1, [1.0, 0.5], rounds=1)])
    with pytest.raises(ValueError, match="rounds 1 against 2"):
        pool_figures([base, one_round], out=lambda _: None)
    again = _save(tmp_path / "again.json", [_seed_run(0, [0.0, 0.5])])
    with pytest.raises(ValueError, match=r"seed\(s\) \[0\] appear in more than one"):
        pool_figures([base, again], out=lambda _: None)
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"format": "rlhf-loop-figures/1", "runs": [[{"round": 1}]]}')
    with pytest.raises(ValueError, match="damaged.json: a damaged loop figures file"):
        pool_figures([damaged], out=lambda _: None)
    (tmp_path / "x.json").write_text('{"round": 2}')
    with pytest.raises(CommandError, match="x.json: not a loop figures file"):
        call_command("pool_loop", str(tmp_path / "x.json"), stdout=StringIO())


def test_the_accuracy_line_gives_the_gain_with_its_interval_and_the_loose_reading():
    from training.loop import accuracy_line

    figure = RoundFigures(
        2, "p", 10, None, 0.5, 0.6, 1.0, 0.6, 0.8, 10.0,
        accuracy=0.4,
        accuracy_sft=0.2,
        seeds=[0],
        accuracy_by_prompt=[0.4, 0.4],
        accuracy_sft_by_prompt=[0.2, 0.2],
        loose_accuracy=0.5,
        loose_accuracy_sft=0.25,
    )  # fmt: skip
    assert accuracy_line(figure) == (
        "round 2: accuracy 0.400 against SFT's 0.200, gain +20.0 points "
        "[+20.0, +20.0]; loosely 0.500 against 0.250"
    )
    assert figure.summary()["loose_accuracy"] == 0.5
    assert figure.summary()["loose_accuracy_sft"] == 0.25
    assert "substantive_accuracy" not in figure.summary()  # its judge offers none
    # Where the judge offers a floor of substance, it, its gain's interval (paired by
    # prompt, like the strict one) and the answers' length follow.
    figure.substantive_accuracy, figure.substantive_accuracy_sft = 0.1, 0.15
    figure.substantive_by_prompt, figure.substantive_sft_by_prompt = (
        [0.0, 0.2],
        [0.1, 0.2],
    )
    figure.words, figure.words_sft = 4.0, 38.5
    assert accuracy_line(figure).endswith(
        "; substantive answers only 0.100 against 0.150, gain -5.0 points "
        "[-10.0, +0.0] (mean words 4.0 against 38.5)"
    )
    assert figure.summary()["substantive_accuracy"] == 0.1
    assert figure.summary()["substantive_gain_ci"] == [-0.1, 0.0]
    assert figure.summary()["words_sft"] == 38.5
    # Each reading's interval pairs its own columns.
    assert figure.accuracy_gain_ci() == (0.2, 0.2)
    assert figure.accuracy_gain_ci("loose") is None  # no per-prompt loose values here
    with pytest.raises(ValueError, match=r"no per-prompt reading 'kl'; use one of"):
        figure.accuracy_gain_ci("kl")


@pytest.fixture(scope="module")
def micro_sft_dir(tmp_path_factory):
    """The micro preset of the demo models: it writes demo-like sentences the judge tells apart."""
    from demo.policies import build_demo_models

    paths = build_demo_models(
        tmp_path_factory.mktemp("micro-demo"), "micro", 0, progress=False
    )
    return paths["sft"]


@pytest.fixture
def micro_project(db, micro_sft_dir, admin_user) -> Project:
    """A demo-domain project on the micro SFT model: 30 pool prompts, 4 test, 2 dev."""
    # A parent, as demo-sft has: redeploying it for the next seed is a rollback to a
    # policy that served the project, not an unevaluated deployment.
    base = Policy.objects.create(name="micro-base", base_path=str(micro_sft_dir))
    sft = Policy.objects.create(
        name="micro-sft", base_path=str(micro_sft_dir), parent=base
    )
    project = Project.objects.create(
        name="loop", responses_per_task=3, overlap=2, gold_rate=0.0, current_policy=sft
    )
    for messages in make_prompts(30, seed=3, split="train"):
        Prompt.objects.create(project=project, messages=messages)
    for split, n in (("test", 4), ("dev", 2)):
        for messages in eval_prompts(split)[:n]:
            Prompt.objects.create(
                project=project, messages=messages, is_held_out=True, eval_split=split
            )
    return project


MICRO = dict(
    prompts_per_round=6,
    max_new_tokens=12,
    eval_prompts=4,
    eval_samples=2,
    train={
        "dpo": {"max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 100}
    },
)


@pytest.mark.slow
def test_two_micro_rounds_register_lineage_deploy_and_end_with_the_json_line(
    micro_project, admin_user, tmp_path
):
    lines: list[str] = []
    figures = run_loop(
        micro_project,
        # 10 prompts a round: the 30-prompt pool runs out in the second seed.
        LoopConfig(rounds=2, seeds=2, seed=4, **{**MICRO, "prompts_per_round": 10}),
        user=admin_user,
        out=lines.append,
        plot_path=tmp_path / "loop.png",
        figures_path=tmp_path / "loop.json",
    )
    summary = json.loads(lines[-1])
    assert list(summary) == SUMMARY_KEYS
    assert summary["round"] == 2
    assert summary["seeds"] == [4, 5]
    # The seeds' figures file pools back to the loop's own JSON line (times aside).
    pooled: list[str] = []
    call_command("pool_loop", str(tmp_path / "loop.json"), stdout=StringIO())
    from training.loop import pool_figures

    pool_figures([tmp_path / "loop.json"], out=pooled.append)
    times = ("wall_s", "cpu_s")
    assert {k: v for k, v in json.loads(pooled[-1]).items() if k not in times} == {
        k: v for k, v in summary.items() if k not in times
    }
    assert len(summary["win_rate_by_seed"]) == 2
    low, high = summary["win_rate_ci"]
    assert low <= summary["win_rate_vs_sft"] <= high
    assert 0 <= summary["accuracy"] <= 1 and 0 <= summary["accuracy_sft"] <= 1
    assert lines[0] == table_header()
    assert (tmp_path / "loop.png").stat().st_size > 1000
    assert [f.round for f in figures] == [1, 2]

    # Each seed ran both rounds from the SFT policy: four trained policies, two chains.
    sft = Policy.objects.get(name="micro-sft")
    trained = list(
        Policy.objects.filter(parent__isnull=False).exclude(pk=sft.pk).order_by("id")
    )
    assert len(trained) == 4
    first, second = trained[2:]  # the last seed's
    assert trained[0].parent == sft and trained[1].parent == trained[0]
    # The loop is the one evaluation: the rounds ran no evaluation stage.
    assert not TrainingRound.objects.filter(jobs__stage="evaluate").exists()
    assert (
        second.metrics["eval_split"] == "test" and second.metrics["eval_prompts"] == 4
    )
    # Held out at the question level: every published prompt asks a train question.
    published = Prompt.objects.filter(project=micro_project, tasks__isnull=False)
    assert published.exists()
    assert {question_split(parse_prompt(p.messages)) for p in published} == {"train"}
    assert (first.parent, second.parent) == (sft, first)
    micro_project.refresh_from_db()
    assert micro_project.current_policy == second
    rounds = list(TrainingRound.objects.filter(project=micro_project).order_by("id"))
    assert [(r.method, r.status, r.output_policy) for r in rounds] == [
        ("dpo", "succeeded", p) for p in trained
    ]
    assert [
        r.snapshot.name == p.snapshot_name for r, p in zip(rounds, trained, strict=True)
    ] == [True] * 4
    assert set(second.metrics) >= {
        "judge_win_rate_vs_sft",
        "judge_win_rate_vs_previous",
        "kl",
    }
    # Round 2 mixed candidates of the deployed policy with its predecessor's.
    policies_in_round2 = set(
        micro_project.rounds.get(number=4).tasks.values_list(
            "responses__policy__name", flat=True
        )
    )
    assert policies_in_round2 == {first.name, sft.name}
    # Out of fresh prompts, the last seed's second round drew pool prompts it had
    # not labelled in its first.
    last, before = (micro_project.rounds.get(number=n) for n in (4, 3))
    assert (before.strategy, last.strategy) == ("fresh", "random")
    asked = {
        n: set(r.tasks.values_list("prompt", flat=True))
        for n, r in ((3, before), (4, last))
    }
    assert len(asked[4]) == 10 and not asked[4] & asked[3]
    # Every ranking came from a simulated annotator, through leases.
    assert (
        Ranking.objects.filter(task__project=micro_project, lease__isnull=True).count()
        == 0
    )


# Micro stages: an SFT and a reward stage of two steps, one PPO update of 4 rollouts.
MICRO_SFT = {"max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 100}
MICRO_REWARD = {"max_steps": 2, "per_device_train_batch_size": 4, "eval_fraction": 0}
MICRO_PPO = {
    "max_steps": 1,
    "batch_size": 4,
    "mini_batch_size": 2,
    "ppo_epochs": 1,
    "score_norm_batches": 1,
}
MICRO_GRPO = {
    "max_steps": 1,
    "per_device_train_batch_size": 8,
    "max_completion_length": 8,
}


def _one_round_with_rewrites(project, user, tmp_path, method, train, out=None) -> None:
    """Run one micro round of `method` with 4 candidates and every wrong best rewritten."""
    run_loop(
        project,
        LoopConfig(
            method=method,
            rounds=1,
            seeds=1,
            candidates=4,
            rewrites=1.0,
            **{**MICRO, "train": train},
        ),
        user=user,
        out=out or (lambda line: None),
        plot_path=tmp_path / "loop.png",
    )


@pytest.mark.slow
def test_a_micro_sft_dpo_round_fine_tunes_on_the_rewrites_then_runs_dpo(
    micro_project, admin_user, tmp_path
):
    """`--method sft-dpo --rewrites 1` on the demo: the annotators rewrite the wrong
    best answers with the world table's, the SFT stage trains on the demonstrations
    (each rewritten order's rewrite alone) and DPO continues from its policy."""
    from annotation.export import iter_rows
    from demo.world import JUDGE

    lines: list[str] = []
    train = {**MICRO["train"], "sft": MICRO_SFT}
    _one_round_with_rewrites(
        micro_project, admin_user, tmp_path, "sft-dpo", train, out=lines.append
    )
    assert json.loads(lines[-1])["round"] == 1
    round_ = TrainingRound.objects.get(project=micro_project)
    assert (round_.method, round_.status) == ("sft,dpo", "succeeded")
    assert sorted(round_.jobs.values_list("stage", flat=True)) == ["dpo", "sft"]
    snapshot = round_.snapshot
    assert snapshot.rewrite_rule == "chosen" and snapshot.stats["rewrites"] >= 1
    demonstrations = list(iter_rows(snapshot, fmt="sft", style="standard"))
    rewrites = [r for r in demonstrations if r["origin"] == "rewrite"]
    assert len(rewrites) == snapshot.stats["rewrites"]
    for row in rewrites:
        messages = Prompt.objects.get(pk=row["prompt_id"]).messages
        assert JUDGE.correct(messages, row["completion"]), row["completion"]
    # A rewritten task's demonstration is its rewrite alone.
    rewritten = {r["prompt_id"] for r in rewrites}
    assert not [
        r
        for r in demonstrations
        if r["origin"] == "top_ranked" and r["prompt_id"] in rewritten
    ]
    micro_project.refresh_from_db()
    assert micro_project.current_policy == round_.output_policy
    # Lineage: SFT policy -> the round's SFT stage -> its DPO stage.
    sft_stage = round_.output_policy.parent
    assert sft_stage.name.endswith("-sft") and sft_stage.parent.name == "micro-sft"


@pytest.mark.slow
def test_a_micro_grpo_round_trains_a_reward_model_then_grpo_and_deploys(
    micro_project, admin_user, tmp_path
):
    lines: list[str] = []
    run_loop(
        micro_project,
        LoopConfig(
            method="grpo",
            rounds=1,
            seeds=1,
            candidates=4,
            **{
                **MICRO,
                "train": {
                    "reward": {
                        "max_steps": 2,
                        "per_device_train_batch_size": 4,
                        "eval_fraction": 0.5,
                    },
                    "grpo": MICRO_GRPO,
                },
            },
        ),
        user=admin_user,
        out=lines.append,
        plot_path=tmp_path / "loop.png",
    )
    summary = json.loads(lines[-1])
    assert summary["round"] == 1 and summary["seeds"] == [0]
    round_ = TrainingRound.objects.get(project=micro_project)
    assert (round_.method, round_.status) == ("reward,grpo", "succeeded")
    assert sorted(round_.jobs.values_list("stage", flat=True)) == ["grpo", "reward"]
    micro_project.refresh_from_db()
    assert micro_project.current_policy == round_.output_policy
    assert round_.output_policy.parent.name == "micro-sft"
    # The reward stage's held-out accuracy is the table's rm_acc column.
    assert "rm_win_rate_vs_sft" in round_.output_policy.metrics


@pytest.mark.slow
def test_a_micro_grpo_round_scored_by_the_judge_trains_no_reward_model(
    micro_project, admin_user, tmp_path
):
    lines: list[str] = []
    run_loop(
        micro_project,
        LoopConfig(
            method="grpo",
            reward="judge",
            rounds=1,
            seeds=1,
            candidates=4,
            **{
                **MICRO,
                "train": {
                    "grpo": MICRO_GRPO,
                },
            },
        ),
        user=admin_user,
        out=lines.append,
        plot_path=tmp_path / "loop.png",
        figures_path=tmp_path / "loop.json",
    )
    round_ = TrainingRound.objects.get(project=micro_project)
    assert (round_.method, round_.status) == ("grpo", "succeeded")
    assert load_figures(tmp_path / "loop.json")["method"] == "grpo-judge"
    (job,) = round_.jobs.all()
    assert (job.config["judge"], job.config["reward_model_path"]) == ("demo", "")
    assert "rewards/judge/mean" in job.last_metrics
    assert not Policy.objects.filter(kind=Policy.Kind.REWARD_MODEL).exists()
    micro_project.refresh_from_db()
    assert micro_project.current_policy == round_.output_policy
    # No reward model: the table's rm_acc column says so.
    summary = json.loads(lines[-1])
    assert summary["round"] == 1
    assert "rm_win_rate_vs_sft" not in round_.output_policy.metrics


@pytest.mark.slow
def test_micro_ppo_rounds_score_with_their_ensembles_and_earlier_rounds_reward_models(
    micro_project, admin_user, tmp_path
):
    run_loop(
        micro_project,
        LoopConfig(
            method="ppo",
            rounds=3,
            seeds=1,
            candidates=3,
            reward_ensemble=2,
            **{
                **MICRO,
                "train": {
                    "reward": {**MICRO_REWARD, "ensemble_size": 2},
                    "ppo": MICRO_PPO,
                },
            },
        ),
        user=admin_user,
        out=lambda line: None,
        plot_path=tmp_path / "loop.png",
    )
    rounds = list(TrainingRound.objects.filter(project=micro_project).order_by("id"))
    assert [r.status for r in rounds] == ["succeeded"] * 3
    reward_models = [r.jobs.get(stage="reward").output_policy.base_path for r in rounds]
    ensembles = [
        r.jobs.get(stage="ppo").config.get("reward_ensemble_paths") for r in rounds
    ]
    # Each round's reward stage trains a second member; round 1 has no earlier
    # reward model, and each later round adds the one before it.
    own = [f"{path}/members/1" for path in reward_models]
    assert ensembles == [
        [own[0]],
        [reward_models[0], own[1]],
        [reward_models[1], own[2]],
    ]
    last = rounds[2].jobs.get(stage="ppo").last_metrics
    assert len(last["score_shift"]) == 3 and len(last["score_scale"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, stage, options",
    [("sft-ppo", "ppo", MICRO_PPO), ("sft-grpo", "grpo", MICRO_GRPO)],
)
def test_a_micro_sft_round_fine_tunes_on_the_rewrites_then_runs_the_online_stage_from_it(
    micro_project, admin_user, tmp_path, method, stage, options
):
    """`--method sft-ppo --rewrites 1`: InstructGPT's order. The SFT stage learns the
    round's demonstrations, the reward model learns the round's pairs, and PPO (or
    GRPO, `sft-grpo`) starts from the SFT stage's policy, not from the deployed one."""
    train = {"sft": MICRO_SFT, "reward": MICRO_REWARD, stage: options}
    _one_round_with_rewrites(micro_project, admin_user, tmp_path, method, train)
    round_ = TrainingRound.objects.get(project=micro_project)
    assert (round_.method, round_.status) == (f"sft,reward,{stage}", "succeeded")
    jobs = {job.stage: job for job in round_.jobs.all()}
    assert round_.snapshot.rewrite_rule == "chosen"
    assert round_.snapshot.stats["rewrites"] >= 1
    sft_output = jobs["sft"].output_policy
    assert jobs[stage].config["base_path"] == sft_output.base_path
    assert jobs[stage].config["adapter_path"] == sft_output.adapter_path
    assert jobs[stage].config["reward_model_path"] == (
        jobs["reward"].output_policy.base_path
    )
    # Lineage: SFT policy -> the round's SFT stage -> its policy stage, deployed.
    assert round_.output_policy.parent == sft_output
    assert sft_output.parent.name == "micro-sft"
    micro_project.refresh_from_db()
    assert micro_project.current_policy == round_.output_policy


def test_the_table_gives_an_ensembles_accuracy_not_its_first_members(
    project, admin_user
):
    """rm_acc read the first member's held-out accuracy, while PPO scored with the
    members' mean; a round without members keeps the one model's."""
    from tests.annotation.data_factories import make_policy
    from training.loop import _rm_accuracy
    from training.models import TrainingJob

    training_round = TrainingRound.objects.create(
        project=project,
        method="reward,ppo",
        parent_policy=make_policy(),
        created_by=admin_user,
    )
    job = TrainingJob.objects.create(
        round=training_round,
        stage="reward",
        index=0,
        last_metrics={"eval_accuracy": 0.6, "eval_ensemble_accuracy": 0.7},
    )
    assert _rm_accuracy(training_round) == 0.7
    job.last_metrics = {"eval_accuracy": 0.6}
    job.save()
    assert _rm_accuracy(training_round) == 0.6


def test_command_refuses_an_unknown_project(db):
    with pytest.raises(CommandError, match="no project named 'nope'"):
        call_command("run_loop", "--project=nope", stdout=StringIO())


def test_command_refuses_rewrites_with_a_judge_that_cannot_repair(project, monkeypatch):
    """A judge that ranks but cannot correct a response cannot write rewrites, so
    simulated rewrites are refused before anything is published, naming the judge
    and the fix."""
    from inference import judges

    monkeypatch.setitem(
        judges._JUDGES, "first", "tests.inference.test_judges:ALWAYS_FIRST"
    )
    with pytest.raises(CommandError, match="needs a judge that repairs") as refused:
        call_command(
            "run_loop",
            "--project=demo",
            "--judge=first",
            "--rewrites=0.5",
            stdout=StringIO(),
        )
    assert "judge 'first' has none: use --judge demo or --judge instructions" in str(
        refused.value
    )
    assert not project.rounds.exists()


def test_command_refuses_substantive_rewrites_with_a_judge_without_substance(project):
    """Rewrites that start from a substantive answer need the instructions judge's
    floor of substance; the demo judge has none, so the loop refuses before
    publishing anything, and a start it does not know is refused by the config."""
    with pytest.raises(
        CommandError, match="needs a judge with `correct_substantively`"
    ):
        call_command(
            "run_loop",
            "--project=demo",
            "--rewrites=1",
            "--rewrite-from=substantive",
            stdout=StringIO(),
        )
    assert not project.rounds.exists()
    with pytest.raises(ValueError, match="rewrite_from must be one of"):
        LoopConfig(rewrite_from="longest")


def test_command_refuses_bad_train_json(project):
    with pytest.raises(CommandError, match="--train is not valid JSON"):
        call_command("run_loop", "--project=demo", "--train={dpo", stdout=StringIO())


def test_ppo_rounds_take_the_short_kl_bound_stage_unless_told_otherwise():
    config = LoopConfig(method="ppo", train={"ppo": {"max_steps": 5}})
    assert config.votes == "consensus"
    assert stage_options(config) == {
        "reward": {"num_train_epochs": 1},
        "ppo": {
            "kl_coef": 0.3,
            "learning_rate": 1e-4,
            "max_steps": 5,
            "score_norm_batches": 4,
            "max_new_tokens": 48,
        },
    }
    assert stage_options(config, seed=2) == {
        "reward": {"num_train_epochs": 1, "seed": 2},
        "ppo": {
            "kl_coef": 0.3,
            "learning_rate": 1e-4,
            "max_steps": 5,
            "score_norm_batches": 4,
            "max_new_tokens": 48,
            "seed": 2,
        },
    }
    assert LoopConfig(method="dpo").votes == "consensus"
    # DPO: best-vs-rest pairs over 8 candidates (kept on the dev split, docs/loop.md).
    dpo = LoopConfig(method="dpo")
    assert (dpo.pairs, dpo.candidates) == ("best_vs_rest", 8)
    assert (config.pairs, config.candidates) == ("all_pairs", 8)
    assert LoopConfig(method="dpo", candidates=0, pairs="all_pairs").candidates == 0
    assert LoopConfig(method="ppo", votes="every").votes == "every"
    assert stage_options(LoopConfig(method="dpo")) == {}


def test_online_rollouts_are_as_long_as_the_candidates_unless_told():
    """`--max-new-tokens 64` once left PPO and GRPO sampling 32-token rollouts, which the
    reward model (trained on 64-token candidates) scored cut off."""
    for method, stage, option in (
        ("ppo", "ppo", "max_new_tokens"),
        ("grpo", "grpo", "max_completion_length"),
    ):
        assert (
            stage_options(LoopConfig(method=method, max_new_tokens=64))[stage][option]
            == 64
        )
        told = LoopConfig(method=method, max_new_tokens=64, train={stage: {option: 16}})
        assert stage_options(told)[stage][option] == 16
    assert "max_new_tokens" not in stage_options(LoopConfig(method="dpo")).get(
        "dpo", {}
    )


def test_command_leaves_votes_to_the_method_unless_given():
    from training.management.commands.run_loop import Command

    parser = Command().create_parser("manage.py", "run_loop")
    assert parser.parse_args(["--project", "demo", "--method", "ppo"]).votes == ""
    assert (
        parser.parse_args(["--project", "demo", "--votes", "consensus"]).votes
        == "consensus"
    )


def test_sft_ppo_trains_on_every_rounds_data_unless_told():
    """sft-ppo's rounds train on all the seed's rounds so far (chosen on the dev split,
    docs/loop.md); the other methods on their own round's; a typed value wins."""
    from training.management.commands.run_loop import Command

    parser = Command().create_parser("manage.py", "run_loop")

    def resolved(*argv: str) -> str:
        options = parser.parse_args(["--project", "demo", *argv])
        return LoopConfig(method=options.method, data=options.data).data

    for method in ("sft-ppo", "sft-grpo", "sft-rloo"):
        assert resolved("--method", method, "--rewrites", "1") == "all"
    for method in ("dpo", "sft-dpo", "ppo", "grpo", "rloo"):
        assert resolved("--method", method) == "round"
    assert resolved("--method", "sft-ppo", "--data", "round") == "round"
    assert resolved("--method", "ppo", "--data", "all") == "all"
    with pytest.raises(ValueError, match="data must be 'round' or 'all', got 'some'"):
        LoopConfig(data="some")


def test_command_leaves_candidates_to_the_method_unless_given(monkeypatch):
    """The PPO command as typed once published DPO's 8 candidates: its default leaked."""
    from training.management.commands.run_loop import Command

    monkeypatch.setitem(
        METHOD_DEFAULTS, "ppo", {**METHOD_DEFAULTS["ppo"], "candidates": 0}
    )
    parser = Command().create_parser("manage.py", "run_loop")

    def resolved(*argv: str) -> int:
        options = parser.parse_args(["--project", "demo", *argv])
        return LoopConfig(
            method=options.method, candidates=options.candidates
        ).candidates

    assert resolved("--method", "ppo") == 0
    assert resolved("--method", "dpo") == METHOD_DEFAULTS["dpo"]["candidates"] == 8
    assert resolved("--method", "ppo", "--candidates", "6") == 6


def test_prompts_and_temperature_are_the_methods_unless_given():
    """The sft- methods publish 256 prompts a round sampled at 0.7 (chosen on the dev
    split, docs/loop.md); the others keep 128 at 1.0; a typed value wins, 0 stays
    greedy."""
    from training.management.commands.run_loop import Command

    parser = Command().create_parser("manage.py", "run_loop")

    def resolved(*argv: str) -> tuple[int, float]:
        options = parser.parse_args(["--project", "demo", *argv])
        config = LoopConfig(
            method=options.method,
            prompts_per_round=options.prompts,
            temperature=options.temperature,
        )
        return config.prompts_per_round, config.temperature

    # The README's commands as typed.
    assert resolved("--method", "sft-dpo", "--rewrites", "1") == (256, 0.7)
    assert resolved("--method", "sft-ppo", "--rewrites", "1") == (256, 0.7)
    # The group methods' SFT variants take sft-ppo's round settings.
    assert resolved("--method", "sft-grpo", "--rewrites", "1") == (256, 0.7)
    assert resolved("--method", "sft-rloo", "--rewrites", "1") == (256, 0.7)
    assert resolved("--method", "ppo") == (128, 1.0)
    assert resolved("--method", "dpo") == resolved() == (128, 1.0)
    assert resolved("--method", "grpo") == (128, 1.0)
    assert resolved("--method", "sft-dpo", "--prompts", "64") == (64, 0.7)
    assert resolved("--method", "sft-dpo", "--temperature", "1") == (256, 1.0)
    assert resolved("--method", "sft-dpo", "--temperature", "0") == (256, 0.0)
    assert LoopConfig(method="sft-dpo").sampling(8, seed=0).temperature == 0.7
    with pytest.raises(ValueError, match="temperature must be 0"):
        LoopConfig(temperature=-0.5)
    with pytest.raises(ValueError, match="prompts_per_round must be at least 1"):
        LoopConfig(prompts_per_round=0)


def test_the_dpo_step_halves_each_round_unless_told_otherwise():
    """At a constant step a seed's third DPO round drifted to KL 80 (docs/loop.md)."""
    dpo = LoopConfig(method="dpo")
    rates = [
        stage_options(dpo, seed=0, round_number=n)["dpo"].get("learning_rate")
        for n in (1, 2, 3)
    ]
    assert rates == [None, 2.5e-4, 1.25e-4]  # None: the stage's own 5e-4
    told = LoopConfig(method="dpo", train={"dpo": {"learning_rate": 1e-3}})
    assert stage_options(told, round_number=3)["dpo"]["learning_rate"] == 2.5e-4
    constant = LoopConfig(method="dpo", step_decay=1)
    assert "learning_rate" not in stage_options(constant, round_number=3).get("dpo", {})
    with pytest.raises(ValueError, match="step_decay must be in"):
        LoopConfig(step_decay=0)


def test_ppo_takes_60_updates_a_round_and_halves_its_step_unless_told_otherwise():
    """30 updates at a constant step lost ground in round 3 (docs/loop.md)."""
    ppo = LoopConfig(method="ppo")
    rounds = [stage_options(ppo, seed=0, round_number=n) for n in (1, 2, 3)]
    assert [r["ppo"]["max_steps"] for r in rounds] == [60, 60, 60]
    assert [r["ppo"]["learning_rate"] for r in rounds] == [1e-4, 5e-5, 2.5e-5]
    assert all("learning_rate" not in r["reward"] for r in rounds)
    told = LoopConfig(method="ppo", step_decay=1, train={"ppo": {"max_steps": 30}})
    third = stage_options(told, round_number=3)["ppo"]
    assert (third["max_steps"], third["learning_rate"]) == (30, 1e-4)


def test_ppo_normalises_its_scores_on_the_starting_policy_unless_told_otherwise():
    """Normalised scores beat raw ones on 3 of 4 dev seeds, tying the fourth (docs/loop.md)."""
    rounds = [
        stage_options(LoopConfig(method="ppo"), seed=0, round_number=n)
        for n in (1, 2, 3)
    ]
    assert [r["ppo"]["score_norm_batches"] for r in rounds] == [4, 4, 4]
    raw = LoopConfig(method="ppo", train={"ppo": {"score_norm_batches": 0}})
    assert stage_options(raw, round_number=2)["ppo"]["score_norm_batches"] == 0
    # The options reach a valid PPO stage config.
    from training.ppo import PPOConfig

    assert PPOConfig.from_dict(rounds[0]["ppo"]).score_norm_batches == 4


def test_the_sft_step_of_sft_dpo_halves_each_round_unless_told_otherwise():
    """At a constant SFT step the later rounds took back held-out accuracy (docs/loop.md)."""
    rounds = [
        stage_options(LoopConfig(method="sft-dpo"), seed=0, round_number=n)
        for n in (1, 2, 3)
    ]
    assert [r["sft"].get("learning_rate") for r in rounds] == [None, 5e-4, 2.5e-4]
    assert [r["dpo"].get("learning_rate") for r in rounds] == [None, 2.5e-4, 1.25e-4]
    # sft-ppo: PPO's settings, with the SFT step halving as sft-dpo's.
    sft_ppo = [
        stage_options(LoopConfig(method="sft-ppo"), seed=0, round_number=n)
        for n in (1, 2, 3)
    ]
    assert [r["sft"].get("learning_rate") for r in sft_ppo] == [None, 5e-4, 2.5e-4]
    assert [r["ppo"]["learning_rate"] for r in sft_ppo] == [1e-4, 5e-5, 2.5e-5]
    assert "learning_rate" not in sft_ppo[2]["reward"]
    ppo_first = stage_options(LoopConfig(method="ppo"), seed=0, round_number=1)
    assert sft_ppo[0]["ppo"] == ppo_first["ppo"]
    assert sft_ppo[0]["reward"] == ppo_first["reward"]
    # sft-grpo and sft-rloo: the group stage at half its rate (2.5e-4, chosen on the
    # dev split: 5e-4 from the SFT step's policy overshot in round 1), halving each
    # round as the SFT step does.
    for group in ("grpo", "rloo"):
        sft_group = [
            stage_options(LoopConfig(method=f"sft-{group}"), seed=0, round_number=n)
            for n in (1, 2, 3)
        ]
        assert [r["sft"].get("learning_rate") for r in sft_group] == [
            None,
            5e-4,
            2.5e-4,
        ]
        assert [r[group]["learning_rate"] for r in sft_group] == [
            2.5e-4,
            1.25e-4,
            6.25e-5,
        ]
        # Apart from that rate, round 1 is the group method's own round 1.
        first = stage_options(LoopConfig(method=group), seed=0, round_number=1)
        sft_group[0][group].pop("learning_rate")
        assert sft_group[0][group] == first[group]
        assert sft_group[0]["reward"] == first["reward"]
    # The real-model commands keep their constant SFT step, and their own rate.
    told = LoopConfig(
        method="sft-dpo", sft_step_decay=1, train={"sft": {"learning_rate": 5e-4}}
    )
    second = stage_options(told, round_number=2)
    assert second["sft"]["learning_rate"] == 5e-4
    assert second["dpo"]["learning_rate"] == 2.5e-4
    # Only an SFT stage before the policy stage decays by it: PPO's reward stage never.
    for method in ("dpo", "ppo", "grpo"):
        assert LoopConfig(method=method).sft_step_decay == 1
    ppo = stage_options(LoopConfig(method="ppo", sft_step_decay=0.5), round_number=3)
    assert "learning_rate" not in ppo["reward"]
    with pytest.raises(ValueError, match="sft_step_decay must be in"):
        LoopConfig(sft_step_decay=1.5)
    from training.management.commands.run_loop import Command

    parser = Command().create_parser("manage.py", "run_loop")
    typed = parser.parse_args(["--project", "real", "--sft-step-decay", "1"])
    assert typed.sft_step_decay == 1.0
    assert parser.parse_args(["--project", "demo"]).sft_step_decay == -1.0


@pytest.mark.parametrize("method", ["grpo", "sft-grpo", "rloo", "sft-rloo"])
def test_a_judge_as_reward_drops_the_reward_stage_and_names_the_judge(method):
    group = method.removeprefix("sft-")
    config = LoopConfig(method=method, reward="judge", judge="instructions")
    options = stage_options(config, seed=2)

    assert config.stages() == [s for s in method.split("-")]
    # Figures name it apart, so that pooling refuses to mix it with the reward model's.
    assert (config.label, LoopConfig(method=method).label) == (
        f"{method}-judge",
        method,
    )
    assert "reward" not in options
    assert options[group]["judge"] == "instructions"
    assert options[group]["seed"] == 2
    # The reward model's loop keeps its reward stage and names no judge.
    model = LoopConfig(method=method)
    assert "reward" in model.stages() and "judge" not in stage_options(model)[group]


def test_a_judge_as_reward_defaults_to_the_loops_judge():
    # The demo's judge is the only one registered without being asked for by name.
    options = stage_options(LoopConfig(method="grpo", reward="judge"))
    assert options["grpo"]["judge"] == "demo"


def test_a_judge_without_a_reward_cannot_score_the_rollouts(monkeypatch):
    from training import loop

    class RanksOnly:
        def compare(self, prompt_messages, a, b):
            return 0.0

        def rank(self, prompt_messages, responses):
            return [list(range(len(responses)))]

    monkeypatch.setattr(loop, "get_judge", lambda name: RanksOnly())
    with pytest.raises(ValueError) as error:
        loop._loop_judge(LoopConfig(method="grpo", reward="judge"))
    assert "reward='judge' needs a judge that scores one response (`reward`)" in str(
        error.value
    )
    assert loop._loop_judge(LoopConfig(method="grpo")) is not None


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_group_methods_take_earlier_rounds_reward_models_as_ppo_does(method):
    config = LoopConfig(method=method, reward_ensemble=2)
    assert config.reward_ensemble == 2


def test_the_reward_models_win_rate_is_its_whole_ensembles(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tests.training.ml_data import make_opposite_reward_model
    from training.loop import reward_model_win_rate

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1
    )
    folder = tmp_path / "rm"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    from inference.scoring import reward_function

    prompt = [{"role": "user", "content": "What does a cat like?"}]
    pairs = [("fish", "dogs"), ("a red cat", "the blue bird")]
    first = reward_function(str(folder))
    # Each pair ordered so that the first member alone prefers our side.
    ordered = []
    for a, b in pairs:
        turns = [[{"role": "assistant", "content": t}] for t in (a, b)]
        score_a, score_b = first([prompt] * 2, turns)
        ordered.append((a, b) if score_a > score_b else (b, a))
    prompts = [prompt, prompt]
    ours, theirs = [[a] for a, _ in ordered], [[b] for _, b in ordered]
    alone = reward_model_win_rate(Policy(base_path=str(folder)), prompts, ours, theirs)
    assert alone == 1.0

    # Its opposite (-3x) as member 1 cancels it once both are normalised: every
    # pair then ties, which the first member alone never would.
    make_opposite_reward_model(folder, folder / "members" / "1")
    both = reward_model_win_rate(Policy(base_path=str(folder)), prompts, ours, theirs)
    assert both == 0.5


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_group_rounds_learn_at_half_the_step_each_round_with_a_kl_term(method):
    """The group stages' old defaults (lr 1e-3, no KL term) at a constant step collapsed
    the demo's policy over 3 GRPO rounds (win rate 0.33 against SFT, accuracy 0-4%, KL
    20-68 on dev seeds 0-3; docs/loop.md, "GRPO's loop settings"): GRPO's and RLOO's
    rounds take lr 5e-4 halved each round and beta 0.1; a typed value wins."""
    from training.stages import config_class, resolve_config

    config = LoopConfig(method=method)
    assert config.step_decay == 0.5

    def resolved(config: LoopConfig, round_number: int) -> dict:
        options = stage_options(config, round_number=round_number)[method]
        return resolve_config(method, options, {})

    assert [resolved(config, n)["learning_rate"] for n in (1, 2, 3)] == pytest.approx(
        [5e-4, 2.5e-4, 1.25e-4]
    )
    assert resolved(config, 3)["beta"] == config_class(method)().beta == 0.1
    told = LoopConfig(method=method, train={method: {"beta": 0.04}}, step_decay=1.0)
    assert (resolved(told, 3)["learning_rate"], resolved(told, 3)["beta"]) == (
        5e-4,
        0.04,
    )
