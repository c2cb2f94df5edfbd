"""Who ranks what: leasing the next task, submitting a ranking, skipping a task.

Invariants kept by the functions here (tests in tests/annotation/test_assignment.py
and test_rankings.py):

- a non-gold task never has more submitted rankings than its `overlap`, and never
  more submitted rankings plus active unexpired leases than its `overlap`;
- an annotator holds at most one lease per task (a database constraint) and at most
  one active lease per project;
- `RankingTask.ranking_count`, `consensus_order` and `agreement` always describe the
  task's stored non-skip rankings: they change in the transaction that adds one.

Concurrency: every function runs in one transaction. On PostgreSQL the candidate
tasks are taken with `SELECT ... FOR UPDATE SKIP LOCKED`, so annotators asking at once
never lock the same slot, and the lease count is re-read, by the statement that
inserts the lease, once the row is locked (a row that was unlocked between the scan
and the lock would otherwise pass with a stale count). Requests of one annotator are
serialised by locking their profile row.
On SQLite the IMMEDIATE transactions of the settings serialise every writer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from annotation import consensus
from annotation.gold import apply_gold_rule
from annotation.models import (
    AnnotatorProfile,
    Handles,
    Lease,
    Project,
    Ranking,
    RankingTask,
    Response,
)

# Limits of what one submission may hold (the API schema and the forms say the same).
MAX_RESPONSES = 100
MAX_ASPECTS = 20
RATIONALE_MAX_CHARS = 20_000
REWRITE_MAX_CHARS = 50_000

# How many locked candidates one scan takes before re-checking their lease counts.
CANDIDATE_BATCH = 8
# How many scans before giving up when every candidate turned out full (contention).
MAX_SCANS = 5


@dataclass(frozen=True)
class RankingSubmission:
    """What an annotator submits for a leased task: the order and what goes with it.

    Responses are named by handle (1..K in display order, `models.Handles`), never
    by database id: the service maps handles to ids when it checks the submission.
    `order`: tie groups of handles, best first, as posted (validated when stored);
    `unsafe`: handles of responses flagged unsafe; `aspect_ratings`:
    {handle: {aspect: 1..7}}; `active_seconds`: active time the page measured;
    `strength`: a pairwise project's strength level (`Ranking.validate_strength`).
    """

    order: object
    all_bad: bool = False
    unsafe: tuple[int, ...] | list[int] = ()
    rationale: str = ""
    rewrite: str = ""
    aspect_ratings: Mapping = field(default_factory=dict)
    active_seconds: float | None = None
    strength: int | None = None

    def __post_init__(self) -> None:
        """Refuse sizes no task needs and non-finite times, before any database work."""
        for name, limit in (
            ("rationale", RATIONALE_MAX_CHARS),
            ("rewrite", REWRITE_MAX_CHARS),
        ):
            text = getattr(self, name)
            if not isinstance(text, str):
                raise ValidationError(f"{name} must be text, got {type(text).__name__}")
            if len(text) > limit:
                raise ValidationError(
                    f"{name} has {len(text):,} characters; the limit is {limit:,}"
                )
        for name in ("unsafe", "aspect_ratings"):
            if len(getattr(self, name)) > MAX_RESPONSES:
                raise ValidationError(
                    f"{name} names {len(getattr(self, name)):,} responses; a task has "
                    f"at most {MAX_RESPONSES}"
                )
        seconds = self.active_seconds
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ValidationError(
                f"active_seconds must be a finite number of seconds >= 0, got {seconds!r}"
            )


class AnnotatorPaused(PermissionDenied):
    """The annotator is paused (failed gold tasks) until an admin reinstates them.

    A PermissionDenied, so the API answers 403 with the reason (config/api.py).
    """


class LateSubmissionRefused(Exception):
    """The lease expired and other annotators have filled the task's overlap since."""


def _lock_profile(user: AbstractBaseUser) -> AnnotatorProfile:
    """Lock the annotator's profile row (creating it on first use) and return it.

    One raw statement when the profile exists (every request but the first): this
    runs on every submission, where building the ORM query cost more CPU than the
    database spends on it.
    """
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, is_paused, paused_reason FROM {AnnotatorProfile._meta.db_table} "
            f"WHERE user_id = %s{lock}",
            [user.pk],
        )
        row = cursor.fetchone()
    if row is None:
        return AnnotatorProfile.objects.select_for_update().get_or_create(user=user)[0]
    profile_id, is_paused, paused_reason = row
    return _loaded(
        AnnotatorProfile(
            pk=profile_id,
            user_id=user.pk,
            is_paused=bool(is_paused),
            paused_reason=paused_reason,
        )
    )


