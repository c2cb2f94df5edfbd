"""Forms of the annotation pages: every 4xx of those pages comes from here."""

from __future__ import annotations

import json

from django import forms
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.http import QueryDict

from annotation.assignment import (
    MAX_ASPECTS,
    MAX_RESPONSES,
    RATIONALE_MAX_CHARS,
    REWRITE_MAX_CHARS,
    RankingSubmission,
    leased_task,
)
from annotation.models import (
    DEFAULT_STRENGTH_LABELS,
    MAX_STRENGTH_LEVELS,
    Lease,
    Project,
    Ranking,
    RankingTask,
    clean_strength_labels,
)

ORDER_EXAMPLE = "[[12],[14,13],[11]]"
# The largest id a database row can have (a signed 64-bit integer).
MAX_ID = 2**63 - 1
# An order of MAX_RESPONSES ids as JSON fits in this many characters.
ORDER_MAX_CHARS = 4_000


def parse_order(data: QueryDict, response_ids: list[int] | range) -> list[list[int]]:
    """Return the order a form posted, as validated tie groups.

    Take `order`, a JSON list of tie groups of responses, best first; without it,
    take one `rank-<response>` field per response (1 is best, equal numbers tie),
    the form a browser without JavaScript posts. Responses are named by
    `response_ids`: handles 1..K on the annotator's workspace, ids on researchers'
    pages. Raise ValidationError naming the problem.
    """
    raw = (data.get("order") or "").strip()
    if len(raw) > ORDER_MAX_CHARS:
        raise ValidationError(
            f"order has {len(raw):,} characters; an order of a task's responses fits "
            f"in {ORDER_MAX_CHARS:,}"
        )
    if raw:
        try:
            order = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            raise ValidationError(
                f"order must be JSON tie groups of responses like {ORDER_EXAMPLE}, "
                f"got {raw[:80]!r}"
            ) from None
    else:
        by_rank: dict[int, list[int]] = {}
        for rid in response_ids:
            value = (data.get(f"rank-{rid}") or "").strip()
            if not value:
                raise ValidationError(
                    f"response {rid} has no rank; give every response a rank "
                    f"(1 is best, equal numbers tie)"
                )
            try:
                position = int(value)
            except ValueError:
                raise ValidationError(
                    f"rank of response {rid} must be a whole number, got {value!r}"
                ) from None
            by_rank.setdefault(position, []).append(rid)
        order = [by_rank[r] for r in sorted(by_rank)]
    return Ranking.validate_order(order, response_ids)


def scale_points(project: Project) -> list[dict[str, str]]:
    """Return the pairwise scale's points, A's strongest first: the `preference`
    value each posts (see `pairwise_judgement`) and its text."""
    return [
        {
            "value": str(-strength if side == "A" else strength),
            "text": f"{side} {label}" if side else label.capitalize(),
        }
        for side, label, strength in project.strength_scale()
    ]


def preference_of(order: list[list[int]], strength: int, names: list[int]) -> int:
    """Return the point of the scale a stored judgement is (`pairwise_judgement`
    reversed): negative when the first of `names` is preferred."""
    if strength == 0 or len(order) < 2:
        return 0
    return -strength if order[0][0] == names[0] else strength


def pairwise_judgement(
    preference: int | None, names: list[int]
) -> tuple[list[list[int]], int]:
    """Return the order and strength a point of the pairwise scale means.

    `preference` is the point: negative prefers the first response (A), positive the
    second (B), 0 ties them ("about the same"); its size is the strength. `names`:
    how the order names the task's two responses, in display order. Raise
    ValidationError when no point was chosen or the task has not two responses.
    """
    if preference is None:
        raise ValidationError(
            "choose how the two responses compare: a point on the scale from A "
            "better to B better, or about the same"
        )
    if len(names) != 2:
        raise ValidationError(
            f"a pairwise judgement compares 2 responses; this task has {len(names)}"
        )
    first, second = names
    if preference == 0:
        return [[first, second]], 0
    better, worse = (first, second) if preference < 0 else (second, first)
    return [[better], [worse]], abs(preference)


