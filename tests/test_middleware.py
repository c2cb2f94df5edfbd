"""API input the database cannot store is refused with 400, before any view runs."""

import json

import pytest

from tests.conftest import login


@pytest.mark.parametrize(
    "body, where",
    [
        ({"name": "ok", "aspects": ["fine", "bad\u0000"]}, "$.aspects[1]"),
        ({"name": "x\ud83d"}, "$.name"),
    ],
)
def test_unstorable_text_in_a_json_body_gets_400_naming_where(admin_user, body, where):
    client = login(admin_user)
    response = client.post(
        "/api/projects", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400
    assert where in response.json()["detail"]


def test_a_nul_in_a_query_parameter_gets_400(admin_user):
    response = login(admin_user).get("/api/projects", {"name": "a\x00b"})
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


def test_ordinary_unicode_passes(admin_user):
    client = login(admin_user)
    response = client.post(
        "/api/projects",
        data=json.dumps(
            {"name": "emoji-ok", "guidelines": "Rank 🙂 carefully, naïve café"}
        ),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
