"""Tests of the REST API's behaviour: auth by token and session with CSRF, the
workflow operations, pagination, filtering, error bodies, downloads and imports."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from annotation.membership import add_member
from annotation.models import ApiToken, Prompt, Ranking, Snapshot
from annotation.tokens import create_token
from tests.annotation.data_factories import annotators, make_task, rank
from tests.api_world import build_world, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def bearer(raw: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_openapi_schema_is_3_1_and_lists_the_operations(db):
    schema = Client().get("/api/openapi.json").json()
    assert schema["openapi"] == "3.1.0"
    assert "/api/projects/{name}/snapshots" in schema["paths"]
    assert "/api/leases/{lease_id}/ranking" in schema["paths"]


def test_docs_page_is_served(db):
    assert Client().get("/api/docs").status_code == 200


def test_token_authenticates_and_records_last_use(researcher, project):
    token, raw = create_token(researcher, "laptop", ["read"])
    response = Client().get("/api/projects", **bearer(raw))
    assert response.status_code == 200
    assert [p["name"] for p in response.json()["items"]] == ["demo"]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_token_is_stored_hashed_and_shown_once(researcher):
    response = client_for(researcher).post(
        "/api/tokens",
        {"name": "ci", "scopes": ["read"]},
        content_type="application/json",
    )
    raw = response.json()["token"]
    stored = ApiToken.objects.get()
    assert raw.startswith("fl_") and len(raw) > 40
    assert raw not in (stored.digest, stored.prefix)
    listed = client_for(researcher).get("/api/tokens").json()["items"]
    assert "token" not in listed[0]


def test_revoked_token_no_longer_authenticates(researcher, project):
    token, raw = create_token(researcher, "laptop", ["read"])
    client = client_for(researcher)
    assert client.delete(f"/api/tokens/{token.pk}").json()["revoked_at"] is not None
    assert Client().get("/api/projects", **bearer(raw)).status_code == 401


def test_a_user_cannot_revoke_someone_elses_token(researcher, admin_user):
    token, _ = create_token(admin_user, "theirs", ["read"])
    assert client_for(researcher).delete(f"/api/tokens/{token.pk}").status_code == 404


def test_wrong_token_gets_401_with_a_detail(db):
    response = Client().get("/api/projects", **bearer("fl_not-a-real-token"))
    assert (response.status_code, response.json()) == (401, {"detail": "Unauthorized"})


def test_session_post_without_csrf_token_is_refused(admin_user, project):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(
        "/api/projects", {"name": "x"}, content_type="application/json"
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_session_post_with_csrf_token_is_accepted(admin_user, project):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    client.get("/data/tokens/")  # sets the csrftoken cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post(
        "/api/projects",
        {"name": "x"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf,
    )
    assert response.status_code == 201


def test_token_post_needs_no_csrf_token(admin_user, project):
    _, raw = create_token(admin_user, "script", ["admin"])
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/api/projects", {"name": "y"}, content_type="application/json", **bearer(raw)
    )
    assert response.status_code == 201


def test_annotator_flow_next_task_then_submit(annotator, project):
    task = make_task(project)
    client = client_for(annotator)
    lease = client.post(f"/api/projects/{project.name}/next-task").json()
    assert lease["task"]["id"] == task.pk
    handles = [r["handle"] for r in lease["task"]["responses"]]
    assert handles == [1, 2, 3, 4]
    response = client.post(
        f"/api/leases/{lease['id']}/ranking",
        {"order": [[3], [1, 2], [4]]},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert response.json()["order"] == [[3], [1, 2], [4]]
    ids = list(task.responses.order_by("position", "id").values_list("pk", flat=True))
    assert Ranking.objects.get().order == [[ids[2]], [ids[0], ids[1]], [ids[3]]]


def test_submit_and_next_stores_the_ranking_and_leases_the_next_task(
    annotator, project
):
    first, second = make_task(project), make_task(project, "Second question?")
    client = client_for(annotator)
    lease = client.post(f"/api/projects/{project.name}/next-task").json()
    body = {"order": [[r["handle"]] for r in lease["task"]["responses"]]}
    url = f"/api/leases/{lease['id']}/ranking-and-next-task"
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 201
    answer = response.json()
    assert answer["ranking"]["task_id"] == first.pk
    assert answer["next"]["task"]["id"] == second.pk
    assert len(answer["next"]["task"]["responses"]) == 4
    # The last task: the ranking is stored and no lease follows.
    last = answer["next"]
    body = {"order": [[r["handle"]] for r in last["task"]["responses"]]}
    response = client.post(
        f"/api/leases/{last['id']}/ranking-and-next-task",
        body,
        content_type="application/json",
    )
    assert (response.status_code, response.json()["next"]) == (201, None)
    assert Ranking.objects.filter(annotator=annotator).count() == 2


def test_submit_and_next_sent_twice_stores_one_ranking(annotator, project):
    make_task(project)
    client = client_for(annotator)
    lease = client.post(f"/api/projects/{project.name}/next-task").json()
    body = {"order": [[r["handle"]] for r in lease["task"]["responses"]]}
    url = f"/api/leases/{lease['id']}/ranking-and-next-task"
    first = client.post(url, body, content_type="application/json").json()
    again = client.post(url, body, content_type="application/json").json()
    assert first["ranking"]["id"] == again["ranking"]["id"]
    assert Ranking.objects.count() == 1


def test_bad_order_gets_400_naming_the_problem_and_stores_nothing(annotator, project):
    make_task(project)
    client = client_for(annotator)
    lease = client.post(f"/api/projects/{project.name}/next-task").json()
    response = client.post(
        f"/api/leases/{lease['id']}/ranking",
        {"order": [[1], [2]]},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("responses missing from the order")
    assert Ranking.objects.count() == 0


def test_next_task_is_204_when_nothing_is_left(annotator, project):
    assert (
        client_for(annotator)
        .post(f"/api/projects/{project.name}/next-task")
        .status_code
        == 204
    )


def test_annotator_sees_only_tasks_leased_to_them(annotator, project):
    world = build_world(project, annotator)
    make_task(project, "Another question?")
    items = (
        client_for(annotator).get(f"/api/projects/{project.name}/tasks").json()["items"]
    )
    assert [t["id"] for t in items] == [world["task"]]


def test_annotator_cannot_read_a_task_not_leased_to_them(annotator, project):
    other = make_task(project, "Not yours?")
    response = client_for(annotator).get(f"/api/tasks/{other.pk}")
    assert response.status_code == 404


def test_another_annotators_lease_is_refused(annotator, project):
    world = build_world(project, annotator)
    (other,) = annotators(1)
    add_member(other, project)
    response = client_for(other).post(
        f"/api/leases/{world['lease']}/skip",
        {"reason": "x"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert response.json() == {
        "detail": f"lease {world['lease']} belongs to another annotator"
    }


def test_prompts_bulk_create_reports_what_curation_left_out(admin_user, project):
    response = client_for(admin_user).post(
        f"/api/projects/{project.name}/prompts",
        {
            "prompts": [
                "How do tides work on Earth?",
                "How do tides work on Earth?",
                "hi",
            ]
        },
        content_type="application/json",
    )
    body = response.json()
    assert response.status_code == 201
    assert len(body["added"]) == 1
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "exact duplicate of input 0"),
        (2, "too short: 2 characters; the minimum is 8"),
    ]


def test_list_is_paginated_with_limit_and_offset(researcher, project):
    for i in range(5):
        Prompt.objects.create(project=project, messages=f"Question number {i}?")
    body = (
        client_for(researcher)
        .get(f"/api/projects/{project.name}/prompts?limit=2&offset=2")
        .json()
    )
    assert body["count"] == 5
    assert [p["messages"][0]["content"] for p in body["items"]] == [
        "Question number 2?",
        "Question number 3?",
    ]


def test_prompts_can_be_filtered_by_flag(researcher, project):
    Prompt.objects.create(project=project, messages="Plain question?")
    Prompt.objects.create(
        project=project,
        messages="Flagged question?",
        flags=[{"flag": "harmful", "reason": "x"}],
    )
    body = (
        client_for(researcher)
        .get(f"/api/projects/{project.name}/prompts?flagged=true")
        .json()
    )
    assert [p["messages"][0]["content"] for p in body["items"]] == ["Flagged question?"]


def test_unknown_project_is_404_with_its_name(researcher, db):
    response = client_for(researcher).get("/api/projects/nope/snapshots")
    assert response.json() == {"detail": "no project named 'nope' among your projects"}


def test_snapshot_create_with_bad_filter_is_400_naming_it(researcher, project):
    response = client_for(researcher).post(
        f"/api/projects/{project.name}/snapshots",
        {"name": "s", "filter": {"gold": "sometimes"}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("filter gold must be one of")


def create_and_freeze(client, project, payload: dict) -> dict:
    """POST a snapshot (202, queued), run its freeze as the worker would, and
    return GET /api/snapshots/{id}."""
    from annotation.snapshots import run_freeze

    response = client.post(
        f"/api/projects/{project.name}/snapshots",
        payload,
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    run_freeze(response.json()["id"])
    return client.get(f"/api/snapshots/{response.json()['id']}").json()


def test_snapshot_created_through_the_api_records_its_author(researcher, project):
    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1], [2], [3]])
    body = create_and_freeze(
        client_for(researcher), project, {"name": "s", "pair_rule": "adjacent"}
    )
    assert (body["row_count"], body["created_by"], body["pair_rule"]) == (
        3,
        "researcher1",
        "adjacent",
    )
    assert (body["status"], body["progress"], body["error"]) == ("done", 1.0, "")
    assert body["sha256"] == Snapshot.objects.get().sha256


def test_an_api_freeze_is_queued_for_the_worker_and_its_pairs_wait_for_it(
    researcher, project, django_capture_on_commit_callbacks
):
    from annotation.snapshots import run_freeze

    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1], [2], [3]])
    client = client_for(researcher)
    with django_capture_on_commit_callbacks() as queued:
        response = client.post(
            f"/api/projects/{project.name}/snapshots",
            {"name": "s"},
            content_type="application/json",
        )
    body = response.json()
    assert response.status_code == 202
    assert (body["status"], body["progress"], body["row_count"]) == ("queued", 0.0, 0)
    assert len(queued) == 1  # the job is enqueued once the row is committed
    assert not Snapshot.objects.exists()  # a round or an export cannot see it yet
    listed = client.get(f"/api/projects/{project.name}/snapshots").json()["items"]
    assert [(s["name"], s["status"]) for s in listed] == [("s", "queued")]
    early = client.get(f"/api/snapshots/{body['id']}/download")
    assert early.status_code == 409
    assert "still being frozen (queued, 0%)" in early.json()["detail"]
    taken = client.post(
        f"/api/projects/{project.name}/snapshots",
        {"name": "s"},
        content_type="application/json",
    )
    assert taken.status_code == 400
    assert "already has a snapshot named 's'" in taken.json()["detail"]

    assert run_freeze(body["id"]).status == "done"
    assert run_freeze(body["id"]).row_count == 6  # delivered twice: nothing more
    assert Snapshot.objects.get().pairs.count() == 6
    assert client.get(f"/api/snapshots/{body['id']}/download").status_code == 200


def test_a_snapshot_can_make_rewrites_chosen_through_the_api_and_its_page_says_so(
    researcher, project
):
    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1], [2], [3]], rewrite="A better answer.")
    client = client_for(researcher)
    body = create_and_freeze(
        client,
        project,
        {"name": "s", "pair_rule": "best_vs_rest", "rewrite_rule": "chosen"},
    )
    assert (body["row_count"], body["rewrite_rule"]) == (4, "chosen")
    assert (body["stats"]["rewrites"], body["stats"]["rewrite_pairs"]) == (1, 4)
    page = client.get(f"/data/snapshots/{body['id']}/").content.decode()
    assert "rewrites chosen (1 rewrite, 4 of the pairs)" in page
    refused = client.post(
        f"/api/projects/{project.name}/snapshots",
        {"name": "t", "rewrite_rule": "pairs"},
        content_type="application/json",
    )
    assert refused.status_code == 422
    assert "rewrite_rule" in refused.content.decode()


@pytest.mark.parametrize("file_format", ["jsonl", "jsonl.gz", "parquet", "hf"])
def test_snapshot_downloads_in_each_file_format(
    researcher, project, file_format, settings, tmp_path
):
    settings.EXPORT_DIR = tmp_path
    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1], [2], [3]])
    snapshot = Snapshot.objects.get(
        pk=create_and_freeze(client_for(researcher), project, {"name": "s"})["id"]
    )
    response = client_for(researcher).get(
        f"/api/snapshots/{snapshot.pk}/download?file_format={file_format}"
    )
    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    if file_format == "jsonl":
        assert len(content.splitlines()) == 6
        assert json.loads(content.splitlines()[0])["chosen"][0]["content"] == "Four."
    elif file_format == "jsonl.gz":
        assert content[:2] == b"\x1f\x8b"
    elif file_format == "parquet":
        assert content[:4] == b"PAR1"
    else:
        names = zipfile.ZipFile(io.BytesIO(content)).namelist()
        assert any(n.endswith("dataset_info.json") for n in names)


def _import_by_the_worker(client, project, **fields) -> dict:
    """Queue an import through the API, run its job as the worker would, and return
    the import as `GET /imports/{id}` then shows it."""
    from annotation.importing import run_import

    upload = SimpleUploadedFile(
        "prefs.jsonl",
        b'{"prompt": "p?", "chosen": "a", "rejected": "b"}\n{"prompt": "q?", "chosen": "s", "rejected": "s"}\n',
    )
    response = client.post(
        f"/api/projects/{project.name}/imports", {"file": upload, **fields}
    )
    assert (response.status_code, response.json()["status"]) == (202, "queued")
    run_import(response.json()["id"])
    return client.get(f"/api/imports/{response.json()['id']}").json()


def test_import_with_invalid_records_reports_them_and_lands_nothing(
    researcher, project
):
    body = _import_by_the_worker(client_for(researcher), project)
    assert (body["status"], body["is_applied"]) == ("done", False)
    assert body["rejected"] == [
        {
            "line": 2,
            "reason": "identical chosen and rejected (or repeated response) texts",
        }
    ]
    assert Ranking.objects.count() == 0


def test_import_with_skip_invalid_lands_the_valid_records(researcher, project):
    body = _import_by_the_worker(client_for(researcher), project, skip_invalid="true")
    assert (body["status"], body["rankings_created"], body["source"]) == (
        "done",
        1,
        "prefs.jsonl",
    )


def test_training_round_shows_its_snapshot_hash_and_jobs(
    researcher, annotator, project
):
    world = build_world(project, annotator)
    body = (
        client_for(researcher)
        .get(f"/api/training-rounds/{world['training_round']}")
        .json()
    )
    assert body["snapshot"] == "first"
    assert body["snapshot_sha256"] == Snapshot.objects.get(name="first").sha256
    assert body["jobs"] == []


def test_policies_can_be_filtered_by_kind(researcher, annotator, project):
    build_world(project, annotator)
    from inference.models import Policy

    Policy.objects.create(name="rm-1", kind=Policy.Kind.REWARD_MODEL)
    items = (
        client_for(researcher).get("/api/policies?kind=reward_model").json()["items"]
    )
    assert [p["name"] for p in items] == ["rm-1"]


def test_researcher_pages_render(researcher, annotator, project):
    world = build_world(project, annotator)
    client = client_for(researcher)
    assert client.get(f"/data/projects/{project.name}/snapshots/").status_code == 200
    page = client.get(f"/data/snapshots/{world['snapshot']}/")
    assert b"SHA-256" in page.content
    assert client.get(f"/data/projects/{project.name}/imports/").status_code == 200


def test_snapshot_page_freezes_from_the_form(researcher, project):
    from annotation.snapshots import run_freeze

    task = make_task(project)
    (a,) = annotators(1)
    rank(task, a, [[0], [1], [2], [3]])
    client = client_for(researcher)
    response = client.post(
        f"/data/projects/{project.name}/snapshots/",
        {
            "name": "web",
            "gold": "include",
            "simulated": "include",
            "flagged": "include",
            "skipped": "include",
            "votes": "every",
            "pair_rule": "all_pairs",
            "tie_rule": "drop",
            "dedup_rule": "none",
            "margin_rule": "rank",
            "rewrite_rule": "sft",
        },
    )
    snapshot = Snapshot.any_state.get(name="web")
    assert response.status_code == 302
    assert response["Location"] == f"/data/snapshots/{snapshot.pk}/"
    assert snapshot.status == "queued"
    page = client.get(response["Location"]).content.decode()
    assert "Queued the freeze of web" in page
    assert 'data-status="queued"' in page and 'hx-trigger="every 1s"' in page
    listing = client.get(f"/data/projects/{project.name}/snapshots/").content.decode()
    assert 'data-freeze="queued"' in listing

    run_freeze(snapshot.pk)
    polled = client.get(response["Location"], headers={"HX-Request": "true"})
    assert polled.headers["HX-Refresh"] == "true"  # done: the poll reloads the page
    page = client.get(response["Location"]).content.decode()
    assert "SHA-256" in page and "hx-trigger" not in page
    assert Snapshot.objects.get(name="web").row_count == 6


def test_snapshot_page_sample_escapes_model_text(researcher, project):
    task = make_task(project, texts=("<script>alert(1)</script>", "fine"))
    (a,) = annotators(1)
    rank(task, a, [[0], [1]])
    from annotation.snapshots import freeze_snapshot

    snapshot = freeze_snapshot(project, "y")
    page = (
        client_for(researcher).get(f"/data/snapshots/{snapshot.pk}/").content.decode()
    )
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_annotator_cannot_open_the_snapshot_pages(annotator, project):
    assert (
        client_for(annotator)
        .get(f"/data/projects/{project.name}/snapshots/")
        .status_code
        == 403
    )


def test_tokens_page_shows_a_new_token_once(researcher):
    client = client_for(researcher)
    page = client.post(
        "/data/tokens/", {"name": "notebook", "scopes": ["read"]}
    ).content.decode()
    token = ApiToken.objects.get()
    assert token.prefix in page and "Copy it now" in page
    again = client.get("/data/tokens/").content.decode()
    assert "Copy it now" not in again


def test_tokens_page_revokes(researcher):
    token, _ = create_token(researcher, "old", ["read"])
    response = client_for(researcher).post(f"/data/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert response.status_code == 302
    assert token.revoked_at is not None


def test_snapshot_card_names_the_hash_and_rules(researcher, annotator, project):
    world = build_world(project, annotator)
    response = client_for(researcher).get(f"/api/snapshots/{world['snapshot']}/card")
    card = response.content.decode()
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert f"Snapshot SHA-256: `{Snapshot.objects.get().sha256}`" in card
    assert "Pair rule: `all_pairs`" in card


def test_admin_creates_a_pairwise_project_with_its_scale(admin_user):
    client = client_for(admin_user)
    body = {
        "name": "ab",
        "mode": "pairwise",
        "responses_per_task": 2,
        "strength_labels": ["slightly better", "significantly better"],
    }
    response = client.post("/api/projects", body, content_type="application/json")
    assert response.status_code == 201
    assert (response.json()["mode"], response.json()["strength_labels"]) == (
        "pairwise",
        ["slightly better", "significantly better"],
    )
    four = {**body, "name": "ab4", "responses_per_task": 4}
    refused = client.post("/api/projects", four, content_type="application/json")
    assert refused.status_code == 400
    assert "set responses per task to 2" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("strength", "status", "stored"),
    [(2, 201, 2), (None, 400, None), (4, 400, None), (-1, 422, None), (6, 422, None)],
)
def test_pairwise_submission_takes_a_strength_within_the_scale(
    annotator, project, strength, status, stored
):
    project.mode, project.responses_per_task = "pairwise", 2
    project.save()
    make_task(project, texts=("Hello!", "hi"))
    client = client_for(annotator)
    lease = client.post(f"/api/projects/{project.name}/next-task").json()
    payload = {"order": [[2], [1]]}
    if strength is not None:
        payload["strength"] = strength
    response = client.post(
        f"/api/leases/{lease['id']}/ranking", payload, content_type="application/json"
    )
    assert response.status_code == status
    if status == 201:
        assert response.json()["strength"] == stored
    assert Ranking.objects.filter(strength=stored).exists() is (stored is not None)