def _int_list(values: list[str], what: str) -> list[int]:
    if len(values) > MAX_RESPONSES:
        raise ValidationError(
            f"{what} name {len(values):,} responses; a task has at most {MAX_RESPONSES}"
        )
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValidationError(
            f"{what} must be response numbers, got {values!r}"[:300]
        ) from None


def own_lease(
    lease_id: int, user: AbstractBaseUser, project: Project
) -> tuple[Lease, list[int]]:
    """Return the user's lease with this id in the project and its task's response
    ids in display order, or raise ValidationError."""
    found = leased_task(lease_id, user, project)
    if found is None:
        raise ValidationError(
            f"lease {lease_id} is not yours in project {project.name}; reload the "
            "workspace to get your task"
        )
    return found


class RankingForm(forms.Form):
    """A ranking posted from the workspace (fields documented in views.submit).

    Responses are named by handle (1..K in display order), never by id; the
    submission it builds is mapped to ids by the service (`assignment._check`).
    """

    lease = forms.IntegerField(min_value=1, max_value=MAX_ID)
    order = forms.CharField(required=False, max_length=ORDER_MAX_CHARS)
    all_bad = forms.BooleanField(required=False)
    rationale = forms.CharField(
        required=False, max_length=RATIONALE_MAX_CHARS, strip=True
    )
    rewrite = forms.CharField(required=False, max_length=REWRITE_MAX_CHARS, strip=True)
    active_seconds = forms.FloatField(required=False, min_value=0)
    strength = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_STRENGTH_LEVELS
    )
    preference = forms.IntegerField(
        required=False, min_value=-MAX_STRENGTH_LEVELS, max_value=MAX_STRENGTH_LEVELS
    )

    def __init__(
        self, data: QueryDict, *, user: AbstractBaseUser, project: Project
    ) -> None:
        super().__init__(data)
        self.user = user
        self.project = project
        self.response_ids: list[int] = []

    def clean_lease(self) -> Lease:
        lease, self.response_ids = own_lease(
            self.cleaned_data["lease"], self.user, self.project
        )
        return lease

    def clean(self) -> dict:
        cleaned = super().clean()
        if "lease" not in cleaned:
            return cleaned
        handles = range(1, len(self.response_ids) + 1)
        pairwise = self.project.mode == Project.Mode.PAIRWISE
        if pairwise and not (self.data.get("order") or "").strip():
            cleaned["order"], cleaned["strength"] = pairwise_judgement(
                cleaned.get("preference"), list(handles)
            )
        else:
            cleaned["order"] = parse_order(self.data, handles)
        strength = Ranking.validate_strength(
            cleaned.get("strength"), cleaned["order"], self.project
        )
        unsafe = _int_list(self.data.getlist("unsafe"), "unsafe flags")
        unknown = sorted(set(unsafe) - set(handles))
        if unknown:
            raise ValidationError(f"unsafe flags name unknown responses {unknown}")
        cleaned["unsafe"] = unsafe
        ratings: dict[int, dict[str, int]] = {}
        for handle in handles:
            for aspect in self.project.aspects:
                value = (self.data.get(f"aspect-{handle}-{aspect}") or "").strip()
                if not value:
                    continue
                if not value.isdigit() or not 1 <= int(value) <= 7:
                    raise ValidationError(
                        f"rating of {aspect} for response {handle} must be 1 to 7, "
                        f"got {value!r}"
                    )
                ratings.setdefault(handle, {})[aspect] = int(value)
        cleaned["aspect_ratings"] = ratings
        if self.project.require_rationale and not cleaned.get("rationale"):
            raise ValidationError(
                "this project requires a rationale: say in a sentence why the best "
                "response is best"
            )
        cleaned["submission"] = RankingSubmission(
            cleaned["order"],
            all_bad=cleaned.get("all_bad", False),
            unsafe=unsafe,
            rationale=cleaned.get("rationale", ""),
            rewrite=cleaned.get("rewrite", ""),
            aspect_ratings=ratings,
            active_seconds=cleaned.get("active_seconds"),
            strength=strength,
        )
        return cleaned

    def submission(self) -> RankingSubmission:
        """Return the valid form's ranking as the value `submit_ranking` stores."""
        return self.cleaned_data["submission"]


