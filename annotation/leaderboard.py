"""The policy leaderboard: Bradley-Terry ratings from cross-policy comparisons.

Every ranking of a task whose responses come from several policies yields, through
`Ranking.pairs()`, comparisons between policies: a pair whose chosen and rejected
responses were written by different policies is one win for the chosen one's
policy. Ratings are the maximum-a-posteriori Bradley-Terry strengths (Newton's
method with a weak Gaussian prior, so a policy that never lost keeps a finite
rating), shown on the Elo scale (400 points = 10:1 odds) with the SFT policy at
1000. Confidence intervals come from a seeded bootstrap that resamples whole
rankings, not single pairs: the pairs of one ranking are not independent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape

import numpy as np

from annotation.models import Project, Ranking, Response, order_to_pairs
from inference.models import Policy

SOURCES = ("human", "simulated")
ELO_SCALE = 400.0 / math.log(10.0)  # logit -> Elo points
ELO_ANCHOR = 1000.0
# Keys of Policy.metrics holding win rates against the SFT policy on held-out prompts,
# written by the loop's evaluation (training/loop.py).
JUDGE_WIN_RATE_KEY = "judge_win_rate_vs_sft"
RM_WIN_RATE_KEY = "rm_win_rate_vs_sft"


@dataclass(frozen=True)
class Rating:
    """One policy's row of the leaderboard."""

    policy_id: int
    name: str
    rating: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    judge_win_rate_vs_sft: float | None = None
    rm_win_rate_vs_sft: float | None = None

    @property
    def comparisons(self) -> int:
        return self.wins + self.losses

    @property
    def win_rate(self) -> float | None:
        """Return the share of this policy's comparisons it won."""
        return self.wins / self.comparisons if self.comparisons else None


@dataclass(frozen=True)
class Leaderboard:
    """Ratings best first, with what they were computed from."""

    source: str
    anchor: str | None
    rankings: int
    comparisons: int
    bootstrap: int
    confidence: float
    ratings: list[Rating] = field(default_factory=list)

    def to_svg(self) -> str:
        """Return the ratings with their intervals as a standalone SVG forest plot."""
        return leaderboard_svg(self)


def fit_bradley_terry(wins: np.ndarray, prior: float = 0.1) -> np.ndarray:
    """Return Bradley-Terry log-strengths (mean zero) from a matrix of win counts.

    `wins[i, j]` is how often i beat j. The estimate maximises the log-likelihood
    minus `prior / 2 * sum(theta ** 2)`: a Gaussian prior that keeps strengths finite
    for a policy that never lost and pins down ones that were never compared.
    """
    wins = np.asarray(wins, dtype=float)
    n = wins.shape[0]
    if wins.shape != (n, n):
        raise ValueError(f"wins must be a square matrix, got shape {wins.shape}")
    if prior <= 0:
        raise ValueError(f"prior must be > 0 to keep ratings finite, got {prior}")
    games = wins + wins.T  # (n, n) comparisons between i and j
    theta = np.zeros(n)

    def objective(t: np.ndarray) -> float:
        diff = t[:, None] - t[None, :]
        return float(-(wins * np.logaddexp(0.0, -diff)).sum() - prior / 2 * (t @ t))

    value = objective(theta)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))  # P(i beats j)
        grad = (wins - games * p).sum(axis=1) - prior * theta
        weight = games * p * (1.0 - p)
        hessian = weight - np.diag(weight.sum(axis=1) + prior)  # negative definite
        step = np.linalg.solve(hessian, grad)
        # Newton on a strictly concave objective; halve the step if it overshoots.
        scale = 1.0
        while scale > 1e-6:
            candidate = theta - scale * step
            candidate_value = objective(candidate)
            if candidate_value >= value - 1e-12:
                break
            scale /= 2
        theta, value = candidate, candidate_value
        if np.abs(scale * step).max() < 1e-10:
            break
    return theta - theta.mean()


