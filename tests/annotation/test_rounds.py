"""Publishing a round: prompt choice, candidates with their policy and sampling, tasks."""

import math
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.models import Project, Prompt, RankingTask, Response, Round, Snapshot
from annotation.rounds import project_reward_model, publish_round, uncertainty_scores
from inference.generation import generate_for_policy
from inference.models import Policy
from inference.registry import register_policy
from inference.sampling import SamplingConfig
from inference.scoring import RewardScorer

FAST = SamplingConfig(num_candidates=4, max_new_tokens=4, seed=0)


@pytest.fixture
def policy(db, tiny_model_dir):
    return register_policy("tiny", base_path=tiny_model_dir)


@pytest.fixture
def pool(project):
    texts = [
        f"Tell me about the {c} cat."
        for c in ("red", "blue", "green", "small", "big", "old")
    ]
    prompts = [Prompt.objects.create(project=project, messages=t) for t in texts]
    held_out = Prompt.objects.create(
        project=project, messages="Tell me about the held-out fox.", is_held_out=True
    )
    return prompts, held_out


def test_a_round_has_one_task_per_prompt_with_k_responses_by_the_policy(
    project, policy, pool
):
    round_ = publish_round(project, policy=policy, n_prompts=3, sampling=FAST)
    assert (round_.number, round_.policy, round_.strategy) == (1, policy, "fresh")
    assert round_.sampling == FAST.to_dict()
    tasks = list(round_.tasks.all())
    assert len(tasks) == 3
    assert {t.overlap for t in tasks} == {3}
    for task in tasks:
        responses = list(task.responses.all())
        assert len(responses) == 4
        assert sorted(r.position for r in responses) == [0, 1, 2, 3]
        assert {r.policy_id for r in responses} == {policy.id}
        assert responses[0].sampling == {
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
            "max_new_tokens": 4,
            "seed": 0,
        }


def test_held_out_prompts_are_never_published(project, policy, pool):
    _, held_out = pool
    publish_round(
        project, policy=policy, n_prompts=10, sampling=FAST, strategy="random"
    )
    assert RankingTask.objects.filter(prompt=held_out).exists() is False
    assert RankingTask.objects.count() == 6


def test_fresh_prompts_exclude_those_already_in_a_task_and_rounds_number_up(
    project, policy, pool
):
    first = publish_round(project, policy=policy, n_prompts=4, sampling=FAST)
    second = publish_round(project, policy=policy, n_prompts=4, sampling=FAST)
    first_prompts = set(first.tasks.values_list("prompt_id", flat=True))
    second_prompts = set(second.tasks.values_list("prompt_id", flat=True))
    assert second.number == 2
    assert len(second_prompts) == 2
    assert first_prompts & second_prompts == set()


def test_no_fresh_prompt_left_is_an_error_that_suggests_random(project, policy, pool):
    publish_round(project, policy=policy, n_prompts=6, sampling=FAST)
    with pytest.raises(
        ValueError,
        match="no prompts for strategy 'fresh'; import more prompts or use strategy 'random'",
    ):
        publish_round(project, policy=policy, n_prompts=1, sampling=FAST)


def test_the_current_policy_is_the_default_and_its_absence_is_an_error(
    project, policy, pool
):
    with pytest.raises(ValueError, match="project 'demo' has no current policy"):
        publish_round(project, n_prompts=1, sampling=FAST)
    project.current_policy = policy
    project.save()
    assert publish_round(project, n_prompts=1, sampling=FAST).policy == policy


def test_without_sampling_k_is_the_projects_responses_per_task(project, policy, pool):
    project.responses_per_task = 3
    project.save()
    round_ = publish_round(project, policy=policy, n_prompts=1)
    assert round_.sampling["num_candidates"] == 3
    assert Response.objects.filter(task__round=round_).count() == 3


def test_earlier_policies_add_one_candidate_each(project, policy, pool, tiny_model_dir):
    old = register_policy("tiny-old", base_path=tiny_model_dir)
    round_ = publish_round(
        project,
        policy=policy,
        n_prompts=2,
        strategy="random",
        earlier_policies=[old],
        sampling=SamplingConfig(num_candidates=3, max_new_tokens=4),
    )
    for task in round_.tasks.all():
        authors = sorted(r.policy.name for r in task.responses.all())
        assert authors == ["tiny", "tiny", "tiny", "tiny-old"]


