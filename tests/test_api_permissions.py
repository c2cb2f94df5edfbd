"""The permission rules of DESIGN.md for every API operation, as one table.

Built from the OpenAPI schema: an operation without a row fails the suite. Columns
are the personas of PERSONAS: anonymous, signed in without a role, an annotator who
is a member of the project, one who is a member of another project only, the same
two for researchers, and an admin (implicitly a member of every project). A 2xx
means allowed; 401 no credentials; 403 the role is missing; 404 the project (or
what is in it) is not among the caller's projects. Where the right is there but the
request cannot succeed on this data, the row says so (e.g. admins launching a round
without a deployed policy get the workflow's 400).
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.membership import add_member
from annotation.models import Project
from annotation.tokens import create_token
from config.api import api
from tests.api_world import build_world, client_for
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    """Hash the personas' passwords cheaply: over 200 cases would spend minutes in PBKDF2."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


PERSONAS = (
    "anonymous",
    "no_role",
    "annotator",
    "annotator_outsider",
    "researcher",
    "researcher_outsider",
    "admin",
)
EVERY_ROLE_READS = (401, 403, 200, 200, 200, 200, 200)
MEMBERS_READ = (401, 403, 200, 404, 200, 404, 200)
RESEARCHERS_READ = (401, 403, 403, 403, 200, 404, 200)
ANNOTATOR_ACTS = (401, 403, 201, 404, 403, 403, 403)
ADMIN_ONLY = (401, 403, 403, 403, 403, 403)  # + the admin's status

# method, OpenAPI path, query, body, expected statuses by persona (as in PERSONAS)
TABLE = [
    ("get", "/api/projects", "", None, EVERY_ROLE_READS),
    ("post", "/api/projects", "", {"name": "new"}, (*ADMIN_ONLY, 201)),
    ("get", "/api/projects/{name}", "", None, MEMBERS_READ),
    ("get", "/api/projects/{name}/prompts", "", None, RESEARCHERS_READ),
    (
        "post",
        "/api/projects/{name}/prompts",
        "",
        {"prompts": ["Which planet has the most moons?"]},
        (*ADMIN_ONLY, 201),
    ),
    ("get", "/api/projects/{name}/rounds", "", None, RESEARCHERS_READ),
    ("get", "/api/projects/{name}/tasks", "", None, MEMBERS_READ),
    ("get", "/api/tasks/{task_id}", "", None, MEMBERS_READ),
    (
        "post",
        "/api/projects/{name}/next-task",
        "",
        None,
        (401, 403, 200, 404, 403, 403, 403),
    ),
    ("post", "/api/leases/{lease_id}/ranking", "", "order", ANNOTATOR_ACTS),
    (
        "post",
        "/api/leases/{lease_id}/ranking-and-next-task",
        "",
        "order",
        ANNOTATOR_ACTS,
    ),
    (
        "post",
        "/api/leases/{lease_id}/skip",
        "",
        {"reason": "cannot judge"},
        ANNOTATOR_ACTS,
    ),
    ("get", "/api/my/rankings", "", None, EVERY_ROLE_READS),
    ("get", "/api/projects/{name}/snapshots", "", None, RESEARCHERS_READ),
    (
        "post",
        "/api/projects/{name}/snapshots",
        "",
        {"name": "second"},
        (401, 403, 403, 403, 202, 404, 202),
    ),
    ("get", "/api/snapshots/{snapshot_id}", "", None, RESEARCHERS_READ),
    (
        "get",
        "/api/snapshots/{snapshot_id}/download",
        "?file_format=parquet",
        None,
        RESEARCHERS_READ,
    ),
    ("get", "/api/snapshots/{snapshot_id}/card", "", None, RESEARCHERS_READ),
    (
        "get",
        "/api/snapshots/{snapshot_id}/diff",
        "?against={snapshot_id}",
        None,
        RESEARCHERS_READ,
    ),
    ("get", "/api/projects/{name}/imports", "", None, RESEARCHERS_READ),
    ("get", "/api/imports/{report_id}", "", None, RESEARCHERS_READ),
    (
        "post",
        "/api/projects/{name}/imports",
        "",
        "file",
        (401, 403, 403, 403, 202, 404, 202),
    ),
    ("get", "/api/projects/{name}/corpora", "", None, RESEARCHERS_READ),
    ("get", "/api/projects/{name}/corpora/{corpus}", "", None, RESEARCHERS_READ),
    (
        "post",
        "/api/projects/{name}/corpora",
        "",
        "corpus_file",
        (401, 403, 403, 403, 202, 404, 202),
    ),
    ("get", "/api/tokens", "", None, EVERY_ROLE_READS),
    (
        "post",
        "/api/tokens",
        "",
        {"name": "laptop", "scopes": ["read"]},
        (401, 403, 201, 201, 201, 201, 201),
    ),
    ("delete", "/api/tokens/{token_id}", "", None, EVERY_ROLE_READS),
    # The model registry is shared by all projects.
    ("get", "/api/policies", "", None, (401, 403, 403, 403, 200, 200, 200)),
    ("get", "/api/policies/{policy_id}", "", None, (401, 403, 403, 403, 200, 200, 200)),
    # A source that does not exist: the admin gets the registry's 400.
    (
        "post",
        "/api/policies",
        "",
        {"name": "new-model", "source": "/no/such/model"},
        (*ADMIN_ONLY, 400),
    ),
    # The playground talks to any registered policy; this one does not exist.
    (
        "post",
        "/api/playground/chat",
        "",
        {"policy": "no-such-policy", "messages": [{"role": "user", "content": "Hi?"}]},
        (401, 403, 403, 403, 404, 404, 404),
    ),
    (
        "post",
        "/api/playground/pool",
        "",
        {
            "project": "demo",
            "messages": [{"role": "user", "content": "Which planet is the largest?"}],
        },
        (*ADMIN_ONLY, 201),
    ),
    ("get", "/api/projects/{name}/training-rounds", "", None, RESEARCHERS_READ),
    # No policy deployed: the admin gets the workflow's 400.
    (
        "post",
        "/api/projects/{name}/training-rounds",
        "",
        {"method": "dpo"},
        (*ADMIN_ONLY, 400),
    ),
    ("get", "/api/training-rounds/{round_id}", "", None, RESEARCHERS_READ),
    ("get", "/api/training-rounds/{round_id}/jobs", "", None, RESEARCHERS_READ),
    ("post", "/api/training-rounds/{round_id}/cancel", "", None, (*ADMIN_ONLY, 200)),
    # Still queued: the admin gets the workflow's 400.
    ("post", "/api/training-rounds/{round_id}/resume", "", None, (*ADMIN_ONLY, 400)),
    (
        "post",
        "/api/projects/{name}/deploy",
        "",
        {"policy": "demo-sft"},
        (*ADMIN_ONLY, 200),
    ),
]