def policy_comparisons(
    project: Project, *, source: str = "human"
) -> list[tuple[int, int, int]]:
    """Return (ranking id, winner policy id, loser policy id) for every cross-policy pair.

    `source` "human" keeps rankings by people (and imported rankings); "simulated"
    keeps those of simulated annotators. Skips give nothing, ties give no pair, and
    a pair of responses by the same policy is no comparison between policies.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    rankings = Ranking.objects.filter(task__project=project, is_skip=False)
    if source == "human":
        rankings = rankings.exclude(annotator__annotator_profile__is_simulated=True)
    else:
        rankings = rankings.filter(annotator__annotator_profile__is_simulated=True)
    policy_of = dict(
        Response.objects.filter(task__project=project).values_list("id", "policy_id")
    )
    comparisons = []
    for ranking_id, order in rankings.values_list("id", "order").order_by("id"):
        for chosen, rejected, _margin in order_to_pairs(order):
            winner, loser = policy_of.get(chosen), policy_of.get(rejected)
            if winner is not None and loser is not None and winner != loser:
                comparisons.append((ranking_id, winner, loser))
    return comparisons


def sft_policy(project: Project) -> Policy | None:
    """Return the policy the project's lineage started from, the leaderboard's anchor.

    That is the oldest ancestor of the current policy (itself included) that wrote
    responses in this project; without a current policy, the oldest policy that did.
    """
    with_responses = set(
        Response.objects.filter(task__project=project).values_list(
            "policy_id", flat=True
        )
    )
    found = None
    policy = project.current_policy
    seen: set[int] = set()
    while policy is not None and policy.pk not in seen:
        seen.add(policy.pk)
        if policy.pk in with_responses:
            found = policy
        policy = policy.parent
    if found is None and with_responses:
        found = (
            Policy.objects.filter(pk__in=with_responses)
            .order_by("created_at", "id")
            .first()
        )
    return found


def build_leaderboard(
    project: Project,
    *,
    source: str = "human",
    anchor: Policy | None = None,
    bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    prior: float = 0.1,
) -> Leaderboard:
    """Return the Bradley-Terry leaderboard of the project's policies.

    `anchor` (default: `sft_policy(project)`) sits at 1000; without it in the
    comparisons, the mean rating does. Intervals are bootstrap percentiles over
    `bootstrap` resamples of whole tasks (all their rankings) drawn with `seed`.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    comparisons = policy_comparisons(project, source=source)
    if anchor is None:
        anchor = sft_policy(project)
    ids = sorted({p for _, win, loss in comparisons for p in (win, loss)})
    ranking_ids = sorted({r for r, _, _ in comparisons})
    if not ids:
        return Leaderboard(source, None, 0, 0, bootstrap, confidence, [])
    index = {pid: i for i, pid in enumerate(ids)}
    anchor_index = index.get(anchor.pk) if anchor is not None else None

    # One win matrix per task, so a bootstrap resample is a weighted sum of them.
    # The unit is the task, not the ranking: the annotators of a task rank the
    # same responses, so their rankings are not independent draws.
    per_task = _wins_per_task(comparisons, ranking_ids, index)

    def ratings_from(wins: np.ndarray) -> np.ndarray:
        theta = fit_bradley_terry(wins, prior=prior)
        if anchor_index is not None:
            theta = theta - theta[anchor_index]
        return ELO_ANCHOR + ELO_SCALE * theta

    point = ratings_from(per_task.sum(axis=0))
    low, high = point.copy(), point.copy()
    if bootstrap:
        low, high = _bootstrap_interval(
            per_task, ratings_from, bootstrap, confidence, seed
        )

    totals = per_task.sum(axis=0)
    policies = {p.pk: p for p in Policy.objects.filter(pk__in=ids)}
    rows = []
    for pid, i in index.items():
        metrics = policies[pid].metrics or {}
        rows.append(
            Rating(
                policy_id=pid,
                name=policies[pid].name,
                rating=round(float(point[i]), 1),
                ci_low=round(float(low[i]), 1),
                ci_high=round(float(high[i]), 1),
                wins=int(totals[i].sum()),
                losses=int(totals[:, i].sum()),
                judge_win_rate_vs_sft=_number(metrics.get(JUDGE_WIN_RATE_KEY)),
                rm_win_rate_vs_sft=_number(metrics.get(RM_WIN_RATE_KEY)),
            )
        )
    rows.sort(key=lambda r: (-r.rating, r.name))
    return Leaderboard(
        source=source,
        anchor=policies[anchor.pk].name if anchor_index is not None else None,
        rankings=len(ranking_ids),
        comparisons=len(comparisons),
        bootstrap=bootstrap,
        confidence=confidence,
        ratings=rows,
    )


