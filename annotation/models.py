"""Projects, prompts, rounds, ranking tasks, leases, rankings and snapshots.

Rules about one model's data are methods on that model: a `Ranking` validates itself
against its task's responses and turns itself into ordered pairs (ties give none).
Changes spanning several models live in their concept modules (`assignment.py`,
`rounds.py`, `snapshots.py`, ...), inside one transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from itertools import combinations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from inference.models import Policy

ROLES_IN_PROMPTS = ("system", "user", "assistant")


def normalise_messages(value: str | list) -> list[dict]:
    """Return a prompt as a list of role/content messages (a string becomes one user turn).

    Raise ValidationError naming the bad value when a message is malformed.
    """
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise ValidationError(
            f"a prompt must be a string or a non-empty list of messages, got {value!r:.80}"
        )
    messages = []
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or "role" not in message
            or "content" not in message
        ):
            raise ValidationError(
                f"message {i} must be an object with 'role' and 'content', got {message!r:.80}"
            )
        role, content = message["role"], message["content"]
        if role not in ROLES_IN_PROMPTS:
            raise ValidationError(
                f"message {i} has unknown role {role!r}; expected one of {ROLES_IN_PROMPTS}"
            )
        if not isinstance(content, str) or not content.strip():
            raise ValidationError(f"message {i} has empty content")
        messages.append({"role": role, "content": content})
    return messages


def messages_hash(messages: list[dict]) -> str:
    """Return the SHA-256 of a prompt's canonical JSON, for deduplication."""
    canonical = json.dumps(
        messages, ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ProjectQuerySet(models.QuerySet):
    """Projects, narrowed to those a person may work in or read."""

    def visible_to(self, user) -> ProjectQuerySet:
        """Return the projects `user` is a member of (every project for admins).

        Anonymous and inactive users see none; archived projects only admins see. The one home of the membership rule:
        pages and API operations reach projects through this (or `get_project_for`).
        """
        from config.roles import is_admin

        if not user.is_authenticated or not user.is_active:
            return self.none()
        if is_admin(user):
            return self
        return self.filter(memberships__user=user, archived_at__isnull=True)


DEFAULT_STRENGTH_LABELS = ["slightly better", "better", "much better"]
MAX_STRENGTH_LEVELS = 5
STRENGTH_LABEL_MAX_CHARS = 40


def default_strength_labels() -> list[str]:
    return list(DEFAULT_STRENGTH_LABELS)


class Project(models.Model):
    """A labelling project: its guidelines, task shape and quality settings."""

    class Mode(models.TextChoices):
        RANKING = "ranking", "Rank K responses (ties allowed)"
        PAIRWISE = "pairwise", "Compare two responses, with strength"

    name = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200, blank=True)
    guidelines = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    responses_per_task = models.PositiveSmallIntegerField(
        default=4, help_text="How many candidate responses each task shows (2 to 9)."
    )
    overlap = models.PositiveSmallIntegerField(
        default=3, help_text="How many different annotators rank each task."
    )
    mode = models.CharField(
        max_length=20,
        choices=Mode.choices,
        default=Mode.RANKING,
        help_text="K-wise ranking, or A/B comparison with a strength (2 responses).",
    )
    strength_labels = models.JSONField(
        default=default_strength_labels,
        blank=True,
        help_text="Pairwise: the strength levels of one side, weakest first; the "
        "scale runs from A's strongest through 'about the same' to B's strongest.",
    )
    lease_minutes = models.PositiveIntegerField(
        default=30,
        help_text="How long a task stays leased to the annotator who took it.",
    )
    aspects = models.JSONField(
        default=list,
        blank=True,
        help_text="Names of per-aspect ratings on a 1-7 scale, e.g. helpfulness.",
    )
    require_rationale = models.BooleanField(default=False)
    gold_rate = models.FloatField(
        default=0.1, help_text="Share of an annotator's tasks drawn from gold tasks."
    )
    gold_threshold = models.FloatField(
        default=0.5, help_text="Gold accuracy below which an annotator is paused."
    )
    gold_min_tasks = models.PositiveIntegerField(
        default=5, help_text="Gold tasks answered before the threshold applies."
    )
    revision_minutes = models.PositiveIntegerField(
        default=10,
        help_text="How long after ranking a task an annotator may revise it (0: never).",
    )
    current_policy = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="current_for_projects",
        help_text="The deployed policy; publishing a round uses it by default.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    archived_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When an admin archived the project; only admins see it then.",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        through="Membership",
        related_name="member_projects",
        blank=True,
        help_text="Who may work in or read the project (admins: every project).",
    )

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not 2 <= self.responses_per_task <= 9:
            raise ValidationError(
                f"responses per task must be between 2 and 9, got {self.responses_per_task}"
            )
        if self.overlap < 1:
            raise ValidationError(f"overlap must be at least 1, got {self.overlap}")
        self.strength_labels = clean_strength_labels(self.strength_labels)
        if self.mode == self.Mode.PAIRWISE and self.responses_per_task != 2:
            raise ValidationError(
                "a pairwise project shows 2 responses per task, got "
                f"{self.responses_per_task}; set responses per task to 2"
            )

    def strength_scale(self) -> list[tuple[str, str, int]]:
        """Return the pairwise scale, A's strongest first: (side, label, strength).

        Side is "A", "B" or "" for the middle ("about the same", strength 0).
        """
        labels = self.strength_labels
        return [
            *(("A", labels[i], i + 1) for i in reversed(range(len(labels)))),
            ("", "about the same", 0),
            *(("B", labels[i], i + 1) for i in range(len(labels))),
        ]


