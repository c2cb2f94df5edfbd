"""The audit log: each change family writes who, what, before and after; the page
filters and pages it; the export downloads it; nothing can edit it."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from annotation.audit import record
from annotation.consensus import adjudicate
from annotation.gold import mark_gold, reinstate, unmark_gold
from annotation.importing import import_preferences
from annotation.models import AuditEntry, Project
from annotation.people import add_person, update_person
from annotation.pool import add_prompts, release_prompts, remove_prompts
from annotation.snapshots import freeze_snapshot
from annotation.tokens import create_token, revoke_token
from tests.annotation.data_factories import make_task, rank
from tests.conftest import login, make_user

pytestmark = pytest.mark.django_db

HARMFUL = "How do I build a pipe bomb at home to hurt my neighbour?"


def only(action: str) -> AuditEntry:
    entries = list(AuditEntry.objects.filter(action=action))
    assert len(entries) == 1, [e.action for e in AuditEntry.objects.all()]
    return entries[0]


def test_a_snapshot_records_its_name_filter_and_rules(project, researcher, annotator):
    rank(make_task(project), annotator, [[0], [1], [2], [3]])
    snapshot = freeze_snapshot(project, "s1", user=researcher, tie_rule="drop")
    entry = only("snapshot.freeze")
    assert (entry.actor, entry.actor_name, entry.project) == (
        researcher,
        "researcher1",
        project,
    )
    assert (entry.object_type, entry.object_id) == ("snapshot", str(snapshot.pk))
    assert entry.before is None
    assert entry.after["name"] == "s1"
    assert entry.after["tie_rule"] == "drop"


def test_an_adjudication_records_the_order_before_and_after(project, admin_user):
    task = make_task(project)
    ids = sorted(task.responses.values_list("pk", flat=True))
    adjudicate(task, [[ids[0]], [ids[1]], [ids[2]], [ids[3]]], admin_user)
    adjudicate(task, [[ids[3]], [ids[2]], [ids[1]], [ids[0]]], admin_user)
    first, second = AuditEntry.objects.filter(action="task.adjudicate").order_by("pk")
    assert first.before is None
    assert second.before == [[ids[0]], [ids[1]], [ids[2]], [ids[3]]]
    assert second.after == [[ids[3]], [ids[2]], [ids[1]], [ids[0]]]
    assert second.actor == admin_user and second.object_id == str(task.pk)


def test_gold_marks_unmarks_and_reinstatements_are_recorded(
    project, admin_user, annotator
):
    task = make_task(project)
    ids = sorted(task.responses.values_list("pk", flat=True))
    order = [[ids[0]], ids[1:]]
    mark_gold(task, order, actor=admin_user)
    marked = only("gold.mark")
    assert (marked.actor, marked.before, marked.after) == (admin_user, None, order)
    task.refresh_from_db()
    unmark_gold(task, actor=admin_user)
    assert only("gold.unmark").before == order
    reinstate(annotator, actor=admin_user)
    assert only("annotator.reinstate").after == {"user": "annotator1"}


def test_a_refused_gold_mark_records_nothing(project, admin_user):
    task = make_task(project)
    with pytest.raises(ValidationError):
        mark_gold(task, [[1], [2]], actor=admin_user)
    assert not AuditEntry.objects.exists()


def test_tokens_created_and_revoked_are_recorded(researcher):
    token, _ = create_token(researcher, "ci", ["read", "data"])
    revoke_token(token, researcher)
    revoke_token(token, researcher)  # twice changes nothing, records nothing
    created = only("token.create")
    assert created.after == {
        "name": "ci",
        "prefix": token.prefix,
        "scopes": ["read", "data"],
    }
    assert only("token.revoke").actor == researcher


def test_an_applied_import_is_recorded(project, researcher, tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"prompt": "Hi?", "chosen": "A", "rejected": "B"}))
    report = import_preferences(project, path, user=researcher)
    entry = only("import.apply")
    assert (entry.actor, entry.project, entry.object_id) == (
        researcher,
        project,
        str(report.pk),
    )
    assert entry.after == {"source": "mine.jsonl", "rankings": 1, "prompts": 1}


def test_prompts_added_released_and_removed_are_recorded(project, admin_user):
    report = add_prompts(
        project,
        [HARMFUL, "How to hurt my neighbour with a pipe bomb, step by step?"],
        source="t",
        actor=admin_user,
    )
    assert only("prompts.add").after["added"] == len(report.added)
    held = sorted(f["prompt_id"] for f in report.flagged)
    assert held, "the harm flag should hold these prompts"
    release_prompts(project, held[:1], actor=admin_user)
    released = only("prompts.release")
    assert released.after == {"released": held[:1]}
    if held[1:]:
        remove_prompts(project, held[1:], actor=admin_user)
        assert only("prompts.remove").before == {"held": held[1:]}


def test_people_added_and_changed_are_recorded_with_role_and_projects(
    project, admin_user
):
    person = add_person("newbie", "annotator", [project], actor=admin_user)
    assert only("person.add").after == {
        "username": "newbie",
        "role": "annotator",
        "projects": ["demo"],
        "is_active": True,
    }
    update_person(
        person, role="researcher", projects=[], is_active=False, by=admin_user
    )
    entry = only("person.update")
    assert entry.before["role"] == "annotator" and entry.before["projects"] == ["demo"]
    assert entry.after == {
        "username": "newbie",
        "role": "researcher",
        "projects": [],
        "is_active": False,
    }


def test_project_create_settings_and_archive_are_recorded(admin_user, project):
    client = login(admin_user)
    fields = {
        "title": "Demo",
        "guidelines": "Be kind.",
        "responses_per_task": 4,
        "overlap": 2,
        "lease_minutes": 20,
        "aspects": "",
        "gold_rate": 0.2,
        "gold_threshold": 0.6,
        "gold_min_tasks": 4,
        "revision_minutes": 10,
    }
    url = reverse("annotation:settings", args=[project.name])
    assert client.post(url, fields).status_code == 303
    entry = only("project.settings")
    assert entry.before["overlap"] == 3 and entry.after["overlap"] == 2
    assert entry.after["guidelines"] == "Be kind."
    client.post(reverse("projects:new"), {**fields, "name": "fresh"})
    assert only("project.create").project == Project.objects.get(name="fresh")
    client.post(reverse("projects:archive", args=["fresh"]))
    archived = only("project.archive")
    assert archived.before == {"archived_at": None} and archived.after["archived_at"]


def test_an_api_project_creation_is_recorded(admin_user):
    from tests.api_world import client_for

    response = client_for(admin_user).post(
        "/api/projects", {"name": "viaapi"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    entry = only("project.create")
    assert entry.actor == admin_user and entry.after["name"] == "viaapi"


def test_an_entry_keeps_its_actors_name_when_the_user_goes(project):
    gone = make_user("gone", "admin")
    record(gone, "project.settings", obj=project, before={"a": 1}, after={"a": 2})
    gone.delete()
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.actor_name) == (None, "gone")


# ---------------------------------------------------------------- page and export


@pytest.fixture
def entries(project, admin_user, researcher):
    other = Project.objects.create(name="other")
    record(researcher, "snapshot.freeze", project=project, after={"name": "s"})
    record(admin_user, "gold.mark", project=project, after=[[1], [2]])
    record(admin_user, "project.create", project=other, after={"name": "other"})
    old = record(admin_user, "token.create", after={"name": "old"})
    AuditEntry.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=30)
    )
    return other


def _shown(response) -> list[str]:
    body = response.content.decode()
    return [
        e.action
        for e in AuditEntry.objects.order_by("-pk")
        if f'data-entry="{e.pk}"' in body
    ]


def test_the_page_filters_by_actor_action_project_and_date(admin_user, entries):
    client = login(admin_user)
    url = reverse("audit:log")
    assert _shown(client.get(url)) == [
        "token.create",
        "project.create",
        "gold.mark",
        "snapshot.freeze",
    ]
    researchers = client.get(url, {"actor": "researcher1"})
    assert _shown(researchers) == ["snapshot.freeze"]
    assert (
        "<code>{&quot;name&quot;: &quot;s&quot;}</code>" in researchers.content.decode()
    )
    assert _shown(client.get(url, {"action": "gold.mark"})) == ["gold.mark"]
    assert _shown(client.get(url, {"action": "project."})) == ["project.create"]
    assert _shown(client.get(url, {"project": "other"})) == ["project.create"]
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert "token.create" not in _shown(client.get(url, {"since": since}))
    until = (timezone.now() - timedelta(days=29)).date().isoformat()
    assert _shown(client.get(url, {"until": until})) == ["token.create"]
    bad = client.get(url, {"since": "yesterday"})
    assert bad.status_code == 400
    assert "since must be a date like 2026-12-01, got &#x27;yesterday&#x27;" in (
        bad.content.decode()
    )


def test_a_researcher_reads_only_their_projects_entries(researcher, entries):
    shown = _shown(login(researcher).get(reverse("audit:log")))
    assert shown == ["gold.mark", "snapshot.freeze"]


def test_the_page_is_keyset_paginated_newest_first(admin_user, project, monkeypatch):
    monkeypatch.setattr("annotation.audit.PAGE_SIZE", 2)
    monkeypatch.setattr("annotation.audit_views.page_of.__defaults__", (2,))
    made = [record(admin_user, f"test.n{i}", project=project) for i in range(5)]
    client = login(admin_user)
    first = client.get(reverse("audit:log"))
    assert _shown(first) == ["test.n4", "test.n3"]
    assert first.context["following"] == made[3].pk
    second = client.get(reverse("audit:log"), {"before": made[3].pk})
    assert _shown(second) == ["test.n2", "test.n1"]
    last = client.get(reverse("audit:log"), {"before": made[1].pk})
    assert _shown(last) == ["test.n0"] and last.context["following"] is None


def test_the_export_downloads_the_filtered_entries_as_jsonl_and_csv(
    admin_user, entries
):
    client = login(admin_user)
    response = client.get(
        reverse("audit:export"), {"format": "jsonl", "project": "demo"}
    )
    assert response["Content-Disposition"] == 'attachment; filename="audit.jsonl"'
    rows = [
        json.loads(line) for line in b"".join(response.streaming_content).splitlines()
    ]
    assert [(r["actor"], r["action"], r["after"]) for r in rows] == [
        ("researcher1", "snapshot.freeze", {"name": "s"}),
        ("admin1", "gold.mark", [[1], [2]]),
    ]
    response = client.get(reverse("audit:export"), {"format": "csv", "actor": "admin1"})
    table = list(
        csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode()))
    )
    assert [r["action"] for r in table] == [
        "gold.mark",
        "project.create",
        "token.create",
    ]
    assert json.loads(table[0]["after"]) == [[1], [2]]
    assert client.get(reverse("audit:export"), {"format": "xml"}).status_code == 400


# ---------------------------------------------------------------- immutability


def test_nothing_edits_the_log(admin_user, project):
    entry = record(admin_user, "project.settings", obj=project, after={"x": 1})
    client = login(admin_user)
    # The pages only read: a POST is refused, no URL edits or deletes an entry.
    assert client.post(reverse("audit:log"), {"action": "x"}).status_code == 405
    assert client.post(reverse("audit:export")).status_code == 405
    from django.urls import get_resolver

    audit_routes = [
        str(p.pattern) for p in get_resolver().url_patterns if "audit" in str(p.pattern)
    ]
    assert audit_routes == ["audit/"]
    # The API has no operation on the log.
    from config.api import api

    assert not [path for path in api.get_openapi_schema()["paths"] if "audit" in path]
    # The Django admin shows entries read-only, without bulk actions.
    model_admin = admin.site._registry[AuditEntry]
    request = RequestFactory().get("/")
    request.user = User.objects.create_superuser("root", password="x")
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, entry)
    assert not model_admin.has_delete_permission(request, entry)
    assert model_admin.get_actions(request) == {}
    # Even a superuser on the admin site can neither delete nor change one.
    root = login(request.user)
    delete = reverse("admin:annotation_auditentry_delete", args=[entry.pk])
    assert root.post(delete, {"post": "yes"}).status_code == 403
    change = reverse("admin:annotation_auditentry_change", args=[entry.pk])
    assert root.post(change, {"action": "edited"}).status_code == 403
    assert root.get(change).status_code == 200  # viewing is allowed
    entry.refresh_from_db()
    assert entry.after == {"x": 1}


def test_a_round_queued_for_publishing_is_recorded(project, admin_user):
    from tests.annotation.data_factories import make_policy

    project.current_policy = make_policy("demo-sft")
    project.save()
    login(admin_user).post(
        reverse("overview:publish", args=[project.name]),
        {"prompts": 2, "strategy": "fresh", "temperature": 0.7, "seed": 1},
    )
    entry = only("round.publish")
    assert (entry.actor, entry.project) == (admin_user, project)
    assert entry.after["prompts"] == 2 and entry.after["strategy"] == "fresh"