def _loaded(instance):
    """Mark a model instance built from a raw row as one read from the database."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def _datetime(value: datetime | str) -> datetime:
    """Return an aware datetime from a raw datetime column (SQLite gives UTC text)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if timezone.is_aware(value):
        return value
    return timezone.make_aware(value, UTC)


def leased_task(
    lease_id: int, user: AbstractBaseUser, project: Project
) -> tuple[Lease, list[int]] | None:
    """Return the user's lease with this id in the project and its task's response ids
    (display order), or None when the user holds no such lease. One statement.
    """
    leases, tasks, responses = (
        Lease._meta.db_table,
        RankingTask._meta.db_table,
        Response._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT l.task_id, l.status, l.leased_at, l.expires_at, r.id "
            f"FROM {leases} l JOIN {tasks} t ON t.id = l.task_id "
            f"LEFT JOIN {responses} r ON r.task_id = l.task_id "
            "WHERE l.id = %s AND l.annotator_id = %s AND t.project_id = %s "
            "ORDER BY r.position, r.id",
            [lease_id, user.pk, project.pk],
        )
        rows = cursor.fetchall()
    if not rows:
        return None
    task_id, status, leased_at, expires_at, _ = rows[0]
    lease = Lease(
        pk=lease_id,
        task_id=task_id,
        annotator=user,
        status=status,
        leased_at=_datetime(leased_at),
        expires_at=_datetime(expires_at),
    )
    return _loaded(lease), [row[4] for row in rows if row[4] is not None]


def is_gold_due(gold_seen: int, seen: int, gold_rate: float) -> bool:
    """Return whether the annotator's next task should be a gold task.

    Gold tasks are spread evenly: the (n+1)-th task is gold when fewer than
    floor(gold_rate * (n + 1)) of the first n were gold. A rate of 0.1 makes the
    10th, 20th, ... task gold; a rate of 1 makes every task gold.
    """
    return gold_seen < math.floor(gold_rate * (seen + 1) + 1e-9)


def _gold_candidates(project: Project, user: AbstractBaseUser) -> QuerySet:
    """Return the gold tasks the annotator has never leased, oldest first.

    Gold tasks score every annotator: the overlap does not cap them.
    """
    mine = Lease.objects.filter(task=OuterRef("pk"), annotator=user)
    return (
        RankingTask.objects.filter(project=project, is_gold=True)
        .exclude(Exists(mine))
        .order_by("created_at", "id")
    )


def _lease_one(
    project: Project, user: AbstractBaseUser, now: datetime, *, gold: bool
) -> Lease | None:
    """Lock a free candidate task, re-check its slots, and lease it; None if none."""
    if not gold:
        return _lease_open_task(project, user, now)
    task_id = (
        _gold_candidates(project, user)
        .select_for_update(skip_locked=True, of=("self",))
        .values_list("pk", flat=True)
        .first()
    )
    if task_id is None:
        return None
    return Lease.objects.create(
        task_id=task_id,
        annotator=user,
        leased_at=now,
        expires_at=now + timedelta(minutes=project.lease_minutes),
    )