def clean_strength_labels(value: object) -> list[str]:
    """Return a pairwise strength scale's labels, stripped, or raise ValidationError.

    One to MAX_STRENGTH_LEVELS distinct non-empty labels, weakest first.
    """
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(
            f"strength labels must be a list of texts, weakest first, got {value!r}"[
                :300
            ]
        )
    labels = [v.strip() for v in value]
    if not 1 <= len(labels) <= MAX_STRENGTH_LEVELS:
        raise ValidationError(
            f"a strength scale has 1 to {MAX_STRENGTH_LEVELS} levels per side, got "
            f"{len(labels)}, e.g. {DEFAULT_STRENGTH_LABELS}"
        )
    if any(not v or len(v) > STRENGTH_LABEL_MAX_CHARS for v in labels):
        raise ValidationError(
            f"each strength label must have 1 to {STRENGTH_LABEL_MAX_CHARS} "
            f"characters, got {labels!r}"[:300]
        )
    if len(set(labels)) != len(labels):
        raise ValidationError(f"strength labels repeat: {labels}")
    return labels


class Membership(models.Model):
    """A person's membership of a project: where their global role applies."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="memberships",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "user"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user"], name="unique_membership"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project}"


class AnnotatorProfile(models.Model):
    """Per-user annotation state: simulated flag, pause for failing gold."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="annotator_profile",
    )
    is_simulated = models.BooleanField(
        default=False,
        help_text="A programmatic annotator; excluded from human agreement.",
    )
    simulator = models.CharField(
        max_length=200, blank=True, help_text="Which simulated annotator, e.g. judge."
    )
    is_paused = models.BooleanField(default=False)
    paused_reason = models.TextField(blank=True)
    reinstated_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When an admin last reinstated the annotator; gold scoring restarts.",
    )

    def __str__(self) -> str:
        return f"profile of {self.user}"


class Prompt(models.Model):
    """A prompt in a project's pool: one user message or a multi-turn conversation."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="prompts"
    )
    messages = models.JSONField(help_text="List of {role, content} messages.")
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the messages.")
    source = models.CharField(max_length=300, blank=True, help_text="Provenance.")
    flags = models.JSONField(
        default=list,
        blank=True,
        help_text="Curation flags with reasons (harmful, ...).",
    )
    is_held_out = models.BooleanField(
        default=False, help_text="Kept for evaluation; never published for labelling."
    )
    eval_split = models.CharField(
        max_length=4,
        choices=[("dev", "dev"), ("test", "test")],
        default="test",
        help_text="For a held-out prompt: 'dev' for choosing settings, 'test' for the "
        "figures reported (never tuned on). Ignored for pool prompts.",
    )
    held_for_review = models.BooleanField(
        default=False,
        help_text="Flagged as harmful on arrival: never published until an admin "
        "releases it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "content_hash"], name="unique_prompt_per_project"
            )
        ]

    def __str__(self) -> str:
        return self.text()[:60]

    def save(self, *args, **kwargs) -> None:
        self.messages = normalise_messages(self.messages)
        self.content_hash = messages_hash(self.messages)
        super().save(*args, **kwargs)

    def text(self) -> str:
        """Return the last user message, the prompt's gist for display."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else self.messages[-1]["content"]


