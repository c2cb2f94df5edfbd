"""Shared personas and factories: admin, researcher, annotators, outsider, anonymous."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from annotation.models import Project


def make_user(username: str, *roles: str) -> User:
    """Create a user holding the given role groups (password = username)."""
    user = User.objects.create_user(username=username, password=username + "-pw-123")
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def login(user: User) -> Client:
    """Return a test client signed in as the user."""
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_user(db) -> User:
    return make_user("admin1", "admin")


@pytest.fixture
def researcher(db) -> User:
    return make_user("researcher1", "researcher")


@pytest.fixture
def annotator(db) -> User:
    return make_user("annotator1", "annotator")


@pytest.fixture
def outsider(db) -> User:
    """A signed-in user with no role."""
    return make_user("outsider1")


@pytest.fixture
def project(db) -> Project:
    return Project.objects.create(name="demo", title="Demo", responses_per_task=4, overlap=3)
