"""Publishing a labelling round: choose prompts, generate candidates, create ranking tasks."""
from __future__ import annotations

import logging
import random
from datetime import datetime
from typing import Callable, Iterable

from django.db import transaction
from django.db.models import Max

from annotation.models import Project, Prompt, RankingTask, Response, Round
from inference.models import Policy
from inference.sampling import SamplingConfig

logger = logging.getLogger(__name__)

STRATEGIES = ("fresh", "random", "uncertainty", "disagreement")


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
) -> Round:
    """Generate candidates for prompts of the project's pool and publish them as a round.

    Prompts come from the pool (never held-out ones), chosen by `strategy`: "fresh"
    takes prompts never used in a task, "random" any pool prompt (both sampled by
    `seed`), "disagreement" the prompts whose earlier tasks annotators agreed on
    least; "uncertainty" is not yet available. The policy (default: the project's current one) writes
    `sampling.num_candidates` candidates per prompt, and each earlier policy one more,
    so K = num_candidates + len(earlier_policies); without `sampling`, K is the
    project's responses_per_task. Each task gets `project.overlap`, and its responses
    their policy, their own sampling settings and positions shuffled by `seed` (so the
    best is not always first).

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
    for p in [policy, *earlier]:
        if not p.has_weights():
            raise ValueError(f"policy {p.name!r} has no loadable weights (kind {p.kind!r})")
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
        raise ValueError(f"a task needs 2 to 9 responses, got {k}; change num_candidates")
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be at least 1, got {n_prompts}")

    prompts = choose_prompts(project, n_prompts, strategy, seed)
    messages = [p.messages for p in prompts]
    candidates = _generate(policy, messages, sampling, progress)
    settings = sampling.candidate_settings()
    rows: list[list[tuple[Policy, str, dict]]] = [
        [(policy, text, settings[j]) for j, text in enumerate(texts)] for texts in candidates
    ]
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
    return _write_round(project, policy, sampling, strategy, prompts, rows, seed, now)


def choose_prompts(project: Project, n: int, strategy: str, seed: int) -> list[Prompt]:
    """Return up to n pool prompts (held-out ones excluded) chosen by the strategy.

    Raise ValueError when the strategy is unknown or finds no prompt.
    """
    pool = project.prompts.filter(is_held_out=False)
    if strategy == "fresh":
        candidates = list(pool.filter(tasks__isnull=True).order_by("id"))
    elif strategy == "random":
        candidates = list(pool.order_by("id"))
    elif strategy == "disagreement":
        return _most_disputed(pool, n, seed)
    elif strategy == "uncertainty":
        raise ValueError(
            "strategy 'uncertainty' is not yet available (it needs a reward model "
            "ensemble); use 'fresh', 'random' or 'disagreement'"
        )
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if not candidates:
        hint = "import more prompts or use strategy 'random'" if strategy == "fresh" else "import prompts"
        raise ValueError(f"project {project.name!r} has no prompts for strategy {strategy!r}; {hint}")
    if len(candidates) < n:
        logger.warning(
            "project %s: only %d prompts for strategy %s (asked for %d)",
            project.name, len(candidates), strategy, n,
        )
    chosen = random.Random(seed).sample(candidates, min(n, len(candidates)))
    return sorted(chosen, key=lambda p: p.id)


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
    seed: int,
    now: datetime | None,
) -> Round:
    """Create the round, one task per prompt and its responses, in one transaction."""
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
                RankingTask(project=project, round=round_, prompt=prompt, overlap=project.overlap)
                for prompt in prompts
            ]
        )
        responses = []
        for task, candidates in zip(tasks, rows):
            positions = list(range(len(candidates)))
            rng.shuffle(positions)
            for position, (author, text, settings) in zip(positions, candidates):
                responses.append(
                    Response(
                        task=task, policy=author, text=text, sampling=settings, position=position
                    )
                )
        Response.objects.bulk_create(responses)
        if now is not None:
            Round.objects.filter(pk=round_.pk).update(created_at=now)
            RankingTask.objects.filter(round=round_).update(created_at=now)
            Response.objects.filter(task__round=round_).update(created_at=now)
            round_.refresh_from_db()
    logger.info(
        "published %s round %d: %d tasks from %s", project.name, number, len(tasks), policy.name
    )
    return round_