def _lease_open_task(
    project: Project, user: AbstractBaseUser, now: datetime
) -> Lease | None:
    """Lease the highest-priority open non-gold task; None if none is free.

    Candidates: tasks the annotator never leased whose rankings plus active unexpired
    leases are below their overlap; fewest rankings missing first, then highest
    selection score, then oldest. Two statements per try: lock up to
    CANDIDATE_BATCH candidates (SKIP LOCKED on PostgreSQL), then insert the lease for
    the first of them whose slots, re-counted by this fresh statement, are still
    free: a row unlocked between the scan's snapshot and its lock may have gained a
    lease the scan did not see. Raw SQL, as these run on every submission and
    building them with the ORM cost more CPU than the database spends on them
    (bench/annotation_load.py).
    """
    tasks, leases = RankingTask._meta.db_table, Lease._meta.db_table
    has_lock = connection.features.has_select_for_update
    lock = " FOR UPDATE OF t SKIP LOCKED" if has_lock else ""
    at = connection.ops.adapt_datetimefield_value(now)
    expires = now + timedelta(minutes=project.lease_minutes)
    open_leases = (
        f"(SELECT COUNT(*) FROM {leases} l WHERE l.task_id = t.id AND l.status = %s "
        "AND l.expires_at > %s)"
    )
    # The ORDER BY matches the partial index `task_queue_order` on PostgreSQL.
    priority = (
        "(t.overlap - t.ranking_count), t.selection_score DESC, t.created_at, t.id"
    )
    scan = (
        f"SELECT t.id FROM {tasks} t WHERE t.project_id = %s AND NOT t.is_gold "
        "AND t.ranking_count < t.overlap "
        f"AND NOT EXISTS (SELECT 1 FROM {leases} m WHERE m.task_id = t.id "
        "AND m.annotator_id = %s) "
        f"AND t.ranking_count < t.overlap - {open_leases} "
        f"ORDER BY {priority} LIMIT %s{lock}"
    )
    with connection.cursor() as cursor:
        for _ in range(MAX_SCANS):
            cursor.execute(
                scan, [project.pk, user.pk, Lease.Status.ACTIVE, at, CANDIDATE_BATCH]
            )
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return None
            cursor.execute(
                f"INSERT INTO {leases} (task_id, annotator_id, status, leased_at, "
                "expires_at, closed_at) "
                f"SELECT t.id, %s, %s, %s, %s, NULL FROM {tasks} t "
                f"WHERE t.id IN ({', '.join(['%s'] * len(ids))}) "
                f"AND t.ranking_count < t.overlap - {open_leases} "
                f"ORDER BY {priority} LIMIT 1 RETURNING id, task_id",
                [
                    user.pk,
                    Lease.Status.ACTIVE,
                    at,
                    connection.ops.adapt_datetimefield_value(expires),
                    *ids,
                    Lease.Status.ACTIVE,
                    at,
                ],
            )
            row = cursor.fetchone()
            if row is not None:
                return _loaded(
                    Lease(
                        pk=row[0],
                        task_id=row[1],
                        annotator=user,
                        status=Lease.Status.ACTIVE,
                        leased_at=now,
                        expires_at=expires,
                    )
                )
    return None


def _refuse_if_paused(profile: AnnotatorProfile) -> None:
    """Raise AnnotatorPaused, with the reason, when the annotator is paused."""
    if profile.is_paused:
        raise AnnotatorPaused(_pause_message(profile.paused_reason))


def _pause_message(reason: str) -> str:
    return (
        "You are paused in annotation: "
        f"{reason or 'no reason recorded'}. "
        "An admin can reinstate you from the project's gold page."
    )


def _lease_next(
    project: Project, user: AbstractBaseUser, now: datetime, *, may_hold: bool = True
) -> Lease | None:
    """Return the held lease or lease a new task; the caller holds the profile lock.

    `may_hold=False` says the caller has just closed the annotator's active lease in
    this project, so (one active lease per project) none can be held: skip that read.
    """
    mine = Lease.objects.filter(task__project=project, annotator=user)
    if may_hold:
        held = (
            mine.filter(status=Lease.Status.ACTIVE, expires_at__gt=now)
            .select_related("task")
            .first()
        )
        if held is not None:
            return held
    if project.gold_rate > 0:
        counts = mine.aggregate(
            seen=Count("pk"), gold=Count("pk", filter=Q(task__is_gold=True))
        )
        is_due = is_gold_due(counts["gold"], counts["seen"], project.gold_rate)
    else:
        is_due = False
    if is_due:
        lease = _lease_one(project, user, now, gold=True)
        if lease is not None:
            return lease
    return _lease_one(project, user, now, gold=False)


def next_task(
    project: Project, user: AbstractBaseUser, *, now: datetime | None = None
) -> Lease | None:
    """Lease the annotator's next task in the project; return None when none is left.

    Return the annotator's active unexpired lease in the project if they hold one.
    Otherwise take the highest-priority task they have never leased that still needs
    rankings and whose rankings plus other active leases are below its overlap:
    fewest rankings missing first, then highest selection score, then oldest. Gold
    tasks come at the project's gold rate (see `is_gold_due`); when no gold task is
    left a regular one comes instead.

    Raise AnnotatorPaused, with the reason, when the annotator is paused.
    """
    now = now or timezone.now()
    with transaction.atomic():
        _refuse_if_paused(_lock_profile(user))
        return _lease_next(project, user, now)


