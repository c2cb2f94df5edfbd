"""Every annotation page checks the role on the server: one table, five personas."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.annotation.factories import make_task
from tests.conftest import login

ALLOWED = {
    # page: (method, the roles that may use it)
    "home": ("get", {"annotator", "researcher", "admin", "outsider"}),
    "annotation:annotate": ("get", {"annotator"}),
    "annotation:submit": ("post", {"annotator"}),
    "annotation:skip": ("post", {"annotator"}),
    "annotation:review": ("get", {"researcher", "admin"}),
    "annotation:review_task": ("get", {"researcher", "admin"}),
    "annotation:gold": ("get", {"admin"}),
    "annotation:unmark": ("post", {"admin"}),
    "annotation:reinstate": ("post", {"admin"}),
    "annotation:settings": ("get", {"admin"}),
    "annotation:dashboard": ("get", {"admin"}),
}
PERSONAS = ("anonymous", "outsider", "annotator", "researcher", "admin")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """Hash the personas' passwords cheaply: 55 cases create five users each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _url(name: str, project, task, user) -> str:
    if name == "home":
        return reverse("home")
    if name in ("annotation:review_task", "annotation:unmark"):
        return reverse(name, args=[project.name, task.pk])
    if name == "annotation:reinstate":
        return reverse(name, args=[project.name, user.pk])
    return reverse(name, args=[project.name])


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("page_name", sorted(ALLOWED))
def test_page_admits_exactly_its_roles(
    page_name, persona, project, admin_user, researcher, annotator, outsider
):
    method, roles = ALLOWED[page_name]
    task = make_task(project)
    users = {
        "outsider": outsider,
        "annotator": annotator,
        "researcher": researcher,
        "admin": admin_user,
    }
    client = login(users[persona]) if persona in users else None
    if client is None:
        from django.test import Client

        client = Client()
    url = _url(page_name, project, task, annotator)
    response = getattr(client, method)(url)
    if persona == "anonymous":
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))
    elif persona in roles:
        # Allowed: the page answers (a POST without its fields is a 400 from the form,
        # or a redirect after acting), never a 403.
        assert response.status_code in {200, 303, 400}
    else:
        assert response.status_code == 403