class Round(models.Model):
    """A labelling round: the candidates one policy generated for a set of prompts."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="rounds"
    )
    number = models.PositiveIntegerField()
    policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.PROTECT, related_name="rounds"
    )
    sampling = models.JSONField(default=dict, blank=True)
    strategy = models.CharField(max_length=30, default="fresh")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "number"], name="unique_round_number"
            )
        ]

    def __str__(self) -> str:
        return f"{self.project} round {self.number}"


class RankingTask(models.Model):
    """One prompt with K candidate responses, to be ranked by `overlap` annotators."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    round = models.ForeignKey(
        Round, null=True, blank=True, on_delete=models.CASCADE, related_name="tasks"
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    overlap = models.PositiveSmallIntegerField(
        default=3, help_text="Rankings wanted; copied from the project at creation."
    )
    ranking_count = models.PositiveIntegerField(
        default=0,
        help_text="Submitted (non-skip) rankings; updated with each submission.",
    )
    is_gold = models.BooleanField(default=False)
    gold_order = models.JSONField(
        null=True, blank=True, help_text="Known order as tie groups of response ids."
    )
    consensus_order = models.JSONField(
        null=True, blank=True, help_text="Consensus as tie groups, updated on submit."
    )
    adjudicated_order = models.JSONField(null=True, blank=True)
    adjudicated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    adjudicated_at = models.DateTimeField(null=True, blank=True)
    agreement = models.FloatField(
        null=True, blank=True, help_text="Pairwise agreement among its rankings."
    )
    selection_score = models.FloatField(
        default=0.0, help_text="Priority from the round's selection strategy."
    )
    source = models.CharField(
        max_length=300, blank=True, help_text="Import provenance."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "ranking_count"]),
            # The assignment queue (annotation/assignment.py): open non-gold tasks in
            # priority order, so `next_task` reads a few index entries, not the project.
            models.Index(
                F("project"),
                F("overlap") - F("ranking_count"),
                F("selection_score").desc(),
                F("created_at"),
                F("id"),
                name="task_queue_order",
                condition=Q(is_gold=False, ranking_count__lt=F("overlap")),
            ),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.project})"


class Response(models.Model):
    """A candidate response shown in a task, with the policy and sampling that wrote it."""

    task = models.ForeignKey(
        RankingTask, on_delete=models.CASCADE, related_name="responses"
    )
    policy = models.ForeignKey(
        Policy, on_delete=models.PROTECT, related_name="responses"
    )
    text = models.TextField()
    sampling = models.JSONField(default=dict, blank=True)
    position = models.PositiveSmallIntegerField(default=0, help_text="Display order.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task", "position", "id"]

    def __str__(self) -> str:
        return f"response {self.pk}"


class Handles:
    """A task's responses as annotators name them: handles 1..K in display order.

    Annotators must not be able to tell which policy wrote a response, and database
    ids follow insertion: everything an annotator sees or sends (the workspace, the
    API, their history) names responses by handle, and the service layer maps
    handles to response ids here. Researchers and admins keep ids. A task's handles
    are stable: display positions never change once the task is published.
    """

    def __init__(self, response_ids: Iterable[int]) -> None:
        """Take the task's response ids in display order (position, then id)."""
        self.ids = list(response_ids)
        self._handle = {rid: h for h, rid in enumerate(self.ids, start=1)}

    @classmethod
    def of_task(cls, task_id: int) -> Handles:
        """Return the handles of the task's responses (one query)."""
        return cls(
            Response.objects.filter(task_id=task_id)
            .order_by("position", "id")
            .values_list("pk", flat=True)
        )

    def __len__(self) -> int:
        return len(self.ids)

    def numbers(self) -> range:
        """Return the handles, 1..K."""
        return range(1, len(self.ids) + 1)

    def response_id(self, handle: object) -> int:
        """Return the response id of a handle (an int, or digits as a JSON key gives).

        Raise ValidationError naming the handles the task has.
        """
        if isinstance(handle, str) and handle.isascii() and handle.isdigit():
            handle = int(handle) if len(handle) < 20 else 0
        if (
            isinstance(handle, int)
            and not isinstance(handle, bool)
            and 1 <= handle <= len(self.ids)
        ):
            return self.ids[handle - 1]
        raise ValidationError(
            f"unknown response {handle!r:.40}; this task's responses are 1 to "
            f"{len(self.ids)}"
        )

    def handle(self, response_id: int) -> int:
        """Return the handle of one of the task's response ids."""
        return self._handle[response_id]

    def order_to_ids(self, order: object) -> list[list[int]]:
        """Validate an order of handles (see `Ranking.validate_order`) and return it
        as tie groups of response ids."""
        groups = Ranking.validate_order(order, self.numbers())
        return [[self.ids[h - 1] for h in group] for group in groups]

    def order_to_handles(self, order: list[list[int]]) -> list[list[int]]:
        """Return a stored order (tie groups of response ids) in handles."""
        return [[self._handle[rid] for rid in group] for group in order]