def held_lease(
    project: Project, user: AbstractBaseUser, *, now: datetime | None = None
) -> Lease | None:
    """Return the annotator's active unexpired lease in the project, or None.

    Read only: what a GET may show (leases are taken by POST, see `next_task`).
    """
    now = now or timezone.now()
    return (
        Lease.objects.filter(
            task__project=project,
            annotator=user,
            status=Lease.Status.ACTIVE,
            expires_at__gt=now,
        )
        .order_by("-leased_at")
        .first()
    )


def pause_reason(user: AbstractBaseUser) -> str | None:
    """Return why the annotator is paused (as `AnnotatorPaused` says it), or None."""
    profile = AnnotatorProfile.objects.filter(user=user, is_paused=True).first()
    return None if profile is None else _pause_message(profile.paused_reason)


def _check_lease_owner(lease: Lease, user: AbstractBaseUser) -> None:
    if lease.annotator_id != user.pk:
        raise PermissionDenied(
            f"lease {lease.pk} belongs to another annotator; take your own task with "
            "the workspace's next task"
        )


def _is_overlap_full(task: RankingTask, lease: Lease, now: datetime) -> bool:
    """Return whether a late submission would exceed the task's overlap."""
    if task.is_gold:
        return False
    others = (
        Lease.objects.filter(task=task, status=Lease.Status.ACTIVE, expires_at__gt=now)
        .exclude(pk=lease.pk)
        .count()
    )
    return task.ranking_count + others >= task.overlap


@dataclass(frozen=True)
class _Checked:
    """A submission validated against its task, in response ids: what
    `_store_ranking` inserts."""

    project: Project
    handles: Handles
    groups: list[list[int]]
    unsafe: list[int]
    ratings: dict
    strength: int | None


def _check(
    lease: Lease,
    submission: RankingSubmission,
    response_ids: Iterable[int] | None,
    project: Project | None,
) -> _Checked:
    """Validate the submission against the lease's task before any transaction opens
    (a task's responses and its project's rules do not change under a submission),
    and map its handles to response ids.

    Raise ValidationError naming the first problem. `response_ids`, `project`: the
    task's (ids in display order), when the caller has read them (else read here).
    """
    if project is None:
        project = Project.objects.get(tasks=lease.task_id)
    handles = (
        Handles.of_task(lease.task_id)
        if response_ids is None
        else Handles(response_ids)
    )
    groups = handles.order_to_ids(submission.order)
    # Checked on the order as the annotator gave it: its message names handles.
    strength = Ranking.validate_strength(
        submission.strength, handles.order_to_handles(groups), project
    )
    unsafe, ratings = _validate_extras(project, handles, submission)
    return _Checked(project, handles, groups, unsafe, ratings, strength)


def _validate_extras(
    project: Project, handles: Handles, submission: RankingSubmission
) -> tuple[list[int], dict]:
    """Return the unsafe flags and aspect ratings in response ids."""
    unsafe = sorted({handles.response_id(_unsafe_handle(h)) for h in submission.unsafe})
    if project.require_rationale and not submission.rationale.strip():
        raise ValidationError(
            "this project requires a rationale: say in a sentence why the best response "
            "is best"
        )
    ratings: dict = {}
    for key, by_aspect in (submission.aspect_ratings or {}).items():
        rid = handles.response_id(key)
        if not isinstance(by_aspect, Mapping):
            raise ValidationError(
                f"aspect ratings of response {key} must map aspect names to ratings, "
                f"got {by_aspect!r}"[:300]
            )
        for aspect, value in by_aspect.items():
            if aspect not in project.aspects:
                raise ValidationError(
                    f"unknown aspect {aspect!r}; this project rates {project.aspects}"
                )
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 1 <= value <= 7
            ):
                raise ValidationError(
                    f"rating of {aspect} for response {key} must be an integer from 1 "
                    f"to 7, got {value!r}"
                )
        if by_aspect:
            ratings[str(rid)] = dict(by_aspect)
    return unsafe, ratings