class SkipForm(forms.Form):
    """A skip posted from the workspace: the lease and a reason."""

    lease = forms.IntegerField(min_value=1, max_value=MAX_ID)
    reason = forms.CharField(
        max_length=2_000,
        strip=True,
        error_messages={
            "required": "a skip needs a reason, e.g. 'prompt is not in English'"
        },
    )

    def __init__(
        self, data: QueryDict, *, user: AbstractBaseUser, project: Project
    ) -> None:
        super().__init__(data)
        self.user = user
        self.project = project

    def clean_lease(self) -> Lease:
        return own_lease(self.cleaned_data["lease"], self.user, self.project)[0]


class AdjudicateForm(forms.Form):
    """An adjudicated order for a task, posted from the review page."""

    order = forms.CharField(required=False, max_length=ORDER_MAX_CHARS)

    def __init__(
        self, data: QueryDict | None, *, task: RankingTask, response_ids: list[int]
    ) -> None:
        super().__init__(data)
        self.task = task
        self.response_ids = response_ids

    def clean(self) -> dict:
        cleaned = super().clean()
        cleaned["order"] = parse_order(self.data, self.response_ids)
        return cleaned


class GoldForm(forms.Form):
    """Mark a task gold with its known order, or with only its known best response."""

    task = forms.IntegerField(label="Task id", min_value=1, max_value=MAX_ID)
    order = forms.CharField(
        required=False,
        max_length=ORDER_MAX_CHARS,
        help_text=f"Known order as JSON tie groups, e.g. {ORDER_EXAMPLE}.",
    )
    best = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        label="Or: id of the known best response",
    )

    def __init__(self, data: QueryDict | None = None, *, project: Project) -> None:
        super().__init__(data)
        self.project = project

    def clean_task(self) -> RankingTask:
        task = RankingTask.objects.filter(
            pk=self.cleaned_data["task"], project=self.project
        ).first()
        if task is None:
            raise ValidationError(
                f"task {self.cleaned_data['task']} is not in project {self.project.name}"
            )
        return task

    def clean(self) -> dict:
        from annotation.gold import best_only_order

        cleaned = super().clean()
        task = cleaned.get("task")
        if task is None:
            return cleaned
        ids = list(task.responses.values_list("pk", flat=True))
        if cleaned.get("best") is not None:
            if cleaned["best"] not in ids:
                raise ValidationError(
                    f"response {cleaned['best']} is not in task {task.pk}; its responses are "
                    f"{sorted(ids)}"
                )
            cleaned["gold_order"] = best_only_order(cleaned["best"], ids)
        elif cleaned.get("order"):
            cleaned["gold_order"] = parse_order(self.data, ids)
        else:
            raise ValidationError("give the known order or the known best response")
        return cleaned