class Lease(models.Model):
    """A task slot held by one annotator until it expires or they submit."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"

    task = models.ForeignKey(
        RankingTask, on_delete=models.CASCADE, related_name="leases"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases"
    )
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.ACTIVE
    )
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task", "annotator"], name="one_lease_per_task_and_annotator"
            )
        ]
        indexes = [
            models.Index(fields=["task", "status", "expires_at"]),
            models.Index(fields=["annotator", "status"], name="lease_annotator_status"),
        ]

    def __str__(self) -> str:
        return f"lease of task {self.task_id} to {self.annotator_id}"


class CurrentRankings(models.Manager):
    """Rankings that count: the current version of each (annotation.revisions)."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(is_current=True)


class Ranking(models.Model):
    """What one annotator said about one task: an order with ties, or a skip.

    `order` is a list of tie groups of response ids, best first: [[3], [1, 4], [2]]
    means 3 is best, 1 and 4 tie, 2 is worst. A pairwise project's judgement is an
    order of its two responses plus a `strength` (`validate_strength`).

    A revision (annotation.revisions) stores a new version that `supersedes` the old
    one, which stays for audit with `is_current` false. `Ranking.objects` (the
    default manager, so also `task.rankings`) returns current versions only;
    `Ranking.versions` returns every version. Joins through `rankings__` and raw SQL
    must filter `is_current` themselves.
    """

    task = models.ForeignKey(
        RankingTask, on_delete=models.CASCADE, related_name="rankings"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings"
    )
    lease = models.OneToOneField(
        Lease, null=True, blank=True, on_delete=models.SET_NULL, related_name="ranking"
    )
    order = models.JSONField(default=list, blank=True)
    is_skip = models.BooleanField(default=False)
    skip_reason = models.TextField(blank=True)
    all_bad = models.BooleanField(default=False, help_text="All responses are bad.")
    unsafe_response_ids = models.JSONField(default=list, blank=True)
    rationale = models.TextField(blank=True)
    rewrite = models.TextField(
        blank=True, help_text="A better response written by the annotator (SFT data)."
    )
    aspect_ratings = models.JSONField(
        default=dict, blank=True, help_text="{response_id: {aspect: 1..7}}."
    )
    strength = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Pairwise: how much better the first group is, 1 to the project's "
        "levels; 0 for 'about the same' (a tie). Empty for K-wise rankings.",
    )
    server_seconds = models.FloatField(null=True, blank=True)
    active_seconds = models.FloatField(null=True, blank=True)
    source = models.CharField(
        max_length=300, blank=True, help_text="Import provenance."
    )
    is_current = models.BooleanField(
        default=True, help_text="False once a revision superseded this version."
    )
    supersedes = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="superseded_by",
        help_text="The earlier version this revision replaced.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    versions = models.Manager()
    objects = CurrentRankings()  # the default (Meta.default_manager_name)

    class Meta:
        ordering = ["id"]
        default_manager_name = "objects"
        base_manager_name = "versions"
        constraints = [
            models.UniqueConstraint(
                fields=["task", "annotator"],
                condition=Q(is_current=True),
                name="one_current_ranking_per_task_and_annotator",
            )
        ]

    def __str__(self) -> str:
        return f"ranking {self.pk} of task {self.task_id}"

    @staticmethod
    def validate_order(
        order: object, response_ids: set[int] | list[int]
    ) -> list[list[int]]:
        """Return `order` as tie groups if it ranks each response exactly once.

        `response_ids`: the names the order uses, response ids for researchers'
        orders, handles for annotators' (see `Handles.order_to_ids`). Raise
        ValidationError naming the problem: not a list of groups, an empty group, a
        missing, repeated or unknown response.
        """
        expected = set(response_ids)
        if not isinstance(order, list) or not order:
            raise ValidationError(
                f"order must be a non-empty list of tie groups, got {order!r}"[:300]
            )
        # The count first, stopping at one past the task's responses: the work an
        # order costs is bounded by the task, however long the list sent.
        count = 0
        for group in order:
            count += len(group) if isinstance(group, list) else 1
            if count > len(expected):
                raise ValidationError(
                    f"order ranks more responses than this task's {len(expected)} "
                    f"responses; rank each of {sorted(expected)} exactly once"
                )
        groups: list[list[int]] = []
        seen: set[int] = set()
        repeated: set[int] = set()
        for group in order:
            if isinstance(group, int) and not isinstance(group, bool):
                group = [group]
            if not isinstance(group, list) or not group:
                raise ValidationError(
                    f"each tie group must be a non-empty list, got {group!r}"[:300]
                )
            for rid in group:
                if not isinstance(rid, int) or isinstance(rid, bool):
                    raise ValidationError(
                        f"responses must be named by integers, got {rid!r}"[:300]
                    )
                (repeated if rid in seen else seen).add(rid)
            groups.append(list(group))
        if repeated:
            raise ValidationError(
                f"responses ranked more than once: {sorted(repeated)}"
            )
        unknown = sorted(seen - expected)
        if unknown:
            raise ValidationError(
                f"unknown responses {unknown}; this task's responses are {sorted(expected)}"
            )
        missing = sorted(expected - seen)
        if missing:
            raise ValidationError(
                f"responses missing from the order: {missing}; rank every response"
            )
        return groups

    @staticmethod
    def validate_strength(
        strength: object, groups: list[list[int]], project: Project
    ) -> int | None:
        """Return the strength of a judgement of `project`, checked against its order.

        A K-wise project takes none. A pairwise project needs one: an integer from 1
        to its number of levels when the order prefers one response, 0 when the
        order ties the two ("about the same"). Raise ValidationError naming the
        problem.
        """
        if project.mode != Project.Mode.PAIRWISE:
            if strength is not None:
                raise ValidationError(
                    f"project {project.name} ranks responses; a strength ({strength!r}) "
                    "is only for pairwise projects, leave it out"[:300]
                )
            return None
        levels = len(project.strength_labels)
        if (
            not isinstance(strength, int)
            or isinstance(strength, bool)
            or not 0 <= strength <= levels
        ):
            raise ValidationError(
                f"a pairwise judgement needs a strength from 0 (about the same) to "
                f"{levels} ({project.strength_labels[-1]}), got {strength!r}"[:300]
            )
        is_tie = len(groups) == 1
        if is_tie != (strength == 0):
            raise ValidationError(
                "strength 0 means about the same: give it with both responses in one "
                f"tie group, and 1 to {levels} with the better response first; got "
                f"strength {strength} for order {groups}"
            )
        return strength

    def rank_of(self) -> dict[int, int]:
        """Return each response id's rank (0 is best; tied responses share a rank)."""
        return {rid: rank for rank, group in enumerate(self.order) for rid in group}

    def pairs(self) -> list[tuple[int, int, int]]:
        """Return every ordered pair of differing rank as (chosen, rejected, margin).

        The margin is the rank distance; tied responses yield no pair.
        """
        return order_to_pairs(self.order)