def _wins_per_task(
    comparisons: list[tuple[int, int, int]],
    ranking_ids: list[int],
    index: dict[int, int],
) -> np.ndarray:
    """Return the win counts of each task's rankings: (task, winner, loser)."""
    task_of = dict(
        Ranking.objects.filter(pk__in=ranking_ids).values_list("id", "task_id")
    )
    task_ids = sorted(set(task_of.values()))
    row = {tid: i for i, tid in enumerate(task_ids)}
    per_task = np.zeros((len(task_ids), len(index), len(index)))
    for rid, winner, loser in comparisons:
        per_task[row[task_of[rid]], index[winner], index[loser]] += 1
    return per_task


def _bootstrap_interval(
    per_task: np.ndarray,
    ratings_from: Callable[[np.ndarray], np.ndarray],
    bootstrap: int,
    confidence: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Return percentile bounds of the ratings over resamples of whole tasks.

    `per_task` is (task, winner, loser); a resample is a weighted sum of it.
    """
    tasks, policies = per_task.shape[0], per_task.shape[1]
    rng = np.random.default_rng(seed)
    samples = np.empty((bootstrap, policies))
    for b in range(bootstrap):
        counts = np.bincount(rng.integers(0, tasks, tasks), minlength=tasks)
        samples[b] = ratings_from(np.tensordot(counts, per_task, axes=1))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return low, high


def leaderboard_svg(board: Leaderboard, width: int = 640) -> str:
    """Return a forest plot (rating dot, interval whisker) of the leaderboard as SVG.

    Names are escaped; the figure carries a title and description for screen readers.
    """
    row_h, top, left, right = 28, 34, 180, 24
    height = top + row_h * max(1, len(board.ratings)) + 30
    title = f"Bradley-Terry ratings ({board.source} comparisons)"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-labelledby="lb-title lb-desc" '
        'font-family="system-ui, sans-serif" font-size="13">',
        f'<title id="lb-title">{escape(title)}</title>',
        f'<desc id="lb-desc">{escape(_describe(board))}</desc>',
    ]
    if not board.ratings:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#555">'
            "No comparisons between policies yet.</text></svg>"
        )
        return "".join(parts)
    lo = min([r.ci_low for r in board.ratings] + [ELO_ANCHOR])
    hi = max([r.ci_high for r in board.ratings] + [ELO_ANCHOR])
    pad = max(25.0, (hi - lo) * 0.08)
    lo, hi = lo - pad, hi + pad
    plot_w = width - left - right

    def x(value: float) -> float:
        return round(left + (value - lo) / (hi - lo) * plot_w, 1)

    bottom = top + row_h * len(board.ratings)
    for tick in _ticks(lo, hi):
        parts.append(
            f'<line x1="{x(tick)}" y1="{top - 6}" x2="{x(tick)}" y2="{bottom}" '
            'stroke="#ddd"/>'
            f'<text x="{x(tick)}" y="{bottom + 18}" text-anchor="middle" '
            f'fill="#555">{tick:g}</text>'
        )
    if board.anchor is not None:
        parts.append(
            f'<line x1="{x(ELO_ANCHOR)}" y1="{top - 6}" x2="{x(ELO_ANCHOR)}" '
            f'y2="{bottom}" stroke="#888" stroke-dasharray="4 3"/>'
        )
    parts.append(f'<text x="{left}" y="{top - 14}" fill="#111">{escape(title)}</text>')
    for n, r in enumerate(board.ratings):
        y = top + row_h * n + row_h / 2
        parts.append(
            f'<text x="{left - 8}" y="{y + 4}" text-anchor="end" fill="#111">'
            f"{escape(_short(r.name))}</text>"
            f'<line x1="{x(r.ci_low)}" y1="{y}" x2="{x(r.ci_high)}" y2="{y}" '
            'stroke="#0b57d0" stroke-width="2"/>'
            f'<circle cx="{x(r.rating)}" cy="{y}" r="5" fill="#0b57d0">'
            f"<title>{escape(r.name)}: {r.rating:g} "
            f"[{r.ci_low:g}, {r.ci_high:g}]</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _ticks(lo: float, hi: float) -> list[float]:
    """Return round tick values spanning [lo, hi], about five of them."""
    raw = (hi - lo) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) // step) + 1)]


def _describe(board: Leaderboard) -> str:
    rows = "; ".join(
        f"{r.name} {r.rating:g} ({r.ci_low:g} to {r.ci_high:g})" for r in board.ratings
    )
    return (
        f"{board.comparisons} comparisons from {board.rankings} rankings. {rows}"
        if rows
        else "No comparisons."
    )


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _number(value: object) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else None
    )