def test_every_api_operation_has_a_row():
    schema = api.get_openapi_schema()
    operations = {
        (method, path) for path, ops in schema["paths"].items() for method in ops
    }
    rows = {(method, path) for method, path, *_ in TABLE}
    assert operations - rows == set(), "add these operations to TABLE"
    assert rows - operations == set(), "these rows name no operation"


def persona_user(persona: str, project: Project, annotator):
    """Return the user playing `persona` (None for anonymous)."""
    if persona == "anonymous":
        return None
    if persona == "annotator":
        return annotator
    other = Project.objects.get_or_create(name="other", defaults={"title": "Other"})[0]
    if persona.endswith("_outsider"):
        user = make_user(persona, persona.removesuffix("_outsider"))
        add_member(user, other)
        return user
    if persona == "no_role":
        return make_user("no-role")
    user = make_user(persona, persona)
    add_member(user, project)
    return user


@pytest.mark.parametrize(
    "method, path, query, body, expected",
    TABLE,
    ids=[f"{row[0]} {row[1]}" for row in TABLE],
)
@pytest.mark.parametrize("persona", PERSONAS)
def test_persona_may_or_may_not_perform_operation(
    project, annotator, persona, method, path, query, body, expected
):
    world = build_world(project, annotator)
    user = persona_user(persona, project, annotator)
    if user is not None:
        world["token_id"] = create_token(user, "old", ["read"])[0].pk
    else:
        world["token_id"] = create_token(annotator, "old", ["read"])[0].pk
    client = client_for(user)
    url = (path + query).format(**world)
    if body == "order":
        response = client.post(
            url,
            # Annotators name responses by handle, 1..K (issue 12, item 2).
            {"order": [[h] for h in range(1, len(world["responses"]) + 1)]},
            content_type="application/json",
        )
    elif body == "file":
        upload = SimpleUploadedFile(
            "prefs.jsonl", b'{"prompt": "p?", "chosen": "yes", "rejected": "no"}\n'
        )
        response = client.post(url, {"file": upload})
    elif body == "corpus_file":
        upload = SimpleUploadedFile(
            "notes.txt", b"The river winds through the valley to the sea.\n"
        )
        response = client.post(url, {"file": upload, "corpus": "notes"})
    elif method == "post":
        response = client.post(url, body or {}, content_type="application/json")
    else:
        response = getattr(client, method)(url)
    assert response.status_code == expected[PERSONAS.index(persona)], response.content[
        :300
    ]


@pytest.mark.parametrize("persona", ["annotator_outsider", "researcher_outsider"])
def test_project_lists_show_only_ones_projects(project, annotator, persona):
    user = persona_user(persona, project, annotator)
    names = [p["name"] for p in client_for(user).get("/api/projects").json()["items"]]
    assert names == ["other"]


def test_admin_lists_every_project(project, admin_user):
    Project.objects.create(name="other")
    names = [
        p["name"] for p in client_for(admin_user).get("/api/projects").json()["items"]
    ]
    assert names == ["demo", "other"]