def order_to_pairs(order: list[list[int]]) -> list[tuple[int, int, int]]:
    """Return every (chosen, rejected, margin) pair of an order of tie groups."""
    pairs = []
    for (i, better), (j, worse) in combinations(enumerate(order), 2):
        for chosen in better:
            for rejected in worse:
                pairs.append((chosen, rejected, j - i))
    return pairs


class JobState(models.Model):
    """The state of a job the worker runs for a row of the database: queued,
    running (`progress`, `heartbeat_at` from `config.workers.start_heartbeat`,
    `worker` the process running it), then done or failed (`error` says why).

    The one home of these fields for an import (`ImportReport`), a snapshot's freeze
    (`Snapshot`), an export's build (`SnapshotExport`), a comparison of two
    snapshots (`SnapshotComparison`) and a large project's page figures
    (`ProjectFigures`); claiming a queued row and failing the running
    ones whose worker was lost are `config.workers.claim` and
    `config.workers.fail_lost`.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.DONE
    )
    progress = models.FloatField(
        default=0.0, help_text="Share of the job done so far, 0 to 1."
    )
    error = models.TextField(blank=True, help_text="Why the job failed.")
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Written every few seconds while the worker runs the job.",
    )
    worker = models.CharField(
        max_length=300,
        blank=True,
        help_text="host:pid:start time of the process running the job "
        "(config.workers.current_worker): while it runs, the job is not lost.",
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def is_finished(self) -> bool:
        """Return whether the job has ended (done or failed)."""
        return self.status in (self.Status.DONE, self.Status.FAILED)


class FrozenSnapshots(models.Manager):
    """Snapshots whose pairs have landed: the only ones a round, an export or a
    comparison may read (a queued, running or failed freeze has no pairs)."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(status=Snapshot.Status.DONE)


