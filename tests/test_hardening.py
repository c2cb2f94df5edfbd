"""Issue 12, items 1, 3, 4 and 7: bounded input checked before any transaction, gold
tasks neither visible nor skippable, no lease by GET, no 500 on odd input."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation.assignment import (
    RankingSubmission,
    next_task,
    skip_task,
    submit_ranking,
)
from annotation.gold import mark_gold
from annotation.models import AnnotatorProfile, Lease, Project, Ranking
from config.api import api
from tests.annotation.factories import make_task, response_ids
from tests.api_world import client_for
from tests.conftest import login

pytestmark = pytest.mark.django_db


def _lease(client, project) -> dict:
    response = client.post(f"/api/projects/{project.name}/next-task")
    assert response.status_code == 200
    return response.json()


def _submit(client, lease: dict, body: dict | str):
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        f"/api/leases/{lease['id']}/ranking", raw, content_type="application/json"
    )


def _in_order(lease: dict) -> list[list[int]]:
    return [[r["handle"]] for r in lease["task"]["responses"]]


# 1. Bounded input, checked before anything else.


def test_an_order_longer_than_the_task_is_refused_by_its_count():
    order = [[1], [2], [3]] + [[1]] * 2_000
    with pytest.raises(ValidationError, match="more responses than this task's 3"):
        Ranking.validate_order(order, {1, 2, 3})


def test_an_invalid_ranking_is_refused_before_any_transaction_opens(project, annotator):
    make_task(project)
    lease = next_task(project, annotator)
    with CaptureQueriesContext(connection) as queries:
        with pytest.raises(ValidationError, match="more responses"):
            submit_ranking(
                lease, annotator, RankingSubmission([[1]] * 50), project=project
            )
    assert not [q for q in queries.captured_queries if "SAVEPOINT" in q["sql"]]
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE


@pytest.mark.parametrize(
    "extra",
    [
        {"order": [[1]] * 5_000},
        {"rationale": "x" * 20_001},
        {"rewrite": "x" * 50_001},
        {"unsafe": list(range(5_000))},
        {"aspect_ratings": {str(i): {"helpfulness": 3} for i in range(5_000)}},
        {"aspect_ratings": {"1": {"a" * 5_000: 3}}},
    ],
)
def test_the_api_caps_every_list_and_string_of_a_ranking(leased, extra):
    client, lease = leased
    response = _submit(client, lease, {"order": _in_order(lease), **extra})
    assert response.status_code == 422
    assert Ranking.objects.count() == 0


@pytest.fixture
def leased(project, annotator):
    make_task(project)
    client = client_for(annotator)
    return client, _lease(client, project)


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_active_seconds_are_refused(leased, value):
    client, lease = leased
    body = (
        json.dumps({"order": _in_order(lease)})[:-1] + f', "active_seconds": {value}}}'
    )
    response = _submit(client, lease, body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(
        "value at $.active_seconds is not a finite number"
    )
    assert Ranking.objects.count() == 0


def test_a_non_finite_number_anywhere_in_an_api_body_is_refused(admin_user, project):
    response = client_for(admin_user).post(
        "/api/projects/demo/training-rounds",
        '{"method": "dpo", "options": {"stop_grace_seconds": Infinity}}',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert (
        "$.options.stop_grace_seconds is not a finite number"
        in (response.json()["detail"])
    )


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), -1.0])
def test_a_submission_refuses_a_non_finite_time_wherever_it_comes_from(seconds):
    with pytest.raises(ValidationError, match="active_seconds must be a finite"):
        RankingSubmission([[1]], active_seconds=seconds)


def _unbounded(schema: dict, defs: dict, where: str, seen: set) -> list[str]:
    """Return the places in a request schema where a string, list or object has no cap."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        return _unbounded(defs[name], defs, name, seen | {name})
    found = []
    for key in ("anyOf", "oneOf", "allOf"):
        for i, option in enumerate(schema.get(key, [])):
            found += _unbounded(option, defs, f"{where}|{i}", seen)
    kind = schema.get("type")
    if kind == "string" and "enum" not in schema and schema.get("format") != "binary":
        if "maxLength" not in schema:
            found.append(where)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(where)
        found += _unbounded(schema.get("items", {}), defs, f"{where}[]", seen)
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                found.append(where)
            found += _unbounded(extra, defs, f"{where}{{}}", seen)
            found += _unbounded(
                schema.get("propertyNames", {}), defs, f"{where}{{key}}", seen
            )
        for name, prop in schema.get("properties", {}).items():
            found += _unbounded(prop, defs, f"{where}.{name}", seen)
    return found


def test_every_request_body_and_query_string_of_the_api_is_capped():
    schema = api.get_openapi_schema()
    defs = schema["components"]["schemas"]
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                found += _unbounded(
                    parameter["schema"], defs, f"{where} {parameter['name']}", set()
                )
            for content in operation.get("requestBody", {}).get("content", {}).values():
                found += _unbounded(content["schema"], defs, where, set())
    # Path parameters are bounded by the URL; the import's file by the upload limit.
    found = [f for f in found if "{" + f.rsplit(" ", 1)[-1] + "}" not in f]
    assert found == []


# 3. Gold tasks are neither visible nor skippable.


def test_annotators_do_not_see_overlap_or_ranking_counts(
    project, annotator, researcher
):
    make_task(project)
    lease = _lease(client_for(annotator), project)
    assert lease["task"]["overlap"] is None
    assert lease["task"]["ranking_count"] is None
    seen = client_for(researcher).get(f"/api/tasks/{lease['task']['id']}").json()
    assert (seen["overlap"], seen["ranking_count"]) == (3, 0)