def test_positions_are_shuffled_by_seed_and_reproducible(project, policy, pool):
    mixed = SamplingConfig(
        num_candidates=4,
        max_new_tokens=4,
        seed=0,
        mix=[{"count": 2, "temperature": 0.5}, {"count": 2, "temperature": 1.0}],
    )

    def candidates_by_position(seed):
        round_ = publish_round(
            project,
            policy=policy,
            n_prompts=6,
            sampling=mixed,
            strategy="random",
            seed=seed,
        )
        return [
            [r.sampling["temperature"] for r in t.responses.order_by("position")]
            for t in round_.tasks.order_by("id")
        ]

    first, again = candidates_by_position(3), candidates_by_position(3)
    assert first == again
    assert any(c != sorted(c) for c in first)


def test_insert_order_carries_no_policy_signal(project, policy, pool, tiny_model_dir):
    # The earlier policy's candidate was inserted last: the highest response id of a
    # task was always the older policy's (issue 12, item 2).
    old = register_policy("tiny-old", base_path=tiny_model_dir)
    round_ = publish_round(
        project,
        policy=policy,
        n_prompts=6,
        strategy="random",
        earlier_policies=[old],
        sampling=SamplingConfig(num_candidates=3, max_new_tokens=4),
    )
    where_old = []
    for task in round_.tasks.all():
        by_id = list(task.responses.order_by("id"))
        assert [r.position for r in by_id] == sorted(r.position for r in by_id)
        where_old.append([r.policy.name for r in by_id].index("tiny-old"))
    assert len(set(where_old)) > 1, where_old


def test_the_clock_passed_in_stamps_the_round(project, policy, pool):
    now = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    round_ = publish_round(project, policy=policy, n_prompts=1, sampling=FAST, now=now)
    assert round_.created_at == now
    assert set(Response.objects.values_list("created_at", flat=True)) == {now}


def test_disagreement_picks_the_prompts_annotators_agreed_on_least(
    project, policy, pool
):
    first = publish_round(project, policy=policy, n_prompts=6, sampling=FAST)
    tasks = list(first.tasks.order_by("id"))
    for task, agreement in zip(tasks, [0.9, 0.1, None, 0.5, 0.2, 1.0], strict=False):
        RankingTask.objects.filter(pk=task.pk).update(agreement=agreement)
    again = publish_round(
        project, policy=policy, n_prompts=2, sampling=FAST, strategy="disagreement"
    )
    assert set(again.tasks.values_list("prompt_id", flat=True)) == {
        tasks[1].prompt_id,
        tasks[4].prompt_id,
    }


def test_disagreement_without_any_ranked_task_says_what_it_needs(project, policy, pool):
    with pytest.raises(
        ValueError, match="no prompt has a ranked task with an agreement yet"
    ):
        publish_round(
            project, policy=policy, n_prompts=1, sampling=FAST, strategy="disagreement"
        )


@pytest.mark.parametrize(
    "strategy, message",
    [
        (
            "uncertainty",
            "project 'demo' has no reward model trained on one of its snapshots",
        ),
        ("vibes", "unknown strategy 'vibes'"),
    ],
)
def test_unavailable_and_unknown_strategies_are_refused(
    project, policy, pool, strategy, message
):
    with pytest.raises(ValueError, match=message):
        publish_round(
            project, policy=policy, n_prompts=1, sampling=FAST, strategy=strategy
        )
    assert Round.objects.count() == 0


def test_the_command_publishes_a_round_with_the_given_controls(
    project, policy, pool, capsys
):
    call_command(
        "publish_round",
        "--project",
        "demo",
        "--policy",
        "tiny",
        "--prompts",
        "2",
        "--k",
        "2",
        "--temperature",
        "0.7",
        "--top-k",
        "5",
        "--max-new-tokens",
        "3",
        "--seed",
        "1",
    )
    round_ = Round.objects.get()
    assert round_.sampling["temperature"] == 0.7
    assert round_.sampling["top_k"] == 5
    assert Response.objects.count() == 4
    assert "published demo round 1: 2 tasks by tiny" in capsys.readouterr().out


def test_the_command_names_an_unknown_policy(project, policy, pool):
    with pytest.raises(CommandError, match="no policy named 'ghost'"):
        call_command("publish_round", "--project", "demo", "--policy", "ghost")


# Uncertainty: the reward model(s) that separate a prompt's candidates least.

LN3 = math.log(3)  # sigmoid(ln 3) = 3/4