class Snapshot(JobState):
    """An immutable, named selection of preference pairs with the rules that made it.

    The pages and the API queue a freeze for the worker (`annotation.snapshots.
    queue_freeze`): the row names the filter and rules at once, then is queued,
    running (`progress`, `heartbeat_at`), and done (its pairs, stats and hash land
    with the status, in one transaction) or failed (`error` says why; nothing
    landed). `Snapshot.objects` holds the done ones; `Snapshot.any_state` all.
    Commands and the loop freeze in their own process (`freeze_snapshot`).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Freezing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(
        Project, on_delete=models.PROTECT, related_name="snapshots"
    )
    name = models.CharField(max_length=200)
    filter = models.JSONField(default=dict, blank=True)
    pair_rule = models.CharField(max_length=30, default="all_pairs")
    tie_rule = models.CharField(max_length=30, default="drop")
    dedup_rule = models.CharField(max_length=30, default="none")
    margin_rule = models.CharField(
        max_length=30, default="rank", help_text="How a pair's margin is computed."
    )
    rewrite_rule = models.CharField(
        max_length=30,
        default="sft",
        help_text="Whether annotators' rewrites are also chosen responses of pairs.",
    )
    stats = models.JSONField(
        default=dict,
        blank=True,
        help_text="Counts, agreement and lengths at freeze time.",
    )
    row_count = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # JobState's fields, its status labelled as a freeze and a done row's progress 1.
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.DONE
    )
    progress = models.FloatField(
        default=1.0, help_text="Share of a queued freeze done so far, 0 to 1."
    )

    any_state = models.Manager()
    objects = FrozenSnapshots()  # the default (Meta.default_manager_name)

    class Meta:
        ordering = ["-created_at", "-id"]
        default_manager_name = "objects"
        base_manager_name = "any_state"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], name="unique_snapshot_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.row_count} pairs, {self.sha256[:12]})"


class SnapshotPair(models.Model):
    """One frozen preference pair of a snapshot; texts live in immutable responses."""

    snapshot = models.ForeignKey(
        Snapshot, on_delete=models.CASCADE, related_name="pairs"
    )
    ranking = models.ForeignKey(
        Ranking, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    task = models.ForeignKey(RankingTask, on_delete=models.PROTECT, related_name="+")
    chosen = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    rejected = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    margin = models.FloatField(default=1.0)
    annotator_label = models.CharField(
        max_length=50,
        blank=True,
        help_text="Pseudonymous annotator id, stable per snapshot.",
    )

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.snapshot_id}: {self.chosen_id} > {self.rejected_id}"


class SnapshotRanking(models.Model):
    """One order (tie groups of response ids) a snapshot's pairs were derived from.

    Kept so that list-form and SFT exports read exactly the orders that were frozen.
    """

    snapshot = models.ForeignKey(
        Snapshot, on_delete=models.CASCADE, related_name="rankings"
    )
    task = models.ForeignKey(RankingTask, on_delete=models.PROTECT, related_name="+")
    ranking = models.ForeignKey(
        Ranking, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    order = models.JSONField(help_text="Tie groups of response ids, best first.")
    annotator_label = models.CharField(max_length=50, blank=True)
    rewrite = models.TextField(blank=True, help_text="The annotator's better response.")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.snapshot_id}: task {self.task_id}"


class SnapshotExport(JobState):
    """One export of a done snapshot in one set of options, built by the worker.

    A snapshot never changes, so an export with the same options is built once, into
    a file under EXPORT_DIR (`annotation.export.export_path`), and every later download
    sends that file. A download that finds no file queues this row's build
    (`annotation.export.queue_export`) unless the snapshot is small enough to build in
    the request (REQUEST_MAX_PAIRS): a million pairs take some 10 s, past what a web
    request may hold.
    """

    snapshot = models.ForeignKey(
        Snapshot, on_delete=models.CASCADE, related_name="exports"
    )
    fmt = models.CharField(max_length=20, help_text="trl, kto, ranking, hh or sft.")
    style = models.CharField(max_length=20)
    prompt = models.CharField(max_length=20)
    file_format = models.CharField(max_length=20)
    rows = models.PositiveIntegerField(default=0, help_text="Rows written.")
    size = models.PositiveBigIntegerField(default=0, help_text="Bytes of the file.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["snapshot", "fmt", "style", "prompt", "file_format"],
                name="unique_snapshot_export",
            )
        ]

    def __str__(self) -> str:
        return f"export of snapshot {self.snapshot_id} as {self.fmt} {self.file_format}"

    def options(self) -> dict[str, str]:
        """Return the export's options, as `annotation.export` takes them."""
        return {
            "fmt": self.fmt,
            "style": self.style,
            "prompt": self.prompt,
            "file_format": self.file_format,
        }