def _unsafe_handle(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValidationError(
        f"unsafe flags must be response numbers (1 to K), got {value!r}"[:300]
    )


def _close(lease: Lease, status: str, now: datetime) -> None:
    lease.status = status
    lease.closed_at = now
    lease.save(update_fields=["status", "closed_at"])


def submit_ranking(
    lease: Lease,
    user: AbstractBaseUser,
    submission: RankingSubmission,
    *,
    project: Project | None = None,
    now: datetime | None = None,
) -> Ranking:
    """Store the annotator's ranking of the leased task and update the task's figures.

    Idempotent: a lease already answered returns its ranking unchanged. Validate the
    order (every response exactly once, in tie groups), a pairwise project's
    strength, the unsafe flags, the aspect
    ratings (1 to 7, the project's aspects) and the rationale when the project
    requires one, before any transaction opens; raise ValidationError and store
    nothing otherwise. Raise AnnotatorPaused, storing nothing, when the annotator is
    paused. A lease that
    has expired is still accepted while the task's overlap is not full; otherwise
    raise LateSubmissionRefused. In the same transaction: close the lease, count the
    ranking on the task, recompute the task's consensus and agreement, and score a
    gold task (pausing the annotator when their gold accuracy falls below the
    project's threshold). `project`: the lease's project when the caller has it.
    """
    now = now or timezone.now()
    _check_lease_owner(lease, user)
    checked = _check(lease, submission, None, project)
    with transaction.atomic():
        _refuse_if_paused(_lock_profile(user))
        ranking, _, _, _ = _store_ranking(lease, user, submission, checked, now=now)
        return ranking


def submit_ranking_and_lease_next(
    lease: Lease,
    user: AbstractBaseUser,
    submission: RankingSubmission,
    *,
    response_ids: Iterable[int] | None = None,
    project: Project | None = None,
    now: datetime | None = None,
) -> tuple[Ranking, Lease | None]:
    """Store the ranking as `submit_ranking` does and lease the annotator's next task.

    One transaction, one commit: the workspace's submit answers with the next task.
    The next lease is what `next_task` would return in the lease's project (None when
    no task is left). Raise LateSubmissionRefused or ValidationError like
    `submit_ranking`, storing and leasing nothing, and AnnotatorPaused, storing
    nothing, when the annotator is already paused. When this very ranking's gold
    score pauses the annotator the ranking is stored, no task is leased, and
    AnnotatorPaused is raised once the ranking is committed.
    `response_ids`, `project`: the task's response ids and project when the caller
    has already read them.
    """
    now = now or timezone.now()
    _check_lease_owner(lease, user)
    checked = _check(lease, submission, response_ids, project)
    with transaction.atomic():
        # Profile first, then task: the lock order of `next_task`, so the two never
        # deadlock; it also serialises this annotator's requests.
        profile = _lock_profile(user)
        _refuse_if_paused(profile)
        ranking, task, closed_active, paused_now = _store_ranking(
            lease, user, submission, checked, now=now
        )
        if not paused_now:
            following = _lease_next(task.project, user, now, may_hold=not closed_active)
            return ranking, following
    profile.refresh_from_db(fields=["paused_reason"])
    raise AnnotatorPaused(_pause_message(profile.paused_reason))


def _store_ranking(
    lease: Lease,
    user: AbstractBaseUser,
    submission: RankingSubmission,
    checked: _Checked,
    *,
    now: datetime,
) -> tuple[Ranking, RankingTask, bool, bool]:
    """Store the checked ranking inside the caller's transaction (see `submit_ranking`).

    Return the ranking, its `handles` set to the task's (so that an answer to the
    annotator names responses by handle without another query); its task, locked;
    whether an active unexpired lease was closed (False when the ranking was already
    stored or came late); and whether this ranking's gold score paused the annotator.
    """
    task = _lock_task(lease.task_id, checked.project)
    # Only submit and skip close a lease, and both leave a ranking of the lease's
    # (task, annotator): a lease found closed under the task lock is a repeat, and one
    # found open is as the caller read it. Closing it first is that check in one
    # statement; a refusal below rolls it back.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Lease._meta.db_table} SET status = %s, closed_at = %s "
            "WHERE id = %s AND status NOT IN (%s, %s)",
            [
                Lease.Status.SUBMITTED,
                connection.ops.adapt_datetimefield_value(now),
                lease.pk,
                Lease.Status.SUBMITTED,
                Lease.Status.SKIPPED,
            ],
        )
        closed = cursor.rowcount
    if not closed:
        ranking = Ranking.objects.get(task=task, annotator=user)
        ranking.handles = checked.handles
        return ranking, task, False, False
    is_late = lease.status != Lease.Status.ACTIVE or lease.expires_at <= now
    if is_late and _is_overlap_full(task, lease, now):
        raise LateSubmissionRefused(
            "Your lease on this task expired and other annotators have since "
            "given it all the rankings it needs; your ranking was not stored. "
            "Take the next task."
        )
    ranking = _insert_ranking(
        Ranking(
            task=task,
            annotator=user,
            lease=lease,
            order=checked.groups,
            all_bad=submission.all_bad,
            unsafe_response_ids=checked.unsafe,
            rationale=submission.rationale.strip(),
            rewrite=submission.rewrite.strip(),
            aspect_ratings=checked.ratings,
            strength=checked.strength,
            server_seconds=max(0.0, (now - lease.leased_at).total_seconds()),
            active_seconds=submission.active_seconds,
            created_at=now,
        )
    )
    ranking.handles = checked.handles
    lease.status, lease.closed_at = Lease.Status.SUBMITTED, now
    task.ranking_count += 1  # the row is locked: this count is current
    consensus.update_task_figures(task)
    paused_now = False
    if task.is_gold and task.gold_order:
        paused_now = apply_gold_rule(task.project, user)
    return ranking, task, not is_late, paused_now


