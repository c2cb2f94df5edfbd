"""Publishing a labelling round: choose prompts, generate candidates, create ranking tasks."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from django.db import transaction
from django.db.models import Max

from annotation.models import Project, Prompt, RankingTask, Response, Round
from inference.models import Policy
from inference.sampling import SamplingConfig

logger = logging.getLogger(__name__)

STRATEGIES = ("fresh", "random", "uncertainty", "disagreement")
# "uncertainty" scores OVERSAMPLE times the prompts it publishes (at most
# MAX_SCORED): more candidates to choose from, at the price of generating for
# prompts that are then dropped.
OVERSAMPLE = 3
MAX_SCORED = 1024


def publish_round(
    project: Project,
    *,
    policy: Policy | None = None,
    n_prompts: int = 32,
    sampling: SamplingConfig | None = None,
    strategy: str = "fresh",
    seed: int = 0,
    earlier_policies: Iterable[Policy] = (),
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    reward_models: Sequence[Policy] | None = None,
    avoid_rounds: Sequence[int] = (),
) -> Round:
    """Generate candidates for prompts of the project's pool and publish them as a round.

    Prompts come from the pool (never held-out ones), chosen by `strategy`: "fresh"
    takes prompts never used in a task, "random" any pool prompt (both sampled by
    `seed`), "disagreement" the prompts whose earlier tasks annotators agreed on
    least, "uncertainty" the fresh prompts whose candidates the reward model(s)
    separate least: it samples (by `seed`) up to OVERSAMPLE * n_prompts fresh
    prompts, generates every candidate of their tasks once, scores them with
    `reward_models` (default: `project_reward_model(project)`), keeps the n_prompts
    with the highest `uncertainty_scores` and stores each as its task's
    selection_score (assignment serves higher scores first; other strategies store 0).
    Prompts of the rounds numbered `avoid_rounds` come back only when the rest of the
    pool is short (`choose_prompts`: a loop's seed avoids its own earlier rounds).

    The policy (default: the project's current one) writes
    `sampling.num_candidates` candidates per prompt, and each earlier policy one more,
    so K = num_candidates + len(earlier_policies); without `sampling`, K is the
    project's responses_per_task. Each task gets `project.overlap`, and its responses
    their policy, their own sampling settings and positions shuffled by `seed` (so the
    best is not always first), inserted in position order (so ids say nothing of the
    policy either).

    Generation runs before the transaction (it takes seconds to minutes); the round,
    its tasks and responses are then written in one transaction.
    """
    policy = policy or project.current_policy
    if policy is None:
        raise ValueError(
            f"project {project.name!r} has no current policy; deploy one "
            "(Project.current_policy) or pass a policy"
        )
    earlier = list(earlier_policies)
    sampling = _checked_sampling(project, policy, earlier, sampling, n_prompts, seed)
    if strategy == "uncertainty":
        judges = _check_reward_models(project, reward_models)
        prompts = _uncertainty_pool(project, n_prompts, seed)
    else:
        if reward_models:
            raise ValueError(
                f"reward_models are used only by strategy 'uncertainty', not {strategy!r}; "
                "drop them or choose 'uncertainty'"
            )
        prompts = choose_prompts(
            project, n_prompts, strategy, seed, avoid_rounds=avoid_rounds
        )
    messages = [p.messages for p in prompts]
    candidates = _generate(policy, messages, sampling, progress)
    settings = sampling.candidate_settings()
    rows: list[list[tuple[Policy, str, dict]]] = [
        [(policy, text, settings[j]) for j, text in enumerate(texts)]
        for texts in candidates
    ]
    _add_earlier_candidates(rows, earlier, messages, sampling)
    scores = [0.0] * len(prompts)
    if strategy == "uncertainty":
        prompts, rows, scores = _most_uncertain(judges, prompts, rows, n_prompts)
    return _write_round(
        project, policy, sampling, strategy, prompts, rows, scores, seed, now
    )


def _checked_sampling(
    project: Project,
    policy: Policy,
    earlier: list[Policy],
    sampling: SamplingConfig | None,
    n_prompts: int,
    seed: int,
) -> SamplingConfig:
    """Return the sampling of the round's policy; raise ValueError for what cannot publish.

    Every policy must have weights and a chat template; without `sampling` the
    policy writes what the earlier policies leave of the project's
    responses_per_task; a task has 2 to 9 responses.
    """
    for p in [policy, *earlier]:
        if not p.has_weights():
            raise ValueError(
                f"policy {p.name!r} has no loadable weights (kind {p.kind!r})"
            )
        if p.has_chat_template is False:
            raise ValueError(
                f"policy {p.name!r} has no chat template, so its prompts cannot be "
                "rendered as chats; register it again with --chat-template FILE "
                "(a Jinja template, e.g. the chat_template.jinja of a model of the "
                "same family)"
            )
    if sampling is None:
        own = project.responses_per_task - len(earlier)
        if own < 1:
            raise ValueError(
                f"{len(earlier)} earlier policies leave no candidates for {policy.name!r} "
                f"in tasks of {project.responses_per_task} responses; pass fewer"
            )
        sampling = SamplingConfig(num_candidates=own, seed=seed)
    k = sampling.num_candidates + len(earlier)
    if not 2 <= k <= 9:
        raise ValueError(
            f"a task needs 2 to 9 responses, got {k}; change num_candidates"
        )
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be at least 1, got {n_prompts}")
    return sampling


def _add_earlier_candidates(
    rows: list[list[tuple[Policy, str, dict]]],
    earlier: list[Policy],
    messages: list,
    sampling: SamplingConfig,
) -> None:
    """Append one candidate of each earlier policy to every prompt's row, in place."""
    for old in earlier:
        one = SamplingConfig(
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            num_candidates=1,
            seed=sampling.seed,
        )
        old_settings = one.candidate_settings()[0]
        for i, (text,) in enumerate(_generate(old, messages, one, None)):
            rows[i].append((old, text, old_settings))


def choose_prompts(
    project: Project,
    n: int,
    strategy: str,
    seed: int,
    *,
    avoid_rounds: Sequence[int] = (),
) -> list[Prompt]:
    """Return up to n pool prompts chosen by the strategy; held-out prompts and those
    held for review are never chosen.

    "fresh" and "random" choose prompts of the rounds numbered `avoid_rounds` only
    when the rest of the pool has fewer than n (a loop's seed, out of fresh prompts,
    repeats its own earlier prompts only when it must; fresh ones are in no round).
    Raise ValueError when the strategy is unknown or finds no prompt.
    """
    pool = project.prompts.filter(is_held_out=False, held_for_review=False)
    if strategy == "fresh":
        candidates = list(pool.filter(tasks__isnull=True).order_by("id"))
    elif strategy == "random":
        candidates = list(pool.order_by("id"))
    elif strategy == "disagreement":
        return _most_disputed(pool, n, seed)
    elif strategy == "uncertainty":
        raise ValueError(
            "strategy 'uncertainty' chooses prompts by scoring generated candidates; "
            "call publish_round with it, not choose_prompts"
        )
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if not candidates:
        hint = (
            "import more prompts or use strategy 'random'"
            if strategy == "fresh"
            else "import prompts"
        )
        raise ValueError(
            f"project {project.name!r} has no prompts for strategy {strategy!r}; {hint}"
        )
    if len(candidates) < n:
        logger.warning(
            "project %s: only %d prompts for strategy %s (asked for %d)",
            project.name,
            len(candidates),
            strategy,
            n,
        )
    rng = random.Random(seed)
    avoided: set[int] = set()
    if avoid_rounds:
        avoided.update(
            project.tasks.filter(round__number__in=list(avoid_rounds)).values_list(
                "prompt_id", flat=True
            )
        )
    preferred = [p for p in candidates if p.id not in avoided]
    chosen = rng.sample(preferred, min(n, len(preferred)))
    if len(chosen) < n:
        rest = [p for p in candidates if p.id in avoided]
        chosen += rng.sample(rest, min(n - len(chosen), len(rest)))
    return sorted(chosen, key=lambda p: p.id)


def project_reward_model(project: Project) -> Policy:
    """Return the project's newest ready reward model: one trained on a snapshot of it.

    The link is the registry row's `snapshot_sha256`, which training copies from
    the snapshot it learned from; a reward model trained elsewhere (or imported)
    belongs to no project and must be named explicitly. Raise ValueError if none.
    """
    hashes = project.snapshots.values("sha256")
    found = (
        Policy.objects.filter(
            kind=Policy.Kind.REWARD_MODEL,
            status=Policy.Status.READY,
            snapshot_sha256__in=hashes,
        )
        .order_by("-created_at", "-id")
        .first()
    )
    if found is None:
        raise ValueError(
            f"project {project.name!r} has no reward model trained on one of its snapshots; "
            "train one (a training round with a reward stage) or name registered reward "
            "models explicitly (reward_models=, or --reward-model NAME)"
        )
    return found


def uncertainty_scores(rewards: Sequence[Sequence[Sequence[float]]]) -> list[float]:
    """Return, per prompt, how little the reward model(s) separate its candidates, in [0, 1].

    `rewards[m][i][j]` is member m's reward of candidate j of prompt i. Rewards are
    Bradley-Terry logits, so a pair's preference probability is
    p_m = sigmoid(r_m,a - r_m,b). With one member the score is the mean over
    candidate pairs of 2 * min(p, 1 - p): 1 when the model cannot tell any two
    candidates apart, towards 0 as every margin grows. With several members it is
    the mean over pairs of 2 * std over members of p_m (population std): the
    members' disagreement, i.e. what labels can teach them, 1 when two members are
    certain of opposite orders, 0 when all agree (even on 0.5).
    """
    if not rewards:
        raise ValueError(
            "no reward model scores given; pass at least one member's rewards"
        )
    members = len(rewards)
    scores: list[float] = []
    for i in range(len(rewards[0])):
        k = len(rewards[0][i])
        if k < 2:
            raise ValueError(
                f"prompt {i} has {k} candidate(s); uncertainty needs at least 2"
            )
        pair_scores = []
        for a in range(k):
            for b in range(a + 1, k):
                probs = [
                    _sigmoid(rewards[m][i][a] - rewards[m][i][b])
                    for m in range(members)
                ]
                if members == 1:
                    pair_scores.append(2 * min(probs[0], 1 - probs[0]))
                else:
                    mean = sum(probs) / members
                    spread = math.sqrt(sum((p - mean) ** 2 for p in probs) / members)
                    pair_scores.append(2 * spread)
        scores.append(sum(pair_scores) / len(pair_scores))
    return scores


def _sigmoid(x: float) -> float:
    """Return 1 / (1 + e^-x) without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _check_reward_models(
    project: Project, reward_models: Sequence[Policy] | None
) -> list[Policy]:
    """Return the reward models that judge uncertainty: the given ones, else the project's."""
    if not reward_models:
        return [project_reward_model(project)]
    judges = list(reward_models)
    for judge in judges:
        if judge.kind != Policy.Kind.REWARD_MODEL or not judge.has_weights():
            raise ValueError(
                f"policy {judge.name!r} is a {judge.kind} without reward-model weights; "
                "pass registry rows of kind 'reward_model'"
            )
    if len({j.pk for j in judges}) != len(judges):
        raise ValueError(
            f"reward models {[j.name for j in judges]} repeat one; an ensemble needs "
            "distinct members"
        )
    return judges


def _uncertainty_pool(project: Project, n: int, seed: int) -> list[Prompt]:
    """Return up to OVERSAMPLE * n fresh pool prompts (at most MAX_SCORED), sampled by seed."""
    fresh = list(
        project.prompts.filter(
            is_held_out=False, held_for_review=False, tasks__isnull=True
        ).order_by("id")
    )
    if not fresh:
        raise ValueError(
            f"project {project.name!r} has no prompts for strategy 'uncertainty' (it scores "
            "fresh prompts only); import more prompts or use strategy 'random'"
        )
    if len(fresh) < n:
        logger.warning(
            "project %s: only %d fresh prompts for strategy uncertainty (asked for %d); "
            "publishing all of them",
            project.name,
            len(fresh),
            n,
        )
    size = min(len(fresh), max(n, min(OVERSAMPLE * n, MAX_SCORED)))
    chosen = random.Random(seed).sample(fresh, size)
    return sorted(chosen, key=lambda p: p.id)


def _most_uncertain(
    judges: list[Policy],
    prompts: list[Prompt],
    rows: list[list[tuple[Policy, str, dict]]],
    n: int,
) -> tuple[list[Prompt], list[list[tuple[Policy, str, dict]]], list[float]]:
    """Score every task's candidates and keep the n most uncertain (ties: lowest prompt id).

    Return the kept prompts, their candidate rows and scores, in prompt id order.
    """
    rewards = [_reward(judge, prompts, rows) for judge in judges]  # (member, prompt, K)
    scores = uncertainty_scores(rewards)
    ranked = sorted(range(len(prompts)), key=lambda i: (-scores[i], prompts[i].id))
    keep = sorted(ranked[:n], key=lambda i: prompts[i].id)
    logger.info(
        "uncertainty: kept %d of %d scored prompts with %s (scores %.3f to %.3f)",
        len(keep),
        len(prompts),
        [j.name for j in judges],
        min(scores[i] for i in keep),
        max(scores[i] for i in keep),
    )
    return (
        [prompts[i] for i in keep],
        [rows[i] for i in keep],
        [scores[i] for i in keep],
    )


def _reward(
    judge: Policy, prompts: list[Prompt], rows: list[list[tuple[Policy, str, dict]]]
) -> list[list[float]]:
    """Return the judge's reward of every candidate, shaped (prompt, K) like `rows`."""
    from inference.scoring import RewardScorer

    scorer = RewardScorer(judge.base_path, judge.adapter_path)
    flat_prompts = [
        p.messages for p, row in zip(prompts, rows, strict=False) for _ in row
    ]
    flat_texts = [text for row in rows for _, text, _ in row]
    flat = scorer.score(flat_prompts, flat_texts)
    out, start = [], 0
    for row in rows:
        out.append(flat[start : start + len(row)])
        start += len(row)
    return out


def _most_disputed(pool, n: int, seed: int) -> list[Prompt]:
    """Return up to n prompts whose ranked tasks have the lowest annotator agreement.

    A prompt's score is the lowest agreement among its tasks; ties are broken by seed.
    """
    from django.db.models import Min

    scored = list(
        pool.filter(tasks__agreement__isnull=False)
        .annotate(score=Min("tasks__agreement"))
        .order_by("id")
    )
    if not scored:
        raise ValueError(
            "no prompt has a ranked task with an agreement yet; strategy 'disagreement' "
            "needs earlier rounds ranked by several annotators"
        )
    rng = random.Random(seed)
    keyed = sorted(scored, key=lambda p: (p.score, rng.random()))
    return sorted(keyed[:n], key=lambda p: p.id)


def _generate(
    policy: Policy,
    messages: list[list[dict]],
    sampling: SamplingConfig,
    progress: Callable[[int], None] | None,
) -> list[list[str]]:
    """Return K candidates per prompt from the policy (ML imported only here)."""
    from inference.generation import generate_for_policy

    return generate_for_policy(
        policy.base_path, policy.adapter_path, messages, sampling, progress=progress
    )


def _write_round(
    project: Project,
    policy: Policy,
    sampling: SamplingConfig,
    strategy: str,
    prompts: list[Prompt],
    rows: list[list[tuple[Policy, str, dict]]],
    scores: list[float],
    seed: int,
    now: datetime | None,
) -> Round:
    """Create the round, one task per prompt (with its score) and its responses, atomically."""
    rng = random.Random(seed)
    with transaction.atomic():
        number = (project.rounds.aggregate(n=Max("number"))["n"] or 0) + 1
        round_ = Round.objects.create(
            project=project,
            number=number,
            policy=policy,
            sampling=sampling.to_dict(),
            strategy=strategy,
        )
        tasks = RankingTask.objects.bulk_create(
            [
                RankingTask(
                    project=project,
                    round=round_,
                    prompt=prompt,
                    overlap=project.overlap,
                    selection_score=score,
                )
                for prompt, score in zip(prompts, scores, strict=True)
            ]
        )
        responses = []
        for task, candidates in zip(tasks, rows, strict=False):
            # Shuffle before insert, so that ids follow the shuffled positions: the
            # earlier policies' candidates come last in `rows`, and insertion in that
            # order made a task's highest response id always an older policy's.
            shuffled = list(candidates)
            rng.shuffle(shuffled)
            for position, (author, text, settings) in enumerate(shuffled):
                responses.append(
                    Response(
                        task=task,
                        policy=author,
                        text=text,
                        sampling=settings,
                        position=position,
                    )
                )
        Response.objects.bulk_create(responses)
        if now is not None:
            Round.objects.filter(pk=round_.pk).update(created_at=now)
            RankingTask.objects.filter(round=round_).update(created_at=now)
            Response.objects.filter(task__round=round_).update(created_at=now)
            round_.refresh_from_db()
    logger.info(
        "published %s round %d: %d tasks from %s",
        project.name,
        number,
        len(tasks),
        policy.name,
    )
    return round_
