"""The audit log: every change by an admin or researcher, who, when, what, before and after.

`record` is the one writer; each workflow function calls it inside the transaction
of its change, so a change and its entry commit or roll back together. Entries are
never edited or deleted: nothing here, in the pages, the API or the admin does.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, datetime, time

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import QuerySet
from django.utils import timezone

from annotation.membership import visible_projects
from annotation.models import AuditEntry, Project
from config.roles import is_admin

PAGE_SIZE = 50
FILTERS = ("actor", "action", "project", "since", "until")
EXPORT_FIELDS = (
    "id",
    "created_at",
    "actor",
    "action",
    "project",
    "object_type",
    "object_id",
    "before",
    "after",
)


class _Encoder(DjangoJSONEncoder):
    # Dates, decimals and UUIDs as Django writes them; rows and anything else by str().
    def default(self, o: object) -> object:
        try:
            return super().default(o)
        except TypeError:
            return str(o)


def _json(value: object) -> object:
    if value is None:
        return None
    return json.loads(json.dumps(value, cls=_Encoder))


def record(
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    *,
    project: Project | None = None,
    obj: models.Model | None = None,
    before: object = None,
    after: object = None,
) -> AuditEntry:
    """Write one audit entry; call it inside the transaction of the change.

    `action` is a slug such as `snapshot.freeze`; `obj` names the changed row (its
    project is taken when `project` is not given); `before` and `after` are JSON
    values (None when there was nothing before or is nothing after).
    """
    user = actor if getattr(actor, "is_authenticated", False) else None
    if project is None and isinstance(obj, Project):
        project_id = obj.pk
    elif project is None and obj is not None:
        project_id = getattr(obj, "project_id", None)
    else:
        project_id = project.pk if project is not None else None
    return AuditEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user is not None else "",
        action=action,
        project_id=project_id,
        object_type=obj._meta.model_name if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        before=_json(before),
        after=_json(after),
    )


def record_model_registration(
    sender: type,
    *,
    policy: models.Model,
    actor: AbstractBaseUser | None,
    source_kind: str,
    **kwargs,
) -> None:
    """Record `inference.registry.model_registered`: who brought which model in, from where."""
    record(
        actor,
        "model.register",
        obj=policy,
        after={
            "name": policy.name,
            "kind": policy.kind,
            "source": policy.source,
            "source_kind": source_kind,
            "quantization": policy.quantization,
            "architecture": policy.architecture,
            "parameter_count": policy.parameter_count,
            "weights_sha256": policy.weights_sha256,
            "parent": policy.parent.name if policy.parent_id else None,
        },
    )


def readable_entries(user: AbstractBaseUser) -> QuerySet[AuditEntry]:
    """Return the entries the user may read: all for admins, their projects' for others."""
    entries = AuditEntry.objects.select_related("project")
    if is_admin(user):
        return entries
    return entries.filter(project__in=visible_projects(user))


def _day(key: str, value: str, end: bool) -> datetime:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{key} must be a date like 2026-12-01, got {value!r}; fix it or clear it"
        ) from None
    return timezone.make_aware(datetime.combine(day, time.max if end else time.min))


def filter_entries(entries: QuerySet[AuditEntry], params: dict) -> QuerySet[AuditEntry]:
    """Narrow entries by actor username, action (a prefix such as `snapshot.` works),
    project name and a date range (`since`, `until`, inclusive days).

    Raise ValidationError naming a malformed date.
    """
    if params.get("actor"):
        entries = entries.filter(actor_name=params["actor"])
    if params.get("action"):
        action = params["action"]
        if action.endswith("."):
            entries = entries.filter(action__startswith=action)
        else:
            entries = entries.filter(action=action)
    if params.get("project"):
        entries = entries.filter(project__name=params["project"])
    if params.get("since"):
        entries = entries.filter(created_at__gte=_day("since", params["since"], False))
    if params.get("until"):
        entries = entries.filter(created_at__lte=_day("until", params["until"], True))
    return entries


def page_of(
    entries: QuerySet[AuditEntry], before: str | None, size: int = PAGE_SIZE
) -> tuple[list[AuditEntry], int | None]:
    """Return one page, newest first, below the id `before`, and the next page's key.

    Keyset pagination on the primary key: a page costs the same at any depth.
    """
    if before:
        try:
            entries = entries.filter(pk__lt=int(before))
        except ValueError:
            raise ValidationError(
                f"before must be an entry id, got {before!r}; follow the page links"
            ) from None
    rows = list(entries.order_by("-pk")[: size + 1])
    following = rows[size - 1].pk if len(rows) > size else None
    return rows[:size], following


def as_row(entry: AuditEntry) -> dict:
    """Return an entry as a plain dict for the export."""
    return {
        "id": entry.pk,
        "created_at": entry.created_at.isoformat(),
        "actor": entry.actor_name,
        "action": entry.action,
        "project": entry.project.name if entry.project else "",
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "before": entry.before,
        "after": entry.after,
    }


def export_lines(entries: QuerySet[AuditEntry], fmt: str) -> Iterator[str]:
    """Yield the entries, oldest first, as JSON lines or CSV (before/after as JSON text).

    Raise ValidationError for an unknown format.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValidationError(f"format must be jsonl or csv, got {fmt!r}")
    return _lines(entries, fmt)


def _lines(entries: QuerySet[AuditEntry], fmt: str) -> Iterator[str]:
    rows = (as_row(e) for e in entries.order_by("pk").iterator(chunk_size=2000))
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row, ensure_ascii=False) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in rows:
        row["before"] = json.dumps(row["before"])
        row["after"] = json.dumps(row["after"])
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
