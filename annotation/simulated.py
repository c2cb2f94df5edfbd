"""Simulated annotators: programs that rank tasks through the same path as people.

A simulated annotator is a plain object with a `simulator` description and a
`decide(prompt_messages, responses, *, key)` method that returns tie groups of
response indices, best first, or a `Skip`. `annotate` runs one as a User (profile
`is_simulated=True`, in the annotator group) through exactly the functions the
workspace calls: `next_task`, `submit_ranking` and `skip_task`. Their rankings are
therefore leased, counted against the overlap, scored on gold tasks and folded into
the consensus like anyone's; they are left out of human agreement figures
(`annotation.agreement`), of the human leaderboard (`annotation.leaderboard`), and
snapshots label them `simulated-N` (`annotation.snapshots`).

Four annotators: `JudgeAnnotator` (a registered judge, such as the demo's rule-based one),
`PersonaAnnotator` (the judge's aspects weighed a persona's own way),
`RewardModelAnnotator` (a registered reward model's scores) and `NoisyAnnotator`
(wraps any of them with seeded flips, ties and skips). `personas` makes the noisy
personas the headless loop labels with, so that its annotators are not its yardstick.
`RewritingAnnotator` wraps one to also write the rewrite field, as a person does when
no candidate is good enough: the judge's `repair` of its top-ranked response, or of
the best-ranked one whose repair says something (`rewrite_of`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import Protocol

from django.contrib.auth.models import Group, User
from django.db import transaction

from annotation.agreement import kendall_tau_b, pair_agreement
from annotation.assignment import (
    REWRITE_MAX_CHARS,
    AnnotatorPaused,
    RankingSubmission,
    next_task,
    skip_task,
    submit_ranking,
)
from annotation.models import AnnotatorProfile, Project, Ranking
from config.roles import ANNOTATOR
from inference.judges import Judge, judge_offers
from inference.models import Policy
from inference.scoring import RewardScorer

Order = list[list[int]]


@dataclass(frozen=True)
class Skip:
    """A simulated annotator's decision to skip a task, with the reason it records."""

    reason: str


class SimulatedAnnotator(Protocol):
    """What `annotate` needs from a simulated annotator."""

    simulator: str

    def decide(
        self, prompt_messages: list[dict], responses: list[str], *, key: str
    ) -> Order | Skip:
        """Return tie groups of indices into `responses`, best first, or a Skip.

        `key` names the task (stable across runs) for annotators that draw random
        numbers, so that a decision does not depend on the order tasks come in.
        """


class JudgeAnnotator:
    """Rank with a registered judge (`inference.judges`); responses it rates equal tie.

    Given the judge's registered `name`, the simulator says it ("judge:instructions"),
    so a training round evaluates with the judge its annotators ranked with.
    """

    simulator = "judge"

    def __init__(self, judge: Judge, name: str = "") -> None:
        self.judge = judge
        if name:
            self.simulator = f"judge:{name}"

    def decide(
        self, prompt_messages: list[dict], responses: list[str], *, key: str
    ) -> Order | Skip:
        return self.judge.rank(prompt_messages, responses)


class RewardModelAnnotator:
    """Rank by a registered reward model's scores; scores closer than `tie_margin` tie.

    The model (a sequence-classification head with one label, optionally with a
    LoRA adapter) loads on the first decision, so constructing one is cheap.
    """

    def __init__(self, reward_model: Policy, *, tie_margin: float = 0.0) -> None:
        if reward_model.kind != Policy.Kind.REWARD_MODEL:
            raise ValueError(
                f"policy {reward_model.name!r} is a {reward_model.kind}, not a reward "
                "model; pass a registry row of kind 'reward_model'"
            )
        if tie_margin < 0:
            raise ValueError(f"tie_margin must be >= 0, got {tie_margin}")
        self.reward_model = reward_model
        self.tie_margin = tie_margin
        self.simulator = f"reward-model:{reward_model.name}"
        self._scorer = None

    def decide(
        self, prompt_messages: list[dict], responses: list[str], *, key: str
    ) -> Order | Skip:
        if self._scorer is None:
            self._scorer = RewardScorer(
                self.reward_model.base_path, self.reward_model.adapter_path
            )
        scores = self._scorer.score([prompt_messages] * len(responses), responses)
        return order_by_scores(scores, self.tie_margin)