class ProjectSettingsForm(forms.ModelForm):
    """The settings an admin edits on a project."""

    aspects = forms.CharField(
        required=False,
        max_length=2_000,
        help_text="Comma-separated aspect names rated 1-7, e.g. helpfulness, harmlessness.",
    )
    guidelines = forms.CharField(
        required=False,
        max_length=100_000,
        widget=forms.Textarea(attrs={"rows": 10}),
    )
    strength_labels = forms.CharField(
        required=False,
        max_length=1_000,
        label="Strength scale",
        help_text="Pairwise projects: comma-separated levels of one side, weakest "
        f"first, e.g. {', '.join(DEFAULT_STRENGTH_LABELS)}. Annotators choose from A's "
        "strongest through 'about the same' to B's strongest.",
    )

    class Meta:
        model = Project
        fields = [
            "title",
            "guidelines",
            "mode",
            "responses_per_task",
            "strength_labels",
            "overlap",
            "lease_minutes",
            "aspects",
            "require_rationale",
            "gold_rate",
            "gold_threshold",
            "gold_min_tasks",
            "revision_minutes",
        ]
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 10})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A post without the mode keeps the project's (forms written before it).
        self.fields["mode"].required = False
        if self.instance and not self.is_bound:
            self.initial["aspects"] = ", ".join(self.instance.aspects or [])
            self.initial["strength_labels"] = ", ".join(
                self.instance.strength_labels or DEFAULT_STRENGTH_LABELS
            )

    def clean_aspects(self) -> list[str]:
        names = [
            a.strip() for a in self.cleaned_data["aspects"].split(",") if a.strip()
        ]
        bad = [a for a in names if not a.replace("_", "").replace("-", "").isalnum()]
        if bad:
            raise ValidationError(
                f"aspect names must be words (letters, digits, - or _), got {bad}"
            )
        if len(set(names)) != len(names):
            raise ValidationError(f"aspect names repeat: {names}")
        if len(names) > MAX_ASPECTS or any(len(a) > 100 for a in names):
            raise ValidationError(
                f"a project rates at most {MAX_ASPECTS} aspects of at most 100 "
                f"characters each, got {len(names)}"
            )
        return names

    def clean_mode(self) -> str:
        return self.cleaned_data["mode"] or self.instance.mode

    def clean_strength_labels(self) -> list[str]:
        text = self.cleaned_data["strength_labels"]
        labels = [a.strip() for a in text.split(",")] if text.strip() else []
        return clean_strength_labels(labels or list(DEFAULT_STRENGTH_LABELS))

    def clean(self) -> dict:
        """Refuse changing the mode or the number of strength levels of a project
        that has tasks: its tasks and stored strengths were made for the old shape."""
        cleaned = super().clean()
        project = self.instance
        if project.pk is None or not project.tasks.exists():
            return cleaned
        if cleaned.get("mode", project.mode) != project.mode:
            raise ValidationError(
                f"project {project.name} has tasks made for {project.mode} mode; the "
                "mode cannot change now (create a new project for the other mode)"
            )
        labels = cleaned.get("strength_labels", project.strength_labels)
        pairwise = project.mode == Project.Mode.PAIRWISE
        if pairwise and len(labels) != len(project.strength_labels):
            raise ValidationError(
                f"project {project.name} has tasks judged on "
                f"{len(project.strength_labels)} strength levels per side; rename the "
                f"levels but keep {len(project.strength_labels)} of them"
            )
        return cleaned

    def clean_responses_per_task(self) -> int:
        k = self.cleaned_data["responses_per_task"]
        if not 2 <= k <= 9:
            raise ValidationError(f"responses per task must be 2 to 9, got {k}")
        return k

    def clean_overlap(self) -> int:
        n = self.cleaned_data["overlap"]
        if n < 1:
            raise ValidationError(f"overlap must be at least 1, got {n}")
        return n

    def clean_lease_minutes(self) -> int:
        n = self.cleaned_data["lease_minutes"]
        if not 1 <= n <= 24 * 60:
            raise ValidationError(f"lease length must be 1 to 1440 minutes, got {n}")
        return n

    def _share(self, name: str) -> float:
        value = self.cleaned_data[name]
        if not 0 <= value <= 1:
            raise ValidationError(
                f"{name.replace('_', ' ')} must be between 0 and 1, got {value}"
            )
        return value

    def clean_gold_rate(self) -> float:
        return self._share("gold_rate")

    def clean_gold_threshold(self) -> float:
        return self._share("gold_threshold")
