"""API tokens carry scopes checked on every operation, may expire, and cannot mint tokens.

The matrix is generated from the API itself: an operation without a declared scope
fails here, and every scope is shown to be needed by the operations that declare it.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from annotation.models import ApiToken
from annotation.tokens import create_token
from config.api import api
from config.scopes import SCOPES, scope_of
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def _operations() -> list[tuple[str, str, object]]:
    """Return (method, path, operation) for every operation the API serves."""
    found = []
    for prefix, router in api._routers:
        for path, path_view in router.path_operations.items():
            for operation in path_view.operations:
                for method in operation.methods:
                    found.append(
                        (method, re.sub("/+", "/", f"/api/{prefix}/{path}"), operation)
                    )
    assert len(found) > 30
    return found


OPERATIONS = _operations()


def _concrete(path: str) -> str:
    """Fill path parameters: ids with 1, names with 'demo' (auth runs before lookups)."""
    return re.sub(
        r"\{(\w+)\}", lambda m: "1" if m.group(1).endswith("id") else "demo", path
    )


def bearer(raw: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def _call(method: str, path: str, raw: str):
    return Client().generic(
        method, _concrete(path), "{}", content_type="application/json", **bearer(raw)
    )


@pytest.mark.parametrize(
    "method, path, operation", OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_every_operation_declares_a_token_scope_or_refuses_tokens(
    method, path, operation
):
    assert scope_of(operation) in (*SCOPES, "session"), (
        f"{method} {path} declares no token scope: pass auth=scoped(...) to its route"
    )


@pytest.mark.parametrize(
    "method, path, operation",
    [o for o in OPERATIONS if scope_of(o[2]) in SCOPES],
    ids=[f"{m} {p}" for m, p, o in OPERATIONS if scope_of(o) in SCOPES],
)
def test_a_token_without_the_operations_scope_gets_403_naming_it(
    method, path, operation
):
    user = make_user("everything", "annotator", "researcher", "admin")
    needed = scope_of(operation)
    _, raw = create_token(user, "narrow", [s for s in SCOPES if s != needed])
    response = _call(method, path, raw)
    assert response.status_code == 403
    assert f"'{needed}' scope" in response.json()["detail"]
    _, raw = create_token(user, "exact", [needed])
    assert "lacks the" not in _call(method, path, raw).content.decode()


def test_a_token_cannot_mint_tokens_even_with_every_scope():
    user = make_user("everything", "annotator", "researcher", "admin")
    _, raw = create_token(user, "leaked", list(SCOPES))
    response = Client().post(
        "/api/tokens", {"name": "spare"}, content_type="application/json", **bearer(raw)
    )
    assert response.status_code == 403
    assert "session" in response.json()["detail"]
    assert ApiToken.objects.count() == 1


def test_a_signed_in_session_makes_a_token_with_chosen_scopes_and_expiry():
    user = make_user("researcher1", "researcher")
    client = Client()
    client.force_login(user)
    response = client.post(
        "/api/tokens",
        {"name": "ci", "scopes": ["read", "data"], "expires_in_days": 7},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["scopes"] == ["read", "data"]
    expires = ApiToken.objects.get().expires_at
    assert timedelta(days=6) < expires - timezone.now() <= timedelta(days=7)


def test_an_unknown_scope_is_refused_naming_the_known_ones():
    user = make_user("researcher1", "researcher")
    client = Client()
    client.force_login(user)
    response = client.post(
        "/api/tokens",
        {"name": "ci", "scopes": ["root"]},
        content_type="application/json",
    )
    assert response.status_code in (400, 422)
    assert ApiToken.objects.count() == 0


def test_an_expired_token_gets_401_and_a_live_one_works():
    user = make_user("researcher1", "researcher")
    expired, raw = create_token(user, "old", ["read"], expires_in=timedelta(days=1))
    assert Client().get("/api/projects", **bearer(raw)).status_code == 200
    ApiToken.objects.filter(pk=expired.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert Client().get("/api/projects", **bearer(raw)).status_code == 401


def test_the_tokens_page_makes_a_scoped_expiring_token():
    user = make_user("researcher1", "researcher")
    client = Client()
    client.force_login(user)
    response = client.post(
        "/data/tokens/", {"name": "laptop", "scopes": ["read"], "expires_in_days": "30"}
    )
    assert response.status_code == 200
    token = ApiToken.objects.get()
    assert token.scopes == ["read"]
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
