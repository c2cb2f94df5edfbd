"""A request body over MAX_REQUEST_BYTES is refused with 413 before any view reads it."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def _post(path: str, size: int, **extra):
    return Client().generic(
        "POST",
        path,
        b"",
        content_type="application/octet-stream",
        CONTENT_LENGTH=str(size),
        **extra,
    )


def test_an_anonymous_upload_over_the_cap_gets_413_before_login_or_csrf(settings):
    settings.MAX_REQUEST_BYTES = 1000
    response = _post("/data/projects/demo/imports/", 1001)
    assert response.status_code == 413
    assert "1000" in response.content.decode()


def test_the_api_answers_413_in_its_own_shape(settings):
    settings.MAX_REQUEST_BYTES = 1000
    response = _post("/api/projects/demo/imports", 5000)
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "5000" in detail and "1000" in detail


def test_a_body_at_the_cap_passes_on_to_the_usual_checks(settings):
    settings.MAX_REQUEST_BYTES = 1000
    assert _post("/api/projects/demo/imports", 1000).status_code == 401


def test_djangos_own_caps_are_set(settings):
    from django.conf import settings as live

    assert live.DATA_UPLOAD_MAX_MEMORY_SIZE <= 10 << 20
    assert live.FILE_UPLOAD_MAX_MEMORY_SIZE <= 10 << 20
    assert live.MAX_REQUEST_BYTES >= 100 << 20
