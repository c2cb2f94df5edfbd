"""Property-based tests of the REST API against its own OpenAPI schema (Schemathesis).

Every operation is called with generated inputs as a user holding every role (by
token): no response may be a 5xx, and every response must have a documented status,
content type and a body matching its schema.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from annotation.models import RankingTask
from annotation.tokens import create_token
from config.scopes import SCOPES
from config.wsgi import application
from tests.annotation.data_factories import annotators, rank
from tests.api_world import build_world
from tests.conftest import make_user

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def headers(db, settings, tmp_path, project) -> dict[str, str]:
    """Build a small world of data and return token headers of a user with every role."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EXPORT_DIR = tmp_path
    user = make_user("everything", "annotator", "researcher", "admin")
    world = build_world(project, user)
    (other,) = annotators(1)
    rank(RankingTask.objects.get(pk=world["task"]), other, [[0], [1], [2], [3]])
    _, raw = create_token(user, "schemathesis", list(SCOPES))
    # Requests run in this thread, inside the test's transaction: Django must not
    # close the connection at the end of each request, as its test client ensures.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield {"Authorization": f"Bearer {raw}"}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# The schema is served in-process by the WSGI app; fetching it touches no database.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)


@schema.parametrize()
@hypothesis_settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_answers_every_generated_request_as_its_schema_says(case, headers):
    case.call_and_validate(headers=headers, checks=CHECKS)