class SnapshotComparison(JobState):
    """The comparison of snapshot `a` with snapshot `b`, computed by the worker and
    kept (`annotation.snapshots.queue_comparison`).

    Snapshots never change, so a comparison is computed once; `result` holds the
    `SnapshotDiff` without its two snapshots. Two snapshots of up to
    REQUEST_MAX_PAIRS pairs each are compared in the request instead.
    """

    a = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="+")
    b = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="+")
    result = models.JSONField(
        default=dict, blank=True, help_text="The SnapshotDiff's fields but a and b."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["a", "b"], name="unique_snapshot_comparison"
            )
        ]

    def __str__(self) -> str:
        return f"comparison of snapshot {self.a_id} with {self.b_id}"


class ProjectFigures(JobState):
    """The figures of a project page that reads every ranking (the dashboard, the
    overview's leaderboards and agreement), computed by the worker and kept
    (`annotation.figures`).

    A project of up to REQUEST_MAX_RANKINGS rankings has them computed in the request;
    a larger one's page shows the kept figures, as of `computed_at`, and queues a new
    computation when rankings came in since (`fingerprint`) or they are older than
    FIGURES_MAX_AGE seconds.
    """

    class Page(models.TextChoices):
        DASHBOARD = "dashboard", "Dashboard"
        OVERVIEW = "overview", "Overview"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    page = models.CharField(max_length=20, choices=Page.choices)
    result = models.JSONField(
        default=dict,
        blank=True,
        help_text="The page's figures, as its template reads them.",
    )
    fingerprint = models.CharField(
        max_length=100,
        blank=True,
        help_text="The rankings the figures were computed from: count and newest id.",
    )
    computed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="Whose visit asked for the last computation.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "page"], name="unique_project_figures"
            )
        ]

    def __str__(self) -> str:
        return f"{self.page} figures of {self.project}"

    def rankings_seen(self) -> int | None:
        """Return how many rankings the kept figures were computed from."""
        head = self.fingerprint.split(":", 1)[0]
        return int(head) if head.isdigit() else None