def _lock_task(task_id: int, project: Project | None) -> RankingTask:
    """Lock the task's row and return the task with the fields a submission needs.

    `project`: the task's project when the caller has it (read here otherwise).
    """
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT project_id, overlap, ranking_count, is_gold, gold_order "
            f"FROM {RankingTask._meta.db_table} WHERE id = %s{lock}",
            [task_id],
        )
        project_id, overlap, count, is_gold, gold_order = cursor.fetchone()
    if project is None or project.pk != project_id:
        project = Project.objects.get(pk=project_id)
    return _loaded(
        RankingTask(
            pk=task_id,
            project=project,
            overlap=overlap,
            ranking_count=count,
            is_gold=bool(is_gold),
            gold_order=RankingTask._meta.get_field("gold_order").from_db_value(
                gold_order, None, connection
            ),
        )
    )


def _insert_ranking(ranking: Ranking) -> Ranking:
    """Insert the ranking with one statement and return it with its id set."""
    fields = [f for f in Ranking._meta.concrete_fields if not f.primary_key]
    values = [
        f.get_db_prep_save(getattr(ranking, f.attname), connection) for f in fields
    ]
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = (
        f"INSERT INTO {Ranking._meta.db_table} ({names}) "
        f"VALUES ({', '.join(['%s'] * len(values))})"
    )
    with connection.cursor() as cursor:
        if connection.features.can_return_columns_from_insert:
            cursor.execute(sql + " RETURNING id", values)
            ranking.pk = cursor.fetchone()[0]
        else:
            cursor.execute(sql, values)
            ranking.pk = cursor.lastrowid
    return _loaded(ranking)


def skip_task(
    lease: Lease, user: AbstractBaseUser, reason: str, *, now: datetime | None = None
) -> Ranking:
    """Record that the annotator skipped the leased task, with their reason.

    The slot returns to the pool (a skip does not count towards the overlap) and the
    annotator is not offered the task again. A skipped gold task scores 0 (see
    `gold.gold_record`), so skipping cannot dodge gold tasks. Idempotent like
    `submit_ranking`. Raise ValidationError when the reason is blank and
    AnnotatorPaused when the annotator is paused.
    """
    now = now or timezone.now()
    _check_lease_owner(lease, user)
    if not reason or not reason.strip():
        raise ValidationError(
            "a skip needs a reason, e.g. 'prompt is not in English' or 'cannot judge code'"
        )
    with transaction.atomic():
        _refuse_if_paused(_lock_profile(user))
        task = (
            RankingTask.objects.select_for_update(of=("self",))
            .select_related("project")
            .get(pk=lease.task_id)
        )
        existing = Ranking.objects.filter(task=task, annotator=user).first()
        if existing is not None:
            return existing
        ranking = Ranking.objects.create(
            task=task,
            annotator=user,
            lease=lease,
            order=[],
            is_skip=True,
            skip_reason=reason.strip(),
            server_seconds=max(0.0, (now - lease.leased_at).total_seconds()),
        )
        _close(lease, Lease.Status.SKIPPED, now)
        if task.is_gold and task.gold_order:
            apply_gold_rule(task.project, user)  # a skipped gold task scores 0
        return ranking