class NoisyAnnotator:
    """Wrap an annotator with seeded noise: skips, flipped neighbours, merged ties.

    Per task, with its own random stream seeded by (seed, task key): skip with
    probability `skip_rate`; otherwise take the inner order and walk its boundaries
    between adjacent tie groups best to worst, swapping the two groups with
    probability `flip_rate`, then walk them again, merging the two into one tie with
    probability `tie_rate`. With two responses, `flip_rate` is exactly the chance the
    preference is reversed.
    """

    def __init__(
        self,
        inner: SimulatedAnnotator,
        *,
        flip_rate: float = 0.0,
        tie_rate: float = 0.0,
        skip_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        for name, value in (
            ("flip_rate", flip_rate),
            ("tie_rate", tie_rate),
            ("skip_rate", skip_rate),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.inner = inner
        self.flip_rate, self.tie_rate, self.skip_rate = flip_rate, tie_rate, skip_rate
        self.seed = seed
        self.simulator = (
            f"noisy({inner.simulator}, flip={flip_rate:g}, tie={tie_rate:g}, "
            f"skip={skip_rate:g}, seed={seed})"
        )

    def decide(
        self, prompt_messages: list[dict], responses: list[str], *, key: str
    ) -> Order | Skip:
        rng = random.Random(f"{self.seed}:{key}")
        if rng.random() < self.skip_rate:
            return Skip("simulated skip (noise)")
        decided = self.inner.decide(prompt_messages, responses, key=key)
        if isinstance(decided, Skip):
            return decided
        groups = [list(g) for g in decided]
        for k in range(len(groups) - 1):
            if rng.random() < self.flip_rate:
                groups[k], groups[k + 1] = groups[k + 1], groups[k]
        merged = [groups[0]]
        for group in groups[1:]:
            if rng.random() < self.tie_rate:
                merged[-1] = sorted(merged[-1] + group)
            else:
                merged.append(group)
        return merged


class RewritingAnnotator:
    """Wrap an annotator so that it also writes a rewrite on some tasks.

    Where the judge does not accept any of its top-ranked responses as correct, it
    writes, with probability `rate` (seeded by (seed, task key)), the judge's
    `repair` of the first of them: the best candidate edited to be right, as an
    annotator uses the ranking page's rewrite field. Nothing when the judge cannot
    repair it. `annotate` sends the rewrite with the ranking.
    """

    def __init__(
        self,
        inner: SimulatedAnnotator,
        judge: Judge,
        *,
        rate: float,
        seed: int = 0,
        start: str = "best",
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        check_rewrite_start(judge, start)
        self.inner, self.judge, self.rate, self.seed = inner, judge, rate, seed
        self.start = start
        self.simulator = f"rewriting({inner.simulator}, rate={rate:g}" + (
            f", start={start})" if start != "best" else ")"
        )

    def decide(
        self, prompt_messages: list[dict], responses: list[str], *, key: str
    ) -> Order | Skip:
        return self.inner.decide(prompt_messages, responses, key=key)

    def rewrite(
        self,
        prompt_messages: list[dict],
        responses: list[str],
        order: Order,
        *,
        key: str,
    ) -> str:
        """Return the rewrite for a decided task ("" for none)."""
        best = [responses[i] for i in order[0]]
        accepted = (
            self.judge.correct_substantively
            if self.start == "substantive"
            else self.judge.correct
        )
        if any(accepted(prompt_messages, text) for text in best):
            return ""
        if random.Random(f"rewrite:{self.seed}:{key}").random() >= self.rate:
            return ""
        ranked = [responses[i] for group in order for i in group]
        return rewrite_of(self.judge, prompt_messages, ranked, self.start)


# What a simulated rewrite starts from: "best", the top-ranked candidate's repair
# where no top-ranked one is correct; "substantive" (a judge with
# `correct_substantively`), the best-ranked candidate whose repair is substantive,
# where no top-ranked one is correct and substantive.
REWRITE_STARTS = ("best", "substantive")


def check_rewrite_start(judge: Judge, start: str) -> None:
    """Raise ValueError unless `judge` can write rewrites starting from `start`."""
    if start not in REWRITE_STARTS:
        raise ValueError(
            f"a rewrite starts from one of {REWRITE_STARTS}, got {start!r}"
        )
    if not (judge_offers(judge, "repair") and judge_offers(judge, "correct")):
        raise ValueError(
            "a rewriting annotator needs a judge with `correct` and `repair` "
            "(the demo and instructions judges have both); this judge cannot write rewrites"
        )
    if start == "substantive" and not judge_offers(judge, "correct_substantively"):
        raise ValueError(
            "a rewrite that starts from a substantive answer needs a judge with "
            "`correct_substantively` (the instructions judge); start from 'best' instead"
        )


def rewrite_of(
    judge: Judge, prompt_messages: list[dict], ranked: list[str], start: str = "best"
) -> str:
    """Return the judge's repair of one of `ranked` (best first), or "" for none.

    `start="best"`: the repair of the first. `start="substantive"`: the repair of
    the first whose repair is substantive as well as correct (a person rewrites the
    answer that says something, not the one that broke the fewest rules); where
    none is, the first's repair when the first is wrong, and none when it is
    already correct (a rewrite would say no more than it).
    """
    if start == "substantive":
        for text in ranked:
            repaired = (judge.repair(prompt_messages, text) or "")[:REWRITE_MAX_CHARS]
            if repaired and judge.correct_substantively(prompt_messages, repaired):
                return repaired
        if judge.correct(prompt_messages, ranked[0]):
            return ""
    return (judge.repair(prompt_messages, ranked[0]) or "")[:REWRITE_MAX_CHARS]


class PersonaAnnotator:
    """Rank by a judge's aspects weighed the persona's own way (a judge with `aspects`).

    People weigh the same qualities differently: one minds rudeness more, another
    rambling. A persona scores each response as the sum of the judge's aspect scores
    times its own `weights` and ranks by that; equal scores tie.
    """

    def __init__(self, judge: Judge, weights: dict[str, float], name: str) -> None:
        if not judge_offers(judge, "aspects"):
            raise ValueError(
                "a persona needs a judge with `weights` and `aspects()`; this judge "
                "only compares and ranks (use JudgeAnnotator)"
            )
        unknown = sorted(set(weights) - set(judge.weights))
        if unknown:
            raise ValueError(
                f"weights name aspects {unknown} the judge does not score; it scores "
                f"{sorted(judge.weights)}"
            )
        self.judge, self.weights = judge, dict(weights)
        described = ", ".join(f"{k}={v:.2f}" for k, v in sorted(self.weights.items()))
        self.simulator = f"persona:{name}({described})"

    def decide(
        self, prompt_messages: list[dict], responses: list[str], *, key: str
    ) -> Order | Skip:
        scores = []
        for response in responses:
            aspects = self.judge.aspects(prompt_messages, response)
            scores.append(sum(w * aspects[k] for k, w in self.weights.items()))
        return order_by_scores([round(s, 9) for s in scores])


def personas(
    judge: Judge,
    n: int,
    *,
    seed: int,
    flip_range: tuple[float, float] = (0.10, 0.20),
    spread: float = 0.5,
    tie_rate: float = 0.0,
    skip_rate: float = 0.0,
    judge_name: str = "",
) -> list[NoisyAnnotator]:
    """Return n noisy personas of the judge: simulated annotators that are not the yardstick.

    Persona i weighs each of the judge's aspects by the judge's weight times a
    factor drawn uniformly from [1 - spread, 1 + spread], and flips adjacent groups
    of its order at a rate drawn uniformly from `flip_range`; both seeded by (seed, i).
    A judge without aspects gives plain noisy copies of itself (JudgeAnnotator),
    which name `judge_name` in their simulator so a round evaluates with that judge.
    """
    low, high = flip_range
    if not 0 <= low <= high <= 1 or not 0 <= spread < 1:
        raise ValueError(
            f"flip_range must be 0 <= low <= high <= 1 and spread in [0, 1), got "
            f"{flip_range} and {spread}"
        )
    annotators = []
    for i in range(1, n + 1):
        rng = random.Random(f"persona:{seed}:{i}")
        inner: SimulatedAnnotator
        if judge_offers(judge, "aspects"):
            weights = {
                k: w * rng.uniform(1 - spread, 1 + spread)
                for k, w in sorted(judge.weights.items())
            }
            inner = PersonaAnnotator(judge, weights, name=str(i))
        else:
            inner = JudgeAnnotator(judge, judge_name)
        annotators.append(
            NoisyAnnotator(
                inner,
                flip_rate=rng.uniform(low, high),
                tie_rate=tie_rate,
                skip_rate=skip_rate,
                seed=seed * 1000 + i,
            )
        )
    return annotators


def order_by_scores(scores: list[float], tie_margin: float = 0.0) -> Order:
    """Return indices as tie groups, best first; a score within `tie_margin` of the
    group's best joins that group."""
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    groups: list[list[int]] = []
    for i in ranked:
        if groups and scores[groups[-1][0]] - scores[i] <= tie_margin:
            groups[-1].append(i)
        else:
            groups.append([i])
    return [sorted(g) for g in groups]


def simulated_user(username: str, simulator: str) -> User:
    """Return the simulated annotator's user, creating or updating it.

    The user is in the annotator group, cannot log in (unusable password), and its
    profile says `is_simulated=True` with the simulator's description.
    """
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        elif not _is_simulated(user):
            raise ValueError(
                f"user {username!r} exists and is a person, not a simulated annotator; "
                "choose another name for the simulated annotator"
            )
        user.groups.add(Group.objects.get_or_create(name=ANNOTATOR)[0])
        AnnotatorProfile.objects.update_or_create(
            user=user, defaults={"is_simulated": True, "simulator": simulator}
        )
    return user


def _is_simulated(user: User) -> bool:
    return AnnotatorProfile.objects.filter(user=user, is_simulated=True).exists()


@dataclass(frozen=True)
class AnnotationReport:
    """What one simulated annotator did in one `annotate` call."""

    username: str
    ranked: int
    skipped: int
    paused: bool


def annotate(
    project: Project,
    user: User,
    annotator: SimulatedAnnotator,
    *,
    max_tasks: int | None = None,
    now: datetime | None = None,
) -> AnnotationReport:
    """Take tasks one by one as `user` and rank or skip each with `annotator`.

    Stop when no task is left for the user, after `max_tasks` tasks, or when the
    user is paused for failing gold tasks (reported, not raised).
    """
    if not _is_simulated(user):
        raise ValueError(
            f"user {user.username!r} is not a simulated annotator; create it with "
            "simulated_user()"
        )
    ranked = skipped = 0
    paused = False
    while max_tasks is None or ranked + skipped < max_tasks:
        try:
            lease = next_task(project, user, now=now)
        except AnnotatorPaused:
            paused = True
            break
        if lease is None:
            break
        task = lease.task
        responses = list(task.responses.order_by("position", "id"))
        decided = annotator.decide(
            task.prompt.messages, [r.text for r in responses], key=f"task-{task.pk}"
        )
        if isinstance(decided, Skip):
            skip_task(lease, user, decided.reason, now=now)
            skipped += 1
            continue
        texts = [r.text for r in responses]
        rewrite = (
            annotator.rewrite(
                task.prompt.messages, texts, decided, key=f"task-{task.pk}"
            )
            if callable(getattr(annotator, "rewrite", None))
            else ""
        )
        # Named by handle (1..K in display order), as every annotator names them.
        order = [[i + 1 for i in group] for group in decided]
        submit_ranking(
            lease,
            user,
            RankingSubmission(
                order, strength=_strength(project, order), rewrite=rewrite
            ),
            now=now,
        )
        ranked += 1
    return AnnotationReport(user.username, ranked, skipped, paused)


def _strength(project: Project, order: Order) -> int | None:
    """Return the strength a simulated annotator gives: none in a K-wise project;
    in a pairwise one, the weakest level for a preference (it judges only the
    order) and 0 for a tie."""
    if project.mode != Project.Mode.PAIRWISE:
        return None
    return 0 if len(order) == 1 else 1


@dataclass(frozen=True)
class SimulatedAgreement:
    """How often one simulated annotator agrees with people on tasks both ranked.

    `agreement` is the share of (person, response pair) judgements on which the
    simulator and the person prefer the same response or both tie it;
    `human_agreement` is the same figure between people on the same tasks, the
    ceiling to read it against. None where nothing was compared.
    """

    username: str
    simulator: str
    tasks: int
    pairs: int
    agreement: float | None
    kendall_tau_b: float | None
    human_agreement: float | None


def simulated_agreement(project: Project) -> list[SimulatedAgreement]:
    """Return each simulated annotator's agreement with people in the project."""
    rows = Ranking.objects.filter(task__project=project, is_skip=False).values_list(
        "task_id",
        "annotator_id",
        "annotator__username",
        "order",
        "annotator__annotator_profile__is_simulated",
        "annotator__annotator_profile__simulator",
    )
    human: dict[int, list[Order]] = {}
    simulated: dict[int, dict[int, Order]] = {}
    names: dict[int, tuple[str, str]] = {}
    for task_id, user_id, username, order, is_simulated, simulator in rows:
        if is_simulated:
            simulated.setdefault(user_id, {})[task_id] = order
            names[user_id] = (username, simulator)
        else:
            human.setdefault(task_id, []).append(order)
    report = []
    for user_id in sorted(simulated, key=lambda u: names[u][0]):
        agree = total = 0
        taus: list[float] = []
        tasks = 0
        h_agree = h_total = 0
        for task_id, order in simulated[user_id].items():
            people = human.get(task_id, [])
            if not people:
                continue
            tasks += 1
            for person in people:
                n_agree, n = pair_agreement(order, person)
                agree, total = agree + n_agree, total + n
                if (tau := kendall_tau_b(order, person)) is not None:
                    taus.append(tau)
            for a, b in combinations(people, 2):
                n_agree, n = pair_agreement(a, b)
                h_agree, h_total = h_agree + n_agree, h_total + n
        username, simulator = names[user_id]
        report.append(
            SimulatedAgreement(
                username=username,
                simulator=simulator,
                tasks=tasks,
                pairs=total,
                agreement=agree / total if total else None,
                kendall_tau_b=sum(taus) / len(taus) if taus else None,
                human_agreement=h_agree / h_total if h_total else None,
            )
        )
    return report
