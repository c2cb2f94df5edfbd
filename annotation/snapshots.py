"""Freezing a project's rankings into an immutable, hashed set of preference pairs.

A snapshot is the filter that selected the rankings, the rules that turned them into
pairs (pair rule, tie rule, deduplication, margin), the pairs themselves, the orders
they came from, and a SHA-256 of the canonical content, so that building the same
filter over the same data gives the same hash and a training round names exactly the
data it learned from.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from itertools import combinations, groupby, islice
from statistics import mean, median

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from annotation.audit import record
from annotation.consensus import borda
from annotation.export import by_ids
from annotation.models import (
    AnnotatorProfile,
    Project,
    Ranking,
    RankingTask,
    Response,
    Round,
    Snapshot,
    SnapshotComparison,
    SnapshotPair,
    SnapshotRanking,
    order_to_pairs,
)
from config import task_queue
from config.workers import (
    HEARTBEAT_SECONDS,
    LOST_AFTER_SECONDS,
    claim,
    fail_lost,
    queue_job,
    run_job,
    start_heartbeat,
)
from inference.models import Policy

# Told the share of a freeze done, 0 to 1.
Progress = Callable[[float], None]
# Pair rows written per statement batch.
STORE_BATCH = 5000

PAIR_RULES = {
    "all_pairs": "every ordered pair of differing rank (InstructGPT)",
    "best_vs_rest": "the best response against each worse one",
    "adjacent": "neighbouring ranks only",
}
TIE_RULES = {
    "drop": "tied responses give no pair",
    "keep": "tied responses give one pair with margin 0 (lower id first)",
}
DEDUP_RULES = {
    "none": "every annotator's pair is kept",
    "exact": "identical (prompt, chosen, rejected) texts are kept once",
    "majority": "pairs over the same two texts are merged by majority vote; even splits drop",
}
REWRITE_RULES = {
    "sft": "rewrites are SFT demonstrations only (the `sft` export)",
    "chosen": (
        "a rewrite ranks one above its order's best and the pair rule applies to that "
        "order: best_vs_rest pairs the rewrite with every response and gives no pair "
        "between them, all_pairs adds its pairs to theirs, adjacent pairs it with the "
        "best (and it stays an SFT demonstration)"
    ),
}
MARGIN_RULES = {
    "rank": (
        "rank distance between chosen and rejected; a pairwise judgement's strength "
        "level (1 = the weakest; a consensus: the mean of the votes agreeing with it)"
    ),
    "aspects": (
        "mean aspect rating of chosen minus rejected (without ratings, as the rank "
        "rule)"
    ),
}
FILTER_KEYS = {
    "rounds": "list of round numbers",
    "policies": "list of policy names; both responses of a pair must come from them",
    "since": "ISO date or datetime; rankings made at or after it",
    "until": "ISO date or datetime; rankings made before it",
    "min_agreement": "number in [0, 1]; tasks whose agreement is at least this",
    "min_reliability": (
        "number in [0, 1]; annotators whose reliability (annotation.quality: agreement "
        "with gold and with the others' consensus) is at least this"
    ),
    "gold": "'include', 'exclude' or 'only'",
    "flagged": "'include' or 'exclude' (unsafe / all-bad rankings, flagged prompts)",
    "skipped": "'include' or 'exclude' (tasks any annotator skipped)",
    "votes": "'every' (each annotator's ranking) or 'consensus' (one order per task)",
    "adjudicated": "true (an adjudicated order replaces the votes) or false",
    "simulated": "'include', 'exclude' or 'only' (simulated annotators)",
}
DEFAULT_FILTER = {
    "gold": "include",
    "flagged": "include",
    "skipped": "include",
    "votes": "every",
    "adjudicated": True,
    "simulated": "include",
}
_CHOICES = {
    "gold": ("include", "exclude", "only"),
    "flagged": ("include", "exclude"),
    "skipped": ("include", "exclude"),
    "votes": ("every", "consensus"),
    "simulated": ("include", "exclude", "only"),
}


def clean_filter(raw: dict | None) -> dict:
    """Return the filter with defaults filled in, keys sorted.

    Raise ValidationError naming the bad key or value and what is expected.
    """
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(FILTER_KEYS))
    if unknown:
        raise ValidationError(
            f"unknown filter keys {unknown}; expected some of {sorted(FILTER_KEYS)}"
        )
    cleaned = {**DEFAULT_FILTER, **{k: v for k, v in raw.items() if v is not None}}
    for key, allowed in _CHOICES.items():
        if cleaned[key] not in allowed:
            raise ValidationError(
                f"filter {key} must be one of {allowed}, got {cleaned[key]!r}"
            )
    if not isinstance(cleaned["adjudicated"], bool):
        raise ValidationError(
            f"filter adjudicated must be true or false, got {cleaned['adjudicated']!r}"
        )
    if "rounds" in cleaned:
        rounds = cleaned["rounds"]
        if not isinstance(rounds, list) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in rounds
        ):
            raise ValidationError(
                f"filter rounds must be a list of round numbers, got {rounds!r}"
            )
        cleaned["rounds"] = sorted(set(rounds))
    if "policies" in cleaned:
        policies = cleaned["policies"]
        if not isinstance(policies, list) or not all(
            isinstance(p, str) for p in policies
        ):
            raise ValidationError(
                f"filter policies must be a list of policy names, got {policies!r}"
            )
        cleaned["policies"] = sorted(set(policies))
    for key in ("since", "until"):
        if key in cleaned:
            cleaned[key] = parse_moment(key, cleaned[key]).isoformat()
    for key in ("min_agreement", "min_reliability"):
        if key in cleaned:
            value = cleaned[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= 1
            ):
                raise ValidationError(
                    f"filter {key} must be a number in [0, 1], got {value!r}"
                )
            cleaned[key] = float(value)
    return dict(sorted(cleaned.items()))


def parse_moment(key: str, value: object) -> datetime:
    """Return an ISO date or datetime as an aware datetime (UTC when naive).

    Raise ValidationError naming `key` and the value when it is neither.
    """

    parsed = None
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None and parse_date(value) is not None:
            day = parse_date(value)
            parsed = datetime(day.year, day.month, day.day)
    if parsed is None:
        raise ValidationError(
            f"filter {key} must be an ISO date or datetime like 2026-01-31, got {value!r}"
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def check_rule(kind: str, value: str, allowed: dict) -> None:
    """Raise ValidationError unless `value` is one of the allowed rules."""
    if value not in allowed:
        raise ValidationError(f"{kind} must be one of {sorted(allowed)}, got {value!r}")


@dataclass
class _Source:
    """One order that pairs are drawn from: a vote, a consensus or an adjudication."""

    task: RankingTask
    ranking: Ranking | None
    order: list[list[int]]
    annotator: str  # label key before pseudonymisation
    created_at: datetime
    strength: float | None = None  # pairwise: the judgement's (see _margin)
    rewrite: str = ""  # the annotator's better response, if any


def freeze_snapshot(
    project: Project,
    name: str,
    *,
    user: AbstractBaseUser | None = None,
    filter: dict | None = None,
    pair_rule: str = "all_pairs",
    tie_rule: str = "drop",
    dedup_rule: str = "none",
    margin_rule: str = "rank",
    rewrite_rule: str = "sft",
    progress: Progress | None = None,
) -> Snapshot:
    """Select rankings by `filter`, turn them into pairs by the rules, and store them,
    in this process (a command, the loop; the pages and the API: `queue_freeze`).

    Writes the Snapshot, its SnapshotRanking orders and SnapshotPair rows in one
    transaction; row_count, stats and the SHA-256 of the canonical content (prompt
    messages, texts, margins, pseudonymous annotators, rounds, policies, in a fixed
    order, plus the filter and rules) are set before it commits. Raise ValidationError
    for a bad filter or rule, or a name the project already uses. `progress` is told
    the share done, 0 to 1.
    """
    snapshot = _new_snapshot(
        project,
        name,
        user,
        filter,
        pair_rule=pair_rule,
        tie_rule=tie_rule,
        dedup_rule=dedup_rule,
        margin_rule=margin_rule,
        rewrite_rule=rewrite_rule,
    )
    derived = _derive(snapshot, progress)  # outside: SQLite's write lock waits
    with transaction.atomic():
        _replace_failed(project, name)
        snapshot.save()
        _land(snapshot, derived, progress)
    return snapshot


def queue_freeze(
    project: Project,
    name: str,
    *,
    user: AbstractBaseUser | None = None,
    filter: dict | None = None,
    pair_rule: str = "all_pairs",
    tie_rule: str = "drop",
    dedup_rule: str = "none",
    margin_rule: str = "rank",
    rewrite_rule: str = "sft",
    enqueue: bool = True,
) -> Snapshot:
    """Check the spec, save the snapshot queued and queue its freeze for the worker
    (`run_freeze`); return the queued snapshot. Without `enqueue` no job is queued:
    the caller's own job runs the freeze (a training round's first stage,
    `training.jobs.freeze_round_snapshot`).

    A freeze of many rankings takes longer than a web request may (179,451 pairs from
    17,376 rankings: about 20 CPU seconds), and on SQLite its landing transaction
    holds the write lock, so the pages and the API never freeze in the request. The
    name is taken at once; a failed freeze's name may be used again. Raise
    ValidationError as `freeze_snapshot` does.
    """
    from annotation.tasks import freeze_task

    snapshot = _new_snapshot(
        project,
        name,
        user,
        filter,
        pair_rule=pair_rule,
        tie_rule=tie_rule,
        dedup_rule=dedup_rule,
        margin_rule=margin_rule,
        rewrite_rule=rewrite_rule,
    )
    snapshot.status, snapshot.progress = Snapshot.Status.QUEUED, 0.0
    try:
        with transaction.atomic():
            _replace_failed(project, name)
            snapshot.save()
            if enqueue:
                task_queue.enqueue_on_commit(lambda: freeze_task.enqueue(snapshot.pk))
    except IntegrityError:  # the same name, queued by another request meanwhile
        raise ValidationError(_name_taken(project, name)) from None
    return snapshot


def run_freeze(snapshot_id: int) -> Snapshot:
    """Freeze a queued snapshot (the worker's job) and return it.

    Only a queued snapshot runs (a job delivered twice does nothing the second
    time). While it runs, `progress` is saved at most twice a second and a thread
    writes `heartbeat_at`; the orders, pairs, stats, hash and the status `done` then
    land in one transaction, whole or not at all. A spec the data refuses (a
    reliability filter on a project without gold, say) fails it with the reason in
    `error`, as does an internal error (whose traceback is the job's).
    """
    claimed = claim(Snapshot.any_state.all(), snapshot_id)
    snapshot = Snapshot.any_state.select_related("project", "created_by").get(
        pk=snapshot_id
    )
    if not claimed:
        return snapshot
    fail_lost_freezes()
    running = Snapshot.any_state.filter(pk=snapshot_id, status=Snapshot.Status.RUNNING)
    saver = _Saver(snapshot_id)
    beating = start_heartbeat(
        running, HEARTBEAT_SECONDS, f"freeze-{snapshot_id}", saver.fields
    )
    try:
        derived = _derive(snapshot, saver)  # outside: SQLite's write lock waits
        with transaction.atomic():
            _land(snapshot, derived, saver)
    except ValidationError as exc:
        _fail(snapshot_id, "; ".join(exc.messages))
    except Exception as exc:
        _fail(snapshot_id, f"the freeze stopped on an internal error: {exc!r}")
        raise
    finally:
        beating.set()
    return Snapshot.any_state.select_related("project", "created_by").get(
        pk=snapshot_id
    )


def fail_lost_freezes(*, now: datetime | None = None) -> list[int]:
    """Fail the running freezes whose worker is lost (`config.workers.fail_lost`: its
    process on this host gone, or elsewhere and silent for LOST_AFTER_SECONDS);
    return their ids. Nothing of
    such a freeze landed, and its name may be used again."""
    return fail_lost(
        Snapshot.any_state.all(),
        LOST_AFTER_SECONDS,
        "the worker freezing this snapshot stopped ({why}); nothing was stored: "
        "freeze it again",
        now,
    )


def _fail(snapshot_id: int, error: str) -> None:
    Snapshot.any_state.filter(pk=snapshot_id).update(
        status=Snapshot.Status.FAILED, error=error[:2000], finished_at=timezone.now()
    )


class _Saver:
    """A freeze's progress callback: saved at most twice a second while it derives
    its rows; while they land, the heartbeat's thread writes it (`fields`), since
    the landing transaction's own writes are seen by nobody until it commits."""

    def __init__(self, snapshot_id: int) -> None:
        self.snapshot_id = snapshot_id
        self.share = 0.0
        self.saved_at = 0.0

    def __call__(self, share: float) -> None:
        self.share = share
        now = time.monotonic()
        if connection.in_atomic_block or (now - self.saved_at < 0.5 and share < 1.0):
            return
        self.saved_at = now
        Snapshot.any_state.filter(pk=self.snapshot_id).update(progress=round(share, 4))

    def fields(self) -> dict:
        return {"progress": round(self.share, 4)}


def _new_snapshot(
    project: Project,
    name: str,
    user: AbstractBaseUser | None,
    filter: dict | None,
    **rules: str,
) -> Snapshot:
    """Return the unsaved snapshot the spec names, or raise ValidationError for a bad
    filter or rule or a name the project already uses."""
    cleaned = clean_filter(filter)
    _check_new_snapshot(
        project,
        name,
        rules["pair_rule"],
        rules["tie_rule"],
        rules["dedup_rule"],
        rules["margin_rule"],
    )
    check_rule("rewrite_rule", rules["rewrite_rule"], REWRITE_RULES)
    return Snapshot(
        project=project, name=name, filter=cleaned, created_by=user, **rules
    )


def _replace_failed(project: Project, name: str) -> None:
    """Delete a failed freeze of that name (it holds no pairs), so the name is free;
    not a round's, which Resume freezes again (and `_check_new_snapshot` refuses)."""
    Snapshot.any_state.filter(
        project=project, name=name, status=Snapshot.Status.FAILED, rounds__isnull=True
    ).delete()


@dataclass
class _Derived:
    """What a freeze stores: the orders, pair rows, rewrite pairs, the content hash and
    the stats."""

    order_rows: list[SnapshotRanking]
    pair_rows: list[dict]
    rewrite_rows: list[tuple[SnapshotRanking, int, float]]
    header: dict
    sha256: str
    stats: dict


def _derive(snapshot: Snapshot, progress: Progress | None) -> _Derived:
    """Read the rankings the snapshot's filter selects and derive what it stores
    (the first half of `progress`)."""
    tell = progress or (lambda share: None)
    cleaned, project = snapshot.filter, snapshot.project
    tasks = _select_tasks(project, cleaned)
    sources = _select_sources(project, tasks, cleaned)
    responses = {
        r.id: r
        for r in Response.objects.filter(task__in=[t.id for t in tasks]).select_related(
            "policy"
        )
    }
    tell(0.25)
    order_rows, pair_rows = _derive_rows(
        sources,
        responses,
        cleaned,
        snapshot.pair_rule,
        snapshot.tie_rule,
        snapshot.margin_rule,
        snapshot.rewrite_rule,
    )
    pair_rows = _deduplicate(pair_rows, responses, snapshot.dedup_rule)
    header = {
        "filter": cleaned,
        "pair_rule": snapshot.pair_rule,
        "tie_rule": snapshot.tie_rule,
        "dedup_rule": snapshot.dedup_rule,
        "margin_rule": snapshot.margin_rule,
    }
    if snapshot.rewrite_rule != "sft":  # the default stays out: older hashes match
        header["rewrite_rule"] = snapshot.rewrite_rule
    rewrite_rows = _rewrite_rows(order_rows, snapshot.rewrite_rule, snapshot.pair_rule)
    sha256 = _content_digest(header, pair_rows, responses, rewrite_rows)
    stats = _stats(
        pair_rows, order_rows, responses, cleaned, snapshot.dedup_rule, rewrite_rows
    )
    tell(0.5)
    return _Derived(order_rows, pair_rows, rewrite_rows, header, sha256, stats)


def _land(snapshot: Snapshot, derived: _Derived, progress: Progress | None) -> None:
    """Store the derived rows and mark the (saved) snapshot done, inside the caller's
    transaction (the second half of `progress`). A queued snapshot that is no longer
    running (failed as lost meanwhile) raises ValidationError, undoing it all."""
    tell = progress or (lambda share: None)
    now = timezone.now()
    fields = {
        "row_count": len(derived.pair_rows) + len(derived.rewrite_rows),
        "sha256": derived.sha256,
        "stats": derived.stats,
        "status": Snapshot.Status.DONE,
        "progress": 1.0,
        "finished_at": now,
    }
    updated = Snapshot.any_state.filter(
        pk=snapshot.pk, status__in=[Snapshot.Status.RUNNING, Snapshot.Status.DONE]
    ).update(**fields)
    if not updated:
        raise ValidationError(
            f"snapshot {snapshot.name!r} stopped being frozen meanwhile (marked "
            "failed as lost); freeze it again"
        )
    for key, value in fields.items():
        setattr(snapshot, key, value)
    _store_orders(snapshot, derived.order_rows)
    tell(0.6)
    _store_pairs(snapshot, derived.pair_rows, lambda done: tell(0.6 + 0.4 * done))
    record(
        snapshot.created_by,
        "snapshot.freeze",
        obj=snapshot,
        after={"name": snapshot.name, **derived.header},
    )
    tell(1.0)


def _store_pairs(
    snapshot: Snapshot, pair_rows: list[dict], progress: Progress | None = None
) -> None:
    """Write the snapshot's SnapshotPair rows (`_insert_rows`)."""
    _insert_rows(
        SnapshotPair,
        (
            "snapshot",
            "ranking",
            "task",
            "chosen",
            "rejected",
            "margin",
            "annotator_label",
        ),
        (
            (
                snapshot.pk,
                row["ranking"].pk if row["ranking"] is not None else None,
                row["task"].pk,
                row["chosen"],
                row["rejected"],
                float(row["margin"]),
                row["label"],
            )
            for row in pair_rows
        ),
        len(pair_rows),
        progress,
    )


def _store_orders(snapshot: Snapshot, order_rows: list[SnapshotRanking]) -> None:
    """Write the snapshot's SnapshotRanking rows (`_insert_rows`; as model instances
    through `bulk_create` they held SQLite's write lock 0.8 s of a 180,000-pair
    freeze's landing)."""
    order = SnapshotRanking._meta.get_field("order")
    _insert_rows(
        SnapshotRanking,
        ("snapshot", "task", "ranking", "order", "annotator_label", "rewrite"),
        (
            (
                snapshot.pk,
                row.task_id,
                row.ranking_id,
                order.get_db_prep_value(row.order, connection, prepared=False),
                row.annotator_label,
                row.rewrite,
            )
            for row in order_rows
        ),
        len(order_rows),
    )


def _insert_rows(
    model: type,
    names: tuple[str, ...],
    rows: Iterable[tuple],
    count: int,
    progress: Progress | None = None,
) -> None:
    """Insert `count` rows of plain values (one per field of `names`, in order) as
    multi-row INSERTs, as many rows per statement as the database's parameter limit
    allows: building a model instance per row for `bulk_create` took most of a large
    freeze's time (bench/freeze.py)."""
    fields = [model._meta.get_field(name) for name in names]
    batch = min(
        STORE_BATCH, connection.ops.bulk_batch_size(fields, [None] * count) or 1
    )
    head = "INSERT INTO {} ({}) VALUES ".format(
        connection.ops.quote_name(model._meta.db_table),
        ", ".join(connection.ops.quote_name(f.column) for f in fields),
    )
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    iterator = iter(rows)
    done = 0
    with connection.cursor() as cursor:
        while chunk := list(islice(iterator, batch)):
            cursor.execute(
                head + ", ".join([row_sql] * len(chunk)),
                [value for row in chunk for value in row],
            )
            done += len(chunk)
            if progress is not None:
                progress(min(1.0, done / count))


def _check_new_snapshot(
    project: Project,
    name: str,
    pair_rule: str,
    tie_rule: str,
    dedup_rule: str,
    margin_rule: str,
) -> None:
    """Raise ValidationError for an unknown rule or a bad or taken snapshot name."""
    check_rule("pair_rule", pair_rule, PAIR_RULES)
    check_rule("tie_rule", tie_rule, TIE_RULES)
    check_rule("dedup_rule", dedup_rule, DEDUP_RULES)
    check_rule("margin_rule", margin_rule, MARGIN_RULES)
    if not name or len(name) > 200:
        raise ValidationError(
            f"a snapshot name must have 1 to 200 characters, got {name!r}"
        )
    taken = Snapshot.any_state.filter(project=project, name=name).exclude(
        status=Snapshot.Status.FAILED, rounds__isnull=True
    )
    if taken.exists():
        raise ValidationError(_name_taken(project, name))


def not_frozen(snapshot: Snapshot, then: str) -> str:
    """Say that a snapshot has no pairs yet (queued, running or failed) and `then`,
    what to do once it is done."""
    return (
        f"snapshot {snapshot.name} of project {snapshot.project.name} has no pairs "
        f"yet: its freeze is {snapshot.get_status_display().lower()}"
        + (f" ({snapshot.error})" if snapshot.error else "")
        + f"; {then}"
    )


def _name_taken(project: Project, name: str) -> str:
    return (
        f"project {project.name} already has a snapshot named {name!r} (frozen or "
        "being frozen); choose another name"
    )


def _derive_rows(
    sources: list,
    responses: dict[int, Response],
    cleaned: dict,
    pair_rule: str,
    tie_rule: str,
    margin_rule: str,
    rewrite_rule: str = "sft",
) -> tuple[list[SnapshotRanking], list[dict]]:
    """Return the unsaved orders and the pair rows the rules derive from `sources`.

    Responses of policies outside the filter's `policies` are dropped from each
    order first; an order left empty yields nothing.
    """
    allowed_policies = set(cleaned.get("policies", []))
    labels = _Labels()
    pair_rows: list[dict] = []
    order_rows: list[SnapshotRanking] = []
    for source in sources:
        order = source.order
        if allowed_policies:
            order = [
                [rid for rid in group if responses[rid].policy.name in allowed_policies]
                for group in order
            ]
            order = [group for group in order if group]
        if not order:
            continue
        label = labels.of(source.annotator)
        order_rows.append(
            SnapshotRanking(
                task=source.task,
                ranking=source.ranking,
                order=order,
                annotator_label=label,
                rewrite=source.rewrite,
            )
        )
        rewritten = rewrite_rule == "chosen" and bool(source.rewrite.strip())
        head = [[REWRITE]] if rewritten else []
        for chosen, rejected, distance in _pairs(head + order, pair_rule, tie_rule):
            if chosen == REWRITE:
                continue  # a rewrite's pairs: rewrite_pairs, from the frozen order
            pair_rows.append(
                {
                    "task": source.task,
                    "ranking": source.ranking,
                    "chosen": chosen,
                    "rejected": rejected,
                    "margin": _margin(source, chosen, rejected, distance, margin_rule),
                    "label": label,
                }
            )
    return order_rows, pair_rows


def _rewrite_rows(
    order_rows: list[SnapshotRanking], rewrite_rule: str, pair_rule: str
) -> list[tuple[SnapshotRanking, int, float]]:
    """Return (order, rejected id, margin) of every rewrite pair the rules make."""
    if rewrite_rule == "sft":
        return []
    return [
        (order, rejected, margin)
        for order in order_rows
        for rejected, margin in rewrite_pairs(order.order, order.rewrite, pair_rule)
    ]


# Stands for an order's rewrite among its response ids (which start at 1).
REWRITE = 0


def rewrite_pairs(
    order: list[list[int]], rewrite: str, pair_rule: str
) -> list[tuple[int, float]]:
    """Return the (rejected response id, margin) pairs a rewrite is chosen in under
    the rewrite rule "chosen": the pair rule's pairs of the order with the rewrite
    ranked one above its best (margin: the rank distance)."""
    if not rewrite.strip():
        return []
    return [
        (rejected, float(distance))
        for chosen, rejected, distance in _pairs([[REWRITE]] + order, pair_rule, "drop")
        if chosen == REWRITE
    ]


def _content_digest(
    header: dict,
    pair_rows: list[dict],
    responses: dict[int, Response],
    rewrite_rows: list[tuple[SnapshotRanking, int, float]] = (),
) -> str:
    """Return the hex SHA-256 of the canonical content: the rules, then every pair
    (a rewrite's pairs after the response pairs, its text as the chosen one)."""
    digest = hashlib.sha256()
    digest.update(_canonical(header))
    for row in pair_rows:
        chosen, rejected = responses[row["chosen"]], responses[row["rejected"]]
        task = row["task"]
        digest.update(
            _canonical(
                [
                    task.prompt.messages,
                    chosen.text,
                    rejected.text,
                    row["margin"],
                    row["label"],
                    task.round.number if task.round_id else None,
                    chosen.policy.name,
                    rejected.policy.name,
                ]
            )
        )
    for order, rejected_id, margin in rewrite_rows:
        rejected, task = responses[rejected_id], order.task
        digest.update(
            _canonical(
                [
                    task.prompt.messages,
                    order.rewrite,
                    rejected.text,
                    margin,
                    order.annotator_label,
                    task.round.number if task.round_id else None,
                    "rewrite",
                    rejected.policy.name,
                ]
            )
        )
    return digest.hexdigest()


def _canonical(value: object) -> bytes:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


class _Labels:
    """Pseudonymous annotator ids, numbered by first appearance in the snapshot."""

    def __init__(self) -> None:
        self.by_key: dict[str, str] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def of(self, key: str) -> str:
        if key not in self.by_key:
            kind = key.split(":", 1)[0]
            if kind in ("consensus", "adjudicated", "majority"):
                self.by_key[key] = kind
            else:
                self.counts[kind] += 1
                self.by_key[key] = f"{kind}-{self.counts[kind]}"
        return self.by_key[key]


def _select_tasks(project: Project, f: dict) -> list[RankingTask]:
    tasks = RankingTask.objects.filter(project=project).select_related(
        "prompt", "round"
    )
    if "rounds" in f:
        tasks = tasks.filter(round__number__in=f["rounds"])
    if f["gold"] == "exclude":
        tasks = tasks.filter(is_gold=False)
    elif f["gold"] == "only":
        tasks = tasks.filter(is_gold=True)
    if "min_agreement" in f:
        tasks = tasks.filter(agreement__gte=f["min_agreement"])
    if f["skipped"] == "exclude":
        skips = Ranking.objects.filter(task=OuterRef("pk"), is_skip=True)
        tasks = tasks.exclude(Exists(skips))
    tasks = list(tasks.order_by("id").distinct())
    if f["flagged"] == "exclude":
        tasks = [t for t in tasks if not t.prompt.flags]
    return tasks


def _annotator_kind(ranking: Ranking, profiles: dict[int, AnnotatorProfile]) -> str:
    profile = profiles.get(ranking.annotator_id)
    if profile is not None and profile.is_simulated:
        return "simulated"
    if ranking.annotator.username.startswith("imported:"):
        return "imported"
    return "annotator"


def _select_sources(
    project: Project, tasks: list[RankingTask], f: dict
) -> list[_Source]:
    """Return the orders to draw pairs from, in task then ranking order."""
    rankings = (
        Ranking.objects.filter(task__in=[t.id for t in tasks], is_skip=False)
        .select_related("annotator")
        .order_by("task_id", "id")
    )
    by_task: dict[int, list[Ranking]] = defaultdict(list)
    for ranking in rankings:
        by_task[ranking.task_id].append(ranking)
    annotator_ids = {r.annotator_id for rs in by_task.values() for r in rs}
    profiles = {
        p.user_id: p for p in AnnotatorProfile.objects.filter(user_id__in=annotator_ids)
    }
    reliability = annotator_reliability(project) if "min_reliability" in f else {}
    since = parse_moment("since", f["since"]) if "since" in f else None
    until = parse_moment("until", f["until"]) if "until" in f else None

    def keep(ranking: Ranking) -> bool:
        kind = _annotator_kind(ranking, profiles)
        if f["simulated"] == "exclude" and kind == "simulated":
            return False
        if f["simulated"] == "only" and kind != "simulated":
            return False
        if f["flagged"] == "exclude" and (
            ranking.unsafe_response_ids or ranking.all_bad
        ):
            return False
        if "min_reliability" in f:
            score = reliability.get(ranking.annotator_id)
            if score is None or score < f["min_reliability"]:
                return False
        if since is not None and ranking.created_at < since:
            return False
        if until is not None and ranking.created_at >= until:
            return False
        return True

    sources: list[_Source] = []
    for task in tasks:
        votes = [r for r in by_task.get(task.id, []) if keep(r)]
        if f["adjudicated"] and task.adjudicated_order:
            if votes or not by_task.get(task.id):
                sources.append(
                    _Source(
                        task,
                        None,
                        task.adjudicated_order,
                        "adjudicated",
                        task.created_at,
                    )
                )
            continue
        if not votes:
            continue
        if f["votes"] == "consensus":
            sources.append(_consensus_source(task, votes))
            continue
        for vote in votes:
            kind = _annotator_kind(vote, profiles)
            sources.append(
                _Source(
                    task,
                    vote,
                    vote.order,
                    f"{kind}:{vote.annotator_id}",
                    vote.created_at,
                    vote.strength,
                    vote.rewrite,
                )
            )
    return sources


def annotator_reliability(project: Project) -> dict[int, float]:
    """Return each annotator's reliability in the project (see annotation.quality)."""
    from annotation.quality import annotator_stats, ranking_rows

    return {s.user_id: s.reliability for s in annotator_stats(ranking_rows(project))}


def _pairs(
    order: list[list[int]], pair_rule: str, tie_rule: str
) -> list[tuple[int, int, int]]:
    """Return (chosen, rejected, rank distance) pairs of one order under the rules."""
    if pair_rule == "all_pairs":
        pairs = order_to_pairs(order)
    elif pair_rule == "best_vs_rest":
        pairs = [
            (chosen, rejected, j)
            for j, group in enumerate(order[1:], start=1)
            for chosen in order[0]
            for rejected in group
        ]
    else:  # adjacent
        pairs = [
            (chosen, rejected, 1)
            for better, worse in zip(order, order[1:], strict=False)
            for chosen in better
            for rejected in worse
        ]
    if tie_rule == "keep":
        for group in order:
            pairs.extend((a, b, 0) for a, b in combinations(sorted(group), 2))
    return pairs


def _consensus_source(task: RankingTask, votes: list[Ranking]) -> _Source:
    """Return a task's consensus as the one order to draw its pairs from."""
    # The stored consensus is kept current on submit; Borda again for rows written
    # without it (imports, fixtures).
    order = task.consensus_order or borda([v.order for v in votes])
    return _Source(
        task,
        None,
        order,
        "consensus",
        task.created_at,
        _consensus_strength(order, votes),
        # The earliest vote's rewrite: one demonstration a task, as one order.
        next((v.rewrite for v in votes if v.rewrite.strip()), ""),
    )


def _consensus_strength(order: list[list[int]], votes: list[Ranking]) -> float | None:
    """Return the strength of a pairwise task's consensus: the mean strength of the
    votes that prefer the response it prefers. None for a tie or K-wise votes."""
    if len(order) != 2:
        return None
    agreeing = [
        v.strength
        for v in votes
        if v.strength is not None and len(v.order) == 2 and v.order[0] == order[0]
    ]
    return float(mean(agreeing)) if agreeing else None


def _margin(
    source: _Source,
    chosen: int,
    rejected: int,
    distance: float,
    margin_rule: str,
) -> float:
    """Return a pair's margin by the rule (see MARGIN_RULES).

    A pairwise judgement's one pair has rank distance 1 whatever its strength, so
    its strength stands in for the distance (TRL's `margin`, Llama 2 style); a tie
    kept as a pair (distance 0) stays 0. A consensus of pairwise votes has the mean
    strength of the votes that agree with it; an adjudicated order has none.
    """
    ranking = source.ranking
    if source.strength is not None and distance:
        distance = source.strength
    if margin_rule == "aspects" and ranking is not None and ranking.aspect_ratings:
        ratings = ranking.aspect_ratings
        a, b = ratings.get(str(chosen)) or {}, ratings.get(str(rejected)) or {}
        if a and b:
            return float(mean(a.values()) - mean(b.values()))
    return float(distance)


def _deduplicate(
    rows: list[dict], responses: dict[int, Response], rule: str
) -> list[dict]:
    if rule == "none":
        return rows

    def key(row: dict) -> tuple:
        return (
            row["task"].prompt.content_hash,
            responses[row["chosen"]].text,
            responses[row["rejected"]].text,
        )

    if rule == "exact":
        seen: set[tuple] = set()
        kept = []
        for row in rows:
            k = key(row)
            if k not in seen:
                seen.add(k)
                kept.append(row)
        return kept
    # majority: one row per unordered text pair, in the direction most votes gave.
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        prompt, a, b = key(row)
        groups.setdefault((prompt, *sorted((a, b))), []).append(row)
    kept = []
    for members in groups.values():
        first = members[0]
        forward = [r for r in members if key(r) == key(first)]
        backward = [r for r in members if key(r) != key(first)]
        if len(forward) == len(backward):
            continue
        winners = forward if len(forward) > len(backward) else backward
        kept.append(
            {
                **winners[0],
                "ranking": None,
                "margin": float(mean(r["margin"] for r in winners)),
                "label": "majority",
            }
        )
    return kept


def _stats(
    pairs: list[dict],
    orders: list[SnapshotRanking],
    responses: dict[int, Response],
    f: dict,
    dedup_rule: str,
    rewrite_rows: list[tuple[SnapshotRanking, int, float]] = (),
) -> dict:
    """Return the counts, agreement and length figures shown on the snapshot page."""
    task_ids = {o.task_id for o in orders}
    agreements = [o.task.agreement for o in orders if o.task.agreement is not None]
    chosen_len = [len(responses[p["chosen"]].text) for p in pairs]
    rejected_len = [len(responses[p["rejected"]].text) for p in pairs]
    prompts = {o.task.prompt_id for o in orders}
    labels = sorted({o.annotator_label for o in orders})
    margins: dict[str, int] = defaultdict(int)
    for p in pairs:
        margins[f"{p['margin']:g}"] += 1
    merge = (
        "one consensus order per task (Borda count; adjudicated orders replace it)"
        if f["votes"] == "consensus"
        else "every annotator's ranking kept separately"
        + ("; adjudicated orders replace the votes" if f["adjudicated"] else "")
    )
    if dedup_rule == "majority":
        merge += "; then pairs merged by majority vote"

    def summary(values: list[int]) -> dict:
        if not values:
            return {"mean": None, "median": None, "max": None}
        return {
            "mean": round(mean(values), 1),
            "median": median(values),
            "max": max(values),
        }

    return {
        "pairs": len(pairs) + len(rewrite_rows),
        "rewrites": sum(1 for o in orders if o.rewrite.strip()),
        "rewrite_pairs": len(rewrite_rows),
        "orders": len(orders),
        "tasks": len(task_ids),
        "prompts": len(prompts),
        "annotators": len(labels),
        "annotator_labels": labels,
        "mean_task_agreement": round(mean(agreements), 4) if agreements else None,
        "chosen_chars": summary(chosen_len),
        "rejected_chars": summary(rejected_len),
        "chosen_longer_share": (
            round(
                sum(c > r for c, r in zip(chosen_len, rejected_len, strict=False))
                / len(pairs),
                4,
            )
            if pairs
            else None
        ),
        "margins": dict(sorted(margins.items())),
        "votes_merged": merge,
    }


# ---------------------------------------------------------------- comparing snapshots

DIFF_SAMPLE_ROWS = 20
_RULE_FIELDS = ("pair_rule", "tie_rule", "dedup_rule", "margin_rule", "rewrite_rule")


@dataclass
class SnapshotDiff:
    """What changed between snapshot `a` (older, say) and snapshot `b`.

    A pair is identified by (task, chosen response, rejected response, annotator):
    the annotator is the user behind the pair's ranking (labels are pseudonymous per
    snapshot, so the same person may be `annotator-1` in one and `annotator-3` in the
    other), or the label itself for rows with no single ranking (`consensus`,
    `adjudicated`, `majority`). A pair present in both with another margin is counted
    in `margin_changed`, not as added or removed. A revised ranking (same annotator,
    same task) that gives the same pairs is therefore no change.
    """

    a: Snapshot
    b: Snapshot
    added: int
    removed: int
    unchanged: int
    margin_changed: int
    by_round: list[dict]
    by_policy: list[dict]
    by_annotator: list[dict]
    filters: list[dict]
    rules: list[dict]
    added_sample: list[dict]
    removed_sample: list[dict]


def diff_snapshots(
    a: Snapshot, b: Snapshot, progress: Progress | None = None
) -> SnapshotDiff:
    """Return the pairs `b` adds to and removes from `a`, broken down, and both specs.

    Breakdowns count each added or removed pair once by its task's round, once by
    annotator, and once under each policy that wrote one of its two responses (a pair
    of two policies counts under both). Raise ValidationError when the snapshots
    belong to different projects. `progress` is told the share of both snapshots'
    rows read, now and then.

    Both snapshots are read in task order and compared one task at a time (a pair's
    key starts with its task), so memory holds one task's rows, the breakdowns' counts
    and the samples, whatever the snapshots' size.
    """
    _check_comparable(a, b)
    tally = _DiffTally(progress, a.row_count + b.row_count)
    sides = heapq.merge(
        ((task, 0, rows) for task, rows in _task_groups(a)),
        ((task, 1, rows) for task, rows in _task_groups(b)),
        key=lambda item: item[:2],
    )
    for _, group in groupby(sides, key=lambda item: item[0]):
        rows_a: dict[tuple, dict] = {}
        rows_b: dict[tuple, dict] = {}
        for _, side, rows in group:
            if side == 0:
                rows_a = rows
            else:
                rows_b = rows
        tally.add_task(rows_a, rows_b)
    labels = _annotator_labels(tally.in_a, tally.in_b)
    by_annotator: dict = defaultdict(lambda: {"added": 0, "removed": 0})
    for key, counts in tally.by_annotator.items():
        for kind in ("added", "removed"):
            by_annotator[labels[key]][kind] += counts[kind]
    return SnapshotDiff(
        a=a,
        b=b,
        added=tally.added,
        removed=tally.removed,
        unchanged=tally.unchanged,
        margin_changed=tally.margin_changed,
        by_round=_breakdown(tally.by_round),
        by_policy=_breakdown(tally.by_policy),
        by_annotator=_breakdown(by_annotator),
        filters=_side_by_side(a.filter, b.filter),
        rules=_side_by_side(
            {f: getattr(a, f) for f in _RULE_FIELDS},
            {f: getattr(b, f) for f in _RULE_FIELDS},
        ),
        added_sample=[_public(r, labels) for r in tally.added_sample],
        removed_sample=[_public(r, labels) for r in tally.removed_sample],
    )


class _DiffTally:
    """The counts, breakdowns and samples of a comparison, added to a task at a time."""

    def __init__(self, progress: Progress | None, rows: int) -> None:
        self.progress, self.rows, self.read, self.told = progress, max(1, rows), 0, 0.0
        self.added = self.removed = self.unchanged = self.margin_changed = 0
        self.by_round: dict = defaultdict(lambda: {"added": 0, "removed": 0})
        self.by_policy: dict = defaultdict(lambda: {"added": 0, "removed": 0})
        self.by_annotator: dict = defaultdict(lambda: {"added": 0, "removed": 0})
        self.in_a: dict[str, str] = {}  # annotator key -> its label in a
        self.in_b: dict[str, str] = {}
        self.added_sample: list[dict] = []
        self.removed_sample: list[dict] = []

    def add_task(self, rows_a: dict[tuple, dict], rows_b: dict[tuple, dict]) -> None:
        for rows, labels in ((rows_a, self.in_a), (rows_b, self.in_b)):
            for row in rows.values():
                labels[row["annotator"]] = row["label"]
        common = rows_a.keys() & rows_b.keys()
        self.unchanged += len(common)
        self.margin_changed += sum(
            rows_a[k]["margin"] != rows_b[k]["margin"] for k in common
        )
        for kind, rows, others, sample in (
            ("added", rows_b, rows_a, self.added_sample),
            ("removed", rows_a, rows_b, self.removed_sample),
        ):
            changed = sorted(rows.keys() - others.keys())
            setattr(self, kind, getattr(self, kind) + len(changed))
            for key in changed:
                row = rows[key]
                self.by_round[row["round"]][kind] += 1
                for policy in {row["chosen_policy"], row["rejected_policy"]}:
                    self.by_policy[policy][kind] += 1
                self.by_annotator[row["annotator"]][kind] += 1
            room = DIFF_SAMPLE_ROWS - len(sample)
            sample.extend(rows[key] for key in changed[: max(0, room)])
        self.read += len(rows_a) + len(rows_b)
        share = min(0.99, self.read / self.rows)
        if self.progress is not None and share - self.told >= 0.05:
            self.told = share
            self.progress(share)


def _check_comparable(a: Snapshot, b: Snapshot) -> None:
    if a.project_id != b.project_id:
        raise ValidationError(
            f"snapshots {a.pk} and {b.pk} belong to different projects "
            f"({a.project_id} and {b.project_id}); compare two snapshots of one project"
        )


def ready_comparison(a: Snapshot, b: Snapshot) -> SnapshotDiff | None:
    """Return the comparison of `a` with `b` if the worker has computed it, computing
    it here when each has at most REQUEST_MAX_PAIRS pairs; None when the worker must
    (`queue_comparison`). Raise ValidationError as `diff_snapshots` does.

    A comparison reads every pair of both (1.4-2.0 s for two of 180,000 pairs), past
    what a web request may hold for large snapshots.
    """
    _check_comparable(a, b)
    if max(a.row_count, b.row_count) <= settings.REQUEST_MAX_PAIRS:
        return diff_snapshots(a, b)
    done = SnapshotComparison.objects.filter(
        a=a, b=b, status=SnapshotComparison.Status.DONE
    ).first()
    return None if done is None else _diff_from(a, b, done.result)


def queue_comparison(
    a: Snapshot, b: Snapshot, *, user: AbstractBaseUser | None = None
) -> SnapshotComparison:
    """Return the comparison job of `a` with `b`, queuing it for the worker
    (`run_comparison`) unless it is queued, running or done; a failed one is queued
    anew."""
    from annotation.tasks import compare_task

    _check_comparable(a, b)
    return queue_job(
        SnapshotComparison,
        {"a": a, "b": b},
        compare_task.enqueue,
        lambda job: job.status == SnapshotComparison.Status.FAILED,
        result={},
        created_by=user,
    )


def run_comparison(comparison_id: int) -> SnapshotComparison:
    """Compute a queued comparison (the worker's job), keep its result, return it.

    Only a queued comparison runs (a job delivered twice does nothing the second
    time); while it reads, a thread writes `heartbeat_at`. An error fails it with
    the reason in `error`.
    """
    jobs = SnapshotComparison.objects.select_related("a", "b")
    job = jobs.get(pk=comparison_id)

    def compare(running) -> dict:
        fail_lost_comparisons()
        diff = diff_snapshots(
            job.a, job.b, lambda share: running.update(progress=share)
        )
        # Not asdict: it would deep-copy the two Snapshot rows only to drop them.
        return {
            "result": {
                f.name: getattr(diff, f.name)
                for f in fields(SnapshotDiff)
                if f.name not in ("a", "b")
            }
        }

    run_job(
        SnapshotComparison.objects.all(),
        comparison_id,
        HEARTBEAT_SECONDS,
        compare,
        "the comparison stopped on an error",
    )
    return jobs.get(pk=comparison_id)


def fail_lost_comparisons(*, now: datetime | None = None) -> list[int]:
    """Fail the running comparisons whose worker is lost (`config.workers.fail_lost`:
    its process on this host gone, or elsewhere and silent for LOST_AFTER_SECONDS);
    return their ids. Asking for the comparison again queues it anew."""
    return fail_lost(
        SnapshotComparison.objects.all(),
        LOST_AFTER_SECONDS,
        "the worker comparing these snapshots stopped ({why}); ask for the "
        "comparison again",
        now,
    )


def _diff_from(a: Snapshot, b: Snapshot, result: dict) -> SnapshotDiff:
    """Return the SnapshotDiff a comparison's kept `result` holds."""
    names = {f.name for f in fields(SnapshotDiff)} - {"a", "b"}
    return SnapshotDiff(a=a, b=b, **{k: result[k] for k in names})


_DIFF_CHUNK = 5000


def _task_groups(snapshot: Snapshot) -> Iterator[tuple[int, dict[tuple, dict]]]:
    """Yield (task id, the task's pairs keyed by (task, chosen, rejected,
    annotator)) for the snapshot's tasks in ascending order, reading in chunks.

    A rewrite's pairs (rewrite rule "chosen") are rows too, with `chosen` None and
    `chosen_policy` "rewrite", as the exports write them. Where two rows share a key
    the later one counts (response pairs in id order, then rewrites).
    """
    streams = [_pair_rows(snapshot)]
    if snapshot.rewrite_rule != "sft":
        streams.append(_rewritten_pairs(snapshot))
    merged = heapq.merge(*streams, key=lambda row: row["task"])
    for task, rows in groupby(merged, key=lambda row: row["task"]):
        yield task, {_row_order(row): row for row in rows}


def _pair_rows(snapshot: Snapshot) -> Iterator[dict]:
    """Yield the snapshot's SnapshotPair rows as diff rows, by task then id.

    The stream reads the pair table alone and each chunk's annotators, rounds and
    policies are looked up apart (`_Lookups`): joined into a server-side cursor's
    query, PostgreSQL's fast-start plan for it can be a nested loop over every task
    and every pair (minutes for 180,000 pairs before ANALYZE has seen them).
    """
    rows = (
        SnapshotPair.objects.filter(snapshot=snapshot)
        .order_by("task_id", "id")
        .values_list(
            "task_id",
            "chosen_id",
            "rejected_id",
            "ranking_id",
            "annotator_label",
            "margin",
        )
    )
    stream, lookups = rows.iterator(chunk_size=_DIFF_CHUNK), _Lookups()
    while chunk := list(islice(stream, _DIFF_CHUNK)):
        look = lookups.load(
            tasks={row[0] for row in chunk},
            responses={row[1] for row in chunk} | {row[2] for row in chunk},
            rankings={row[3] for row in chunk if row[3] is not None},
        )
        for task, chosen, rejected, ranking, label, margin in chunk:
            user = look.annotator.get(ranking)
            row = _diff_row(
                task, chosen, rejected, user, label, margin, look.round[task]
            )
            yield {
                **row,
                "chosen_policy": look.policy[chosen],
                "rejected_policy": look.policy[rejected],
            }


def _rewritten_pairs(snapshot: Snapshot) -> Iterator[dict]:
    """Yield the pairs the snapshot's rewrites give, as diff rows, by task then id;
    annotators, rounds and the rejected responses' policies are looked up a chunk of
    orders at a time (`_pair_rows` says why)."""
    orders = (
        SnapshotRanking.objects.filter(snapshot=snapshot)
        .exclude(rewrite="")
        .order_by("task_id", "id")
        .values_list("task_id", "ranking_id", "annotator_label", "order", "rewrite")
    )
    stream, lookups = orders.iterator(chunk_size=_DIFF_CHUNK), _Lookups()
    while chunk := list(islice(stream, _DIFF_CHUNK)):
        rewritten = [
            (task, rejected, ranking, label, margin)
            for task, ranking, label, order, rewrite in chunk
            for rejected, margin in rewrite_pairs(order, rewrite, snapshot.pair_rule)
        ]
        look = lookups.load(
            tasks={row[0] for row in chunk},
            responses={row[1] for row in rewritten},
            rankings={row[1] for row in chunk if row[1] is not None},
        )
        for task, rejected, ranking, label, margin in rewritten:
            user = look.annotator.get(ranking)
            row = _diff_row(task, None, rejected, user, label, margin, look.round[task])
            yield {
                **row,
                "chosen_policy": "rewrite",
                "rejected_policy": look.policy[rejected],
            }


class _Lookups:
    """Per chunk of rows: the annotator by ranking id, the round number by task id and
    the policy name by response id (`load`). The pair's own tables are read by id
    range (`annotation.export.by_ids`); the few rounds' and policies' names are kept
    from chunk to chunk."""

    def __init__(self) -> None:
        self.round_numbers: dict[int, int] = {}
        self.policy_names: dict[int, str] = {}
        self.annotator: dict[int, int | None] = {}
        self.round: dict[int, int | None] = {}
        self.policy: dict[int, str] = {}

    def load(self, *, tasks: set, responses: set, rankings: set) -> _Lookups:
        self.annotator = _by(Ranking, rankings, "annotator_id")
        task_rounds = _by(RankingTask, tasks, "round_id")
        response_policies = _by(Response, responses, "policy_id")
        new_rounds = set(task_rounds.values()) - self.round_numbers.keys() - {None}
        self.round_numbers.update(
            Round.objects.filter(id__in=new_rounds).values_list("id", "number")
        )
        new_policies = set(response_policies.values()) - self.policy_names.keys()
        self.policy_names.update(
            Policy.objects.filter(id__in=new_policies).values_list("id", "name")
        )
        self.round = {t: self.round_numbers.get(r) for t, r in task_rounds.items()}
        self.policy = {
            rid: self.policy_names[p] for rid, p in response_policies.items()
        }
        return self


def _by(model, ids: set, column: str) -> dict:
    """Return {id: column} for the rows of `model` with these ids (and maybe others
    in their id range)."""
    if not ids:
        return {}
    return dict(by_ids(model.objects, ids).values_list("id", column))


def _diff_row(
    task: int,
    chosen: int | None,
    rejected: int,
    user: int | None,
    label: str,
    margin: float,
    number: int | None,
) -> dict:
    """Return one pair's diff row; its annotator is the person behind the label
    (matched across snapshots) or, for a consensus or majority row, the label."""
    return {
        "task": task,
        "chosen": chosen,
        "rejected": rejected,
        "annotator": f"user:{user}" if user is not None else label,
        "label": label,
        "margin": margin,
        "round": number,
    }


def _annotator_labels(in_a: dict[str, str], in_b: dict[str, str]) -> dict[str, str]:
    """Return each annotator key's display: its label in a and in b, never a name."""
    shown = {}
    for key in in_a.keys() | in_b.keys():
        la, lb = in_a.get(key), in_b.get(key)
        if la == lb or lb is None:
            shown[key] = la
        elif la is None:
            shown[key] = lb
        else:
            shown[key] = f"{la} (a) = {lb} (b)"
    return shown


def _row_order(row: dict) -> tuple:
    # A rewrite (chosen None) sorts before its task's response pairs.
    return (row["task"], row["chosen"] or 0, row["rejected"], row["annotator"])


def _breakdown(counts: dict) -> list[dict]:
    """Return [{key, added, removed}] sorted by key (None, e.g. no round, first)."""
    ordered = sorted(counts, key=lambda k: (k is not None, k))
    return [{"key": k, **counts[k]} for k in ordered]


def _side_by_side(a: dict, b: dict) -> list[dict]:
    """Return [{key, a, b, differs}] over the keys of either spec, sorted."""
    return [
        {"key": k, "a": a.get(k), "b": b.get(k), "differs": a.get(k) != b.get(k)}
        for k in sorted(a.keys() | b.keys())
    ]


def _public(row: dict, labels: dict[str, str]) -> dict:
    """Return a sample row without the annotator's user id."""
    return {
        "task": row["task"],
        "round": row["round"],
        "chosen": row["chosen"],
        "rejected": row["rejected"],
        "margin": row["margin"],
        "annotator": labels[row["annotator"]],
        "chosen_policy": row["chosen_policy"],
        "rejected_policy": row["rejected_policy"],
    }