@pytest.fixture(scope="module")
def reward_model_dirs(tiny_model_dir, tmp_path_factory):
    """Two randomly initialised one-output Llama classifiers on the tiny model's tokenizer.

    The score head is scaled up so that rewards differ by about one unit between
    candidates, as a trained reward model's do, instead of by 0.01.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1)
    config.pad_token_id = tokenizer.pad_token_id
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(config)
        with torch.no_grad():
            model.score.weight.mul_(100)
        path = tmp_path_factory.mktemp(f"reward-{seed}")
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


@pytest.fixture
def reward_models(db, reward_model_dirs):
    return [
        register_policy(f"rm-{i}", base_path=path, kind=Policy.Kind.REWARD_MODEL)
        for i, path in enumerate(reward_model_dirs)
    ]


def _direct_scores(judges, messages, candidates):
    """Score candidates with the reward models directly, shaped (member, prompt, K)."""
    out = []
    for judge in judges:
        scorer = RewardScorer(judge.base_path)
        out.append(
            [
                scorer.score([m] * len(texts), texts)
                for m, texts in zip(messages, candidates, strict=False)
            ]
        )
    return out


@pytest.mark.parametrize(
    "rewards, expected",
    [
        ([[[0.0, 0.0]]], [1.0]),  # the model cannot tell them apart
        ([[[0.0, LN3]]], [0.5]),  # 2 * min(3/4, 1/4)
        ([[[0.0, 0.0, LN3]]], [2 / 3]),  # pairs 1, 0.5, 0.5
        ([[[0.0, LN3]], [[0.0, LN3]]], [0.0]),  # members agree: no disagreement
        ([[[0.0, LN3]], [[LN3, 0.0]]], [0.5]),  # p = 3/4 and 1/4: std 1/4
    ],
)
def test_uncertainty_scores_are_pairwise_closeness_for_one_model_and_disagreement_for_several(
    rewards, expected
):
    assert uncertainty_scores(rewards) == pytest.approx(expected, abs=1e-12)


def test_uncertainty_publishes_the_prompts_the_reward_model_separates_least(
    project, policy, pool, reward_models
):
    prompts, _ = pool
    judge = reward_models[0]
    round_ = publish_round(
        project,
        policy=policy,
        n_prompts=2,
        sampling=FAST,
        strategy="uncertainty",
        reward_models=[judge],
    )
    # All 6 fresh prompts (3 x 2) were scored; generating them again gives the same candidates.
    candidates = generate_for_policy(
        policy.base_path, "", [p.messages for p in prompts], FAST
    )
    scores = uncertainty_scores(
        _direct_scores([judge], [p.messages for p in prompts], candidates)
    )
    expected = dict(zip([p.id for p in prompts], scores, strict=False))
    assert len({round(s, 6) for s in scores}) == 6  # distinct, so the answer is unique
    top_two = sorted(expected, key=expected.get, reverse=True)[:2]
    tasks = {t.prompt_id: t for t in round_.tasks.all()}
    assert (round_.strategy, sorted(tasks)) == ("uncertainty", sorted(top_two))
    for prompt_id, task in tasks.items():
        assert task.selection_score == pytest.approx(expected[prompt_id], abs=1e-5)
        assert sorted(r.text for r in task.responses.all()) == sorted(
            candidates[[p.id for p in prompts].index(prompt_id)]
        )


def test_uncertainty_considers_fresh_prompts_only(project, policy, pool, reward_models):
    first = publish_round(project, policy=policy, n_prompts=4, sampling=FAST)
    again = publish_round(
        project,
        policy=policy,
        n_prompts=1,
        sampling=FAST,
        strategy="uncertainty",
        reward_models=reward_models[:1],
    )
    used = set(first.tasks.values_list("prompt_id", flat=True))
    assert again.tasks.count() == 1
    assert set(again.tasks.values_list("prompt_id", flat=True)) & used == set()


def test_an_ensemble_scores_its_disagreement_over_every_candidate_of_the_task(
    project, policy, pool, reward_models, tiny_model_dir
):
    old = register_policy("tiny-old", base_path=tiny_model_dir)
    round_ = publish_round(
        project,
        policy=policy,
        n_prompts=3,
        strategy="uncertainty",
        earlier_policies=[old],
        sampling=SamplingConfig(num_candidates=2, max_new_tokens=4),
        reward_models=reward_models,
    )
    tasks = list(round_.tasks.order_by("id"))
    messages = [t.prompt.messages for t in tasks]
    texts = [[r.text for r in t.responses.order_by("id")] for t in tasks]
    assert [len(t) for t in texts] == [3, 3, 3]
    expected = uncertainty_scores(_direct_scores(reward_models, messages, texts))
    assert [t.selection_score for t in tasks] == pytest.approx(expected, abs=1e-5)
    assert min(expected) > 0.0


def test_the_default_reward_model_is_the_newest_trained_on_one_of_the_projects_snapshots(
    project, reward_model_dirs
):
    Snapshot.objects.create(project=project, name="s1", sha256="a" * 64)
    other = Project.objects.create(name="other", title="Other")
    Snapshot.objects.create(project=other, name="s1", sha256="b" * 64)
    path = reward_model_dirs[0]
    register_policy(
        "old", base_path=path, kind=Policy.Kind.REWARD_MODEL, snapshot_sha256="a" * 64
    )
    newest = register_policy(
        "mine", base_path=path, kind=Policy.Kind.REWARD_MODEL, snapshot_sha256="a" * 64
    )
    register_policy("policy", base_path=path, snapshot_sha256="a" * 64)
    register_policy(
        "others",
        base_path=path,
        kind=Policy.Kind.REWARD_MODEL,
        snapshot_sha256="b" * 64,
    )
    register_policy("imported", base_path=path, kind=Policy.Kind.REWARD_MODEL)
    assert project_reward_model(project) == newest


def test_uncertainty_without_reward_models_uses_the_projects(
    project, policy, pool, reward_models
):
    Snapshot.objects.create(project=project, name="s1", sha256="a" * 64)
    Policy.objects.filter(name="rm-1").update(snapshot_sha256="a" * 64)
    round_ = publish_round(
        project, policy=policy, n_prompts=2, sampling=FAST, strategy="uncertainty"
    )
    tasks = list(round_.tasks.order_by("id"))
    texts = [[r.text for r in t.responses.order_by("id")] for t in tasks]
    expected = uncertainty_scores(
        _direct_scores(reward_models[1:], [t.prompt.messages for t in tasks], texts)
    )
    assert [t.selection_score for t in tasks] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "strategy, which, message",
    [
        (
            "fresh",
            "rm-0",
            "reward_models are used only by strategy 'uncertainty', not 'fresh'",
        ),
        (
            "uncertainty",
            "tiny",
            "policy 'tiny' is a policy without reward-model weights",
        ),
    ],
)
def test_reward_models_are_refused_where_they_cannot_judge(
    project, policy, pool, reward_models, strategy, which, message
):
    with pytest.raises(ValueError, match=message):
        publish_round(
            project,
            policy=policy,
            n_prompts=1,
            sampling=FAST,
            strategy=strategy,
            reward_models=[Policy.objects.get(name=which)],
        )
    assert Round.objects.count() == 0


def test_the_command_takes_reward_models_for_uncertainty(
    project, policy, pool, reward_models, capsys
):
    # Scored in padded batches against one by one here: fp32 sums differ by ~1e-6.
    call_command(
        "publish_round",
        "--project",
        "demo",
        "--policy",
        "tiny",
        "--prompts",
        "2",
        "--k",
        "2",
        "--max-new-tokens",
        "3",
        "--strategy",
        "uncertainty",
        "--reward-model",
        "rm-0",
        "--reward-model",
        "rm-1",
    )
    tasks = list(Round.objects.get(strategy="uncertainty").tasks.order_by("id"))
    texts = [[r.text for r in t.responses.order_by("id")] for t in tasks]
    expected = uncertainty_scores(
        _direct_scores(reward_models, [t.prompt.messages for t in tasks], texts)
    )
    assert [t.selection_score for t in tasks] == pytest.approx(expected, abs=1e-5)
    assert "published demo round 1: 2 tasks by tiny" in capsys.readouterr().out


def test_the_command_names_an_unknown_reward_model(
    project, policy, pool, reward_models
):
    with pytest.raises(
        CommandError,
        match=r"no reward model named 'tiny'; registered reward models: \['rm-0', 'rm-1'\]",
    ):
        call_command(
            "publish_round",
            "--project",
            "demo",
            "--strategy",
            "uncertainty",
            "--reward-model",
            "tiny",
        )


def test_a_policy_without_a_chat_template_is_refused_with_the_fix(
    project, policy, pool
):
    policy.has_chat_template = False
    policy.save()
    with pytest.raises(ValueError) as error:
        publish_round(project, policy=policy, n_prompts=1, sampling=FAST)
    assert "policy 'tiny' has no chat template" in str(error.value)
    assert "--chat-template FILE" in str(error.value)
    assert Round.objects.count() == 0
