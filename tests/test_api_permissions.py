"""The permission rules of DESIGN.md for every API operation, as one table.

Columns: anonymous, signed in without a role, annotator, researcher, admin. A 2xx
means allowed; 401 no credentials; 403 the role is missing. Where the role is
right but the request cannot succeed on this data, the row says so (e.g. admins
launching a round without a deployed policy get the workflow's 400).
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.api_world import build_world, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    """Hash the personas' passwords cheaply: 145 cases would spend minutes in PBKDF2."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


PERSONAS = ("anonymous", "outsider", "annotator", "researcher", "admin_user")

# operation, method, path, body, expected statuses by persona (as in PERSONAS)
TABLE = [
    ("list projects", "get", "/api/projects", None, (401, 403, 200, 200, 200)),
    (
        "create project",
        "post",
        "/api/projects",
        {"name": "new"},
        (401, 403, 403, 403, 201),
    ),
    ("get project", "get", "/api/projects/{project}", None, (401, 403, 200, 200, 200)),
    (
        "list prompts",
        "get",
        "/api/projects/{project}/prompts",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "add prompts",
        "post",
        "/api/projects/{project}/prompts",
        {"prompts": ["Which planet has the most moons?"]},
        (401, 403, 403, 403, 201),
    ),
    (
        "list rounds",
        "get",
        "/api/projects/{project}/rounds",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "list tasks",
        "get",
        "/api/projects/{project}/tasks",
        None,
        (401, 403, 200, 200, 200),
    ),
    ("get task", "get", "/api/tasks/{task}", None, (401, 403, 200, 200, 200)),
    (
        "next task",
        "post",
        "/api/projects/{project}/next-task",
        None,
        (401, 403, 200, 403, 403),
    ),
    (
        "submit ranking",
        "post",
        "/api/leases/{lease}/ranking",
        "order",
        (401, 403, 201, 403, 403),
    ),
    (
        "submit ranking and take the next task",
        "post",
        "/api/leases/{lease}/ranking-and-next-task",
        "order",
        (401, 403, 201, 403, 403),
    ),
    (
        "skip task",
        "post",
        "/api/leases/{lease}/skip",
        {"reason": "cannot judge"},
        (401, 403, 201, 403, 403),
    ),
    ("my rankings", "get", "/api/my/rankings", None, (401, 403, 200, 200, 200)),
    (
        "list snapshots",
        "get",
        "/api/projects/{project}/snapshots",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "create snapshot",
        "post",
        "/api/projects/{project}/snapshots",
        {"name": "second"},
        (401, 403, 403, 201, 201),
    ),
    (
        "get snapshot",
        "get",
        "/api/snapshots/{snapshot}",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "download snapshot",
        "get",
        "/api/snapshots/{snapshot}/download?file_format=parquet",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "snapshot card",
        "get",
        "/api/snapshots/{snapshot}/card",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "list imports",
        "get",
        "/api/projects/{project}/imports",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "create import",
        "post",
        "/api/projects/{project}/imports",
        "file",
        (401, 403, 403, 201, 201),
    ),
    ("list policies", "get", "/api/policies", None, (401, 403, 403, 200, 200)),
    ("get policy", "get", "/api/policies/{policy}", None, (401, 403, 403, 200, 200)),
    (
        "register a model",
        "post",
        "/api/policies",
        {"name": "new-model", "source": "/no/such/model"},
        (401, 403, 403, 403, 400),
    ),
    (
        "list training rounds",
        "get",
        "/api/projects/{project}/training-rounds",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "get training round",
        "get",
        "/api/training-rounds/{training_round}",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "list jobs",
        "get",
        "/api/training-rounds/{training_round}/jobs",
        None,
        (401, 403, 403, 200, 200),
    ),
    (
        "launch training round (no policy deployed: 400)",
        "post",
        "/api/projects/{project}/training-rounds",
        {"method": "dpo"},
        (401, 403, 403, 403, 400),
    ),
    (
        "cancel training round",
        "post",
        "/api/training-rounds/{training_round}/cancel",
        None,
        (401, 403, 403, 403, 200),
    ),
    (
        "resume training round (still queued: 400)",
        "post",
        "/api/training-rounds/{training_round}/resume",
        None,
        (401, 403, 403, 403, 400),
    ),
    (
        "deploy policy",
        "post",
        "/api/projects/{project}/deploy",
        {"policy": "demo-sft"},
        (401, 403, 403, 403, 200),
    ),
    ("list tokens", "get", "/api/tokens", None, (401, 403, 200, 200, 200)),
    (
        "create token",
        "post",
        "/api/tokens",
        {"name": "laptop"},
        (401, 403, 201, 201, 201),
    ),
]


@pytest.mark.parametrize(
    "operation, method, path, body, expected", TABLE, ids=[row[0] for row in TABLE]
)
@pytest.mark.parametrize("persona", PERSONAS)
def test_role_may_or_may_not_perform_operation(
    request, project, annotator, persona, operation, method, path, body, expected
):
    world = build_world(project, annotator)
    user = None if persona == "anonymous" else request.getfixturevalue(persona)
    client = client_for(user)
    url = path.format(**world)
    if body == "order":
        response = client.post(
            url,
            {"order": [[r] for r in world["responses"]]},
            content_type="application/json",
        )
    elif body == "file":
        upload = SimpleUploadedFile(
            "prefs.jsonl", b'{"prompt": "p?", "chosen": "yes", "rejected": "no"}\n'
        )
        response = client.post(url, {"file": upload})
    elif method == "post":
        response = client.post(url, body or {}, content_type="application/json")
    else:
        response = client.get(url)
    assert response.status_code == expected[PERSONAS.index(persona)], response.content[
        :300
    ]
