"""Publishing a round: prompt choice, candidates with their policy and sampling, tasks."""
from datetime import datetime, timezone

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.models import Prompt, RankingTask, Response, Round
from annotation.rounds import publish_round
from inference.registry import register_policy
from inference.sampling import SamplingConfig

FAST = SamplingConfig(num_candidates=4, max_new_tokens=4, seed=0)


@pytest.fixture
def policy(db, tiny_model_dir):
    return register_policy("tiny", base_path=tiny_model_dir)


@pytest.fixture
def pool(project):
    texts = [f"Tell me about the {c} cat." for c in ("red", "blue", "green", "small", "big", "old")]
    prompts = [Prompt.objects.create(project=project, messages=t) for t in texts]
    held_out = Prompt.objects.create(project=project, messages="Tell me about the held-out fox.", is_held_out=True)
    return prompts, held_out


def test_a_round_has_one_task_per_prompt_with_k_responses_by_the_policy(project, policy, pool):
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
            "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 4, "seed": 0,
        }


def test_held_out_prompts_are_never_published(project, policy, pool):
    _, held_out = pool
    publish_round(project, policy=policy, n_prompts=10, sampling=FAST, strategy="random")
    assert RankingTask.objects.filter(prompt=held_out).exists() is False
    assert RankingTask.objects.count() == 6


def test_fresh_prompts_exclude_those_already_in_a_task_and_rounds_number_up(project, policy, pool):
    first = publish_round(project, policy=policy, n_prompts=4, sampling=FAST)
    second = publish_round(project, policy=policy, n_prompts=4, sampling=FAST)
    first_prompts = set(first.tasks.values_list("prompt_id", flat=True))
    second_prompts = set(second.tasks.values_list("prompt_id", flat=True))
    assert second.number == 2
    assert len(second_prompts) == 2
    assert first_prompts & second_prompts == set()


def test_no_fresh_prompt_left_is_an_error_that_suggests_random(project, policy, pool):
    publish_round(project, policy=policy, n_prompts=6, sampling=FAST)
    with pytest.raises(ValueError, match="no prompts for strategy 'fresh'; import more prompts or use strategy 'random'"):
        publish_round(project, policy=policy, n_prompts=1, sampling=FAST)


def test_the_current_policy_is_the_default_and_its_absence_is_an_error(project, policy, pool):
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
        project, policy=policy, n_prompts=2, strategy="random", earlier_policies=[old],
        sampling=SamplingConfig(num_candidates=3, max_new_tokens=4),
    )
    for task in round_.tasks.all():
        authors = sorted(r.policy.name for r in task.responses.all())
        assert authors == ["tiny", "tiny", "tiny", "tiny-old"]


def test_positions_are_shuffled_by_seed_and_reproducible(project, policy, pool):
    def authorship(seed):
        round_ = publish_round(project, policy=policy, n_prompts=6, sampling=FAST, strategy="random", seed=seed)
        return [[r.position for r in t.responses.order_by("id")] for t in round_.tasks.order_by("id")]

    first, again = authorship(3), authorship(3)
    assert first == again
    assert any(p != [0, 1, 2, 3] for p in first)


def test_the_clock_passed_in_stamps_the_round(project, policy, pool):
    now = datetime(2030, 1, 2, 3, 4, tzinfo=timezone.utc)
    round_ = publish_round(project, policy=policy, n_prompts=1, sampling=FAST, now=now)
    assert round_.created_at == now
    assert set(Response.objects.values_list("created_at", flat=True)) == {now}


def test_disagreement_picks_the_prompts_annotators_agreed_on_least(project, policy, pool):
    first = publish_round(project, policy=policy, n_prompts=6, sampling=FAST)
    tasks = list(first.tasks.order_by("id"))
    for task, agreement in zip(tasks, [0.9, 0.1, None, 0.5, 0.2, 1.0]):
        RankingTask.objects.filter(pk=task.pk).update(agreement=agreement)
    again = publish_round(project, policy=policy, n_prompts=2, sampling=FAST, strategy="disagreement")
    assert set(again.tasks.values_list("prompt_id", flat=True)) == {tasks[1].prompt_id, tasks[4].prompt_id}


def test_disagreement_without_any_ranked_task_says_what_it_needs(project, policy, pool):
    with pytest.raises(ValueError, match="no prompt has a ranked task with an agreement yet"):
        publish_round(project, policy=policy, n_prompts=1, sampling=FAST, strategy="disagreement")


@pytest.mark.parametrize(
    "strategy, message",
    [("uncertainty", "is not yet available"), ("vibes", "unknown strategy 'vibes'")],
)
def test_unavailable_and_unknown_strategies_are_refused(project, policy, pool, strategy, message):
    with pytest.raises(ValueError, match=message):
        publish_round(project, policy=policy, n_prompts=1, sampling=FAST, strategy=strategy)
    assert Round.objects.count() == 0


def test_the_command_publishes_a_round_with_the_given_controls(project, policy, pool, capsys):
    call_command(
        "publish_round", "--project", "demo", "--policy", "tiny", "--prompts", "2", "--k", "2",
        "--temperature", "0.7", "--top-k", "5", "--max-new-tokens", "3", "--seed", "1",
    )
    round_ = Round.objects.get()
    assert round_.sampling["temperature"] == 0.7
    assert round_.sampling["top_k"] == 5
    assert Response.objects.count() == 4
    assert "published demo round 1: 2 tasks by tiny" in capsys.readouterr().out


def test_the_command_names_an_unknown_policy(project, policy, pool):
    with pytest.raises(CommandError, match="no policy named 'ghost'"):
        call_command("publish_round", "--project", "demo", "--policy", "ghost")