class ApiToken(models.Model):
    """A per-user API token; only its SHA-256 is stored, the token is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="What the token is for.")
    prefix = models.CharField(
        max_length=12, help_text="First characters, to recognise it."
    )
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(
        default=list, help_text="What it may do: read, annotate, data, admin."
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Empty: never expires."
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_active(self) -> bool:
        """Return whether the token still authenticates."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class ImportReport(JobState):
    """One upload the worker imports: its job's state and progress, then its outcome.

    An upload is staged and imported by the worker (`annotation.importing`): the
    report is queued, running (`progress` is the share done, `records` the records
    read so far, `heartbeat_at` says the worker is alive), then done or failed
    (`error` says why: a cap, an unreadable file, a lost worker). Its `kind` says
    what the file is: preference data (the outcome is the counts, `is_applied` and
    every rejected record), a prompt file for the pool or a corpus (the outcome is
    in `details`: the curation report by line, or the corpus made; `options` holds
    what the upload asked for).
    """

    class Kind(models.TextChoices):
        PREFERENCES = "preferences", "Preference data"
        PROMPTS = "prompts", "Prompt file"
        CORPUS = "corpus", "Corpus"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="imports"
    )
    source = models.CharField(
        max_length=300, help_text="File name the records came from."
    )
    format = models.CharField(max_length=30)
    skip_invalid = models.BooleanField(default=False)
    is_applied = models.BooleanField(
        default=False, help_text="Whether anything was written (all or nothing)."
    )
    records = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    prompts_created = models.PositiveIntegerField(default=0)
    rankings_created = models.PositiveIntegerField(default=0)
    rejected = models.JSONField(default=list, blank=True, help_text="[{line, reason}].")
    kind = models.CharField(
        max_length=20, choices=Kind.choices, default=Kind.PREFERENCES
    )
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text="What a prompt or corpus upload asked for (held out; name, kind, filters).",
    )
    details = models.JSONField(
        default=dict,
        blank=True,
        help_text="A prompt or corpus upload's outcome: its curation report by line, "
        "or the corpus made.",
    )
    staged_path = models.CharField(
        max_length=500,
        blank=True,
        help_text="The staged upload the worker reads; removed when the job ends.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"import of {self.source} into {self.project}"


class Corpus(models.Model):
    """A curated text file of a project: pre-training documents or demonstrations.

    Written only by `annotation.corpora.build_corpus`: the upload is curated
    (`annotation.curation`), the kept records go to `path` by atomic rename, and
    `sha256` is the file's hash; a training round names it as its data. Never
    changed afterwards.
    """

    class Kind(models.TextChoices):
        TEXT = "text", "Pre-training text"
        DEMONSTRATIONS = "demonstrations", "Demonstrations (prompt/completion)"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="corpora"
    )
    name = models.SlugField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.TEXT)
    source = models.CharField(
        max_length=300, help_text="File name the records came from."
    )
    path = models.CharField(
        max_length=500, help_text="The curated JSONL file (text or prompt/completion)."
    )
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the curated file.")
    records = models.PositiveIntegerField(
        default=0, help_text="Records read, readable or not."
    )
    kept = models.PositiveIntegerField(default=0)
    filters = models.JSONField(
        default=dict, blank=True, help_text="The curation's thresholds."
    )
    report = models.JSONField(
        default=dict,
        blank=True,
        help_text="Counts and sample records per reason a record was dropped.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "corpora"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], name="unique_corpus_name"
            )
        ]

    def __str__(self) -> str:
        return f"corpus {self.name} of {self.project}"

    def get_absolute_url(self) -> str:
        return reverse("data:corpus", args=[self.project.name, self.name])

    def lineage(self) -> dict:
        """Return what a model trained on it records: name, kind, hash, filters."""
        return {
            "name": self.name,
            "kind": self.kind,
            "sha256": self.sha256,
            "records": self.kept,
            "filters": self.filters,
        }


class AuditEntry(models.Model):
    """One change by an admin or researcher: who, when, what, before and after.

    Written only by `annotation.audit.record`, inside the transaction of the change;
    never edited or deleted (no page, API operation or admin action does).
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_entries",
        help_text="Who changed it; empty for a command run without a user.",
    )
    actor_name = models.CharField(
        max_length=150, blank=True, help_text="The actor's username, kept if they go."
    )
    action = models.SlugField(max_length=60, db_index=True)
    project = models.ForeignKey(
        Project,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_entries",
    )
    object_type = models.CharField(max_length=60, blank=True)
    object_id = models.CharField(max_length=60, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return (
            f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name or '-'} {self.action}"
        )