@pytest.fixture
def gold_task(project):
    project.gold_rate, project.gold_min_tasks, project.gold_threshold = 1.0, 1, 0.5
    project.save()
    task = make_task(project, k=2)
    make_task(project, k=2)
    a, b = response_ids(task)
    mark_gold(task, [[a], [b]])
    return task


def test_a_skipped_gold_task_scores_zero(project, annotator, gold_task):
    lease = next_task(project, annotator)
    assert lease.task_id == gold_task.pk
    skip_task(lease, annotator, "cannot judge")
    profile = AnnotatorProfile.objects.get(user=annotator)
    assert profile.is_paused
    assert "gold accuracy 0% over 1 gold tasks" in profile.paused_reason


def test_a_paused_annotator_cannot_submit_through_the_plain_ranking_operation(
    project, annotator
):
    make_task(project)
    client = client_for(annotator)
    lease = _lease(client, project)
    AnnotatorProfile.objects.filter(user=annotator).update(
        is_paused=True, paused_reason="gold accuracy 20%"
    )
    response = _submit(client, lease, {"order": _in_order(lease)})
    assert response.status_code == 403
    assert "gold accuracy 20%" in response.json()["detail"]
    assert Ranking.objects.count() == 0


def test_a_paused_annotator_cannot_skip(project, annotator):
    make_task(project)
    client = client_for(annotator)
    lease = _lease(client, project)
    AnnotatorProfile.objects.filter(user=annotator).update(is_paused=True)
    response = client.post(
        f"/api/leases/{lease['id']}/skip",
        {"reason": "cannot judge"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert Ranking.objects.count() == 0


# 4. A GET never leases.


def test_opening_the_workspace_leases_nothing_until_it_posts(project, annotator):
    make_task(project)
    client = login(annotator)
    url = reverse("annotation:annotate", args=[project.name])
    page = client.get(url)
    assert page.status_code == 200
    assert Lease.objects.count() == 0
    assert f'hx-post="{url}"' in page.content.decode()
    assert client.post(url).status_code == 303
    assert Lease.objects.filter(annotator=annotator).count() == 1
    assert "data-lease" in client.get(url).content.decode()


# 7. Odd input answers 400 or 404 naming the problem, never 500.


def test_deeply_nested_json_is_a_400_naming_the_nesting(leased):
    client, lease = leased
    response = _submit(client, lease, "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
    assert "nests too deeply" in response.json()["detail"]
    moderately = _submit(client, lease, {"order": [[[[[[[[[[[[1]]]]]]]]]]]] * 10})
    assert moderately.status_code in (400, 422)


def test_aspect_ratings_keyed_by_a_non_handle_are_a_400_naming_it(leased):
    client, lease = leased
    response = _submit(
        client, lease, {"order": _in_order(lease), "aspect_ratings": {"x": {}}}
    )
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "unknown response 'x'; this task's responses are 1 to 4"
    )


def test_an_id_beyond_64_bits_is_a_404_in_the_api_and_a_form_error_on_pages(
    project, annotator, researcher
):
    huge = "99999999999999999999"
    response = client_for(researcher).get(f"/api/tasks/{huge}")
    assert response.status_code == 404
    assert response.json()["detail"] == f"no task {huge} that you can see"
    make_task(project)
    client = login(annotator)
    client.post(reverse("annotation:annotate", args=[project.name]))
    page = client.post(
        reverse("annotation:submit", args=[project.name]),
        {"lease": huge, "order": "[[1]]"},
    )
    assert page.status_code == 400
    assert "Ensure this value is less than or equal to" in page.content.decode()


def test_a_form_order_nested_too_deeply_is_a_form_error(project, annotator):
    make_task(project)
    client = login(annotator)
    url = reverse("annotation:annotate", args=[project.name])
    client.post(url)
    lease = Lease.objects.get(annotator=annotator)
    response = client.post(
        reverse("annotation:submit", args=[project.name]),
        {"lease": lease.pk, "order": "[" * 3_000 + "]" * 3_000},
    )
    assert response.status_code == 400
    assert "Nothing was stored" in response.content.decode()


def test_an_import_of_undetectable_format_creates_no_project(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"question": "?", "answer": "!"}) + "\n")
    with pytest.raises(CommandError, match="cannot tell the format"):
        call_command("import_preferences", str(path), "--project", "brand-new")
    assert not Project.objects.filter(name="brand-new").exists()


def _forms() -> list:
    from annotation import data_views, forms, overview_views
    from training import views as training_views
    from training.forms import LaunchForm

    classes = [
        forms.RankingForm,
        forms.SkipForm,
        forms.AdjudicateForm,
        forms.GoldForm,
        forms.ProjectSettingsForm,
        data_views.SnapshotForm,
        data_views.ImportForm,
        data_views.TokenForm,
        overview_views.PublishForm,
        training_views.ProjectForm,
    ]
    return [(c.__name__, c.base_fields) for c in classes] + [
        ("LaunchForm", LaunchForm().fields)
    ]


def test_every_text_field_of_every_form_is_capped(db):
    from django import forms

    uncapped = [
        f"{form}.{name}"
        for form, fields in _forms()
        for name, field in fields.items()
        if isinstance(field, forms.CharField) and field.max_length is None
    ]
    assert uncapped == []


def test_a_body_over_the_upload_limit_is_a_json_400(admin_user, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    response = client_for(admin_user).post(
        "/api/projects",
        json.dumps({"name": "big", "guidelines": "x" * 2_000}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the request body is over 1,000 bytes")
