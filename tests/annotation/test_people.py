"""The people pages: adding a person with an invitation link, editing, password links."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.http import HttpRequest  # django-axes throttles logins by request
from django.test import Client
from django.urls import reverse

from annotation.models import Project
from annotation.people import LINK_VALID_FOR, add_person, password_link
from config.roles import roles_of
from tests.conftest import login, make_user

pytestmark = pytest.mark.django_db


def _link(page: str) -> str:
    found = re.search(r'value="(http://testserver(/people/set-password/[^"]+))"', page)
    assert found, page
    return found.group(2)


def _set_password(client: Client, link: str, password: str):
    form_url = client.get(link).url  # the token moves into the session
    return client.post(form_url, {"new_password1": password, "new_password2": password})


def test_admin_adds_a_person_who_sets_their_password_through_the_link(
    admin_user, project
):
    Project.objects.create(name="elsewhere")
    page = login(admin_user).post(
        reverse("people:people"),
        {"username": "newbie", "role": "annotator", "projects": ["demo"]},
    )
    assert page.status_code == 200
    assert page["Cache-Control"] == "no-store"
    user = User.objects.get(username="newbie")
    assert not user.has_usable_password()
    assert roles_of(user) == {"annotator"}
    assert list(user.member_projects.values_list("name", flat=True)) == ["demo"]
    link = _link(page.content.decode())

    client = Client()
    done = _set_password(client, link, "a-long-new-password-9")
    assert done.status_code == 302 and done.url == reverse("home")
    home = client.get(reverse("home")).content.decode()
    assert "<h2>Demo</h2>" in home and "elsewhere" not in home
    assert Client().login(
        request=HttpRequest(), username="newbie", password="a-long-new-password-9"
    )

    # Spent: the same link no longer works.
    again = Client().get(link, follow=True).content.decode()
    assert "This link does not work" in again


def test_link_expires_after_seven_days(db):
    user = add_person("late", "annotator", [])
    link = password_link(user)
    later = datetime.now() + LINK_VALID_FOR + timedelta(minutes=1)
    with mock.patch("annotation.people.PasswordLinkTokens._now", return_value=later):
        page = Client().get(link, follow=True).content.decode()
    assert "This link does not work" in page
    assert "Set your password" in Client().get(link, follow=True).content.decode()


def test_adding_an_existing_username_is_refused_naming_it(admin_user):
    make_user("taken", "annotator")
    page = login(admin_user).post(
        reverse("people:people"), {"username": "TAKEN", "role": "annotator"}
    )
    assert page.status_code == 400
    assert "a person named &#x27;TAKEN&#x27; exists already" in page.content.decode()


def test_admin_changes_role_projects_and_deactivates(admin_user, project):
    other = Project.objects.create(name="other")
    person = make_user("someone", "annotator", projects=[project])
    response = login(admin_user).post(
        reverse("people:person", args=[person.pk]),
        {"role": "researcher", "projects": ["other"]},
    )
    assert response.status_code == 302
    person = User.objects.get(pk=person.pk)
    assert roles_of(person) == {"researcher"}
    assert list(person.member_projects.all()) == [other]
    assert person.is_active is False
    assert not Client().login(
        request=HttpRequest(), username="someone", password="someone-pw-123"
    )


def test_admin_cannot_demote_or_deactivate_themselves(admin_user):
    response = login(admin_user).post(
        reverse("people:person", args=[admin_user.pk]),
        {"role": "annotator", "is_active": "on"},
    )
    assert response.status_code == 400
    assert "you cannot remove your own admin role" in response.content.decode()
    assert "admin" in roles_of(User.objects.get(pk=admin_user.pk))


def test_reset_link_sets_a_new_password(admin_user, annotator):
    page = login(admin_user).post(reverse("people:reset_link", args=[annotator.pk]))
    assert page["Cache-Control"] == "no-store"
    _set_password(Client(), _link(page.content.decode()), "another-long-pass-7")
    assert not Client().login(
        request=HttpRequest(), username="annotator1", password="annotator1-pw-123"
    )
    assert Client().login(
        request=HttpRequest(), username="annotator1", password="another-long-pass-7"
    )


def test_everyone_changes_their_own_password(annotator):
    client = login(annotator)
    response = client.post(
        reverse("people:password_change"),
        {
            "old_password": "annotator1-pw-123",
            "new_password1": "my-own-choice-42",
            "new_password2": "my-own-choice-42",
        },
    )
    assert response.status_code == 302
    assert response.url == reverse("people:password_changed")
    assert Client().login(
        request=HttpRequest(), username="annotator1", password="my-own-choice-42"
    )


def test_people_page_lists_roles_and_projects(admin_user, project):
    make_user("ann9", "annotator", projects=[project])
    page = login(admin_user).get(reverse("people:people")).content.decode()
    assert re.search(r">ann9</a></td>\s*<td>annotator</td>\s*<td>demo</td>", page)
    assert re.search(
        r">admin1</a></td>\s*<td>admin</td>\s*<td>every project</td>", page
    )
