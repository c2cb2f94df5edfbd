"""Every page checks the role and the project membership on the server: one table.

Built from the URL resolver: a named page without a row fails the suite (the API
has its own table in test_api_permissions.py; the Django admin site checks staff
status itself). Personas as in the API table: anonymous, signed in without a role,
an annotator and a researcher each as a member of the project and as a member of
another project only, and an admin (implicitly in every project).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import (
    NoReverseMatch,
    URLPattern,
    URLResolver,
    get_resolver,
    reverse,
)

from annotation.membership import add_member
from annotation.models import Project
from annotation.tokens import create_token
from tests.annotation.data_factories import rank
from tests.annotation.factories import make_task
from tests.api_world import build_world, client_for
from tests.conftest import make_user
from training.models import TrainingJob, TrainingRound

pytestmark = pytest.mark.django_db

PERSONAS = (
    "anonymous",
    "no_role",
    "annotator",
    "annotator_outsider",
    "researcher",
    "researcher_outsider",
    "admin",
)
ROLE_OF = {
    "no_role": "none",
    "annotator": "annotator",
    "annotator_outsider": "annotator",
    "researcher": "researcher",
    "researcher_outsider": "researcher",
    "admin": "admin",
}
ANY_ROLE = {"annotator", "researcher", "admin"}
SIGNED_IN = ANY_ROLE | {"none"}
READERS = {"researcher", "admin"}
ADMIN = {"admin"}
PUBLIC = {
    # page: (method, the status every persona gets)
    "login": ("get", 200),
    "logout": ("post", 302),
    # A mistyped invitation link: the page says so.
    "people:set_password": ("get", 200),
    # The registry's old address redirects; the registry page checks the role.
    "old_registry": ("get", 302),
}
# page: (method, roles that may use it, whether it is inside one project)
PAGES = {
    "home": ("get", SIGNED_IN, False),
    "annotation:annotate": ("get", {"annotator"}, True),
    "annotation:submit": ("post", {"annotator"}, True),
    "annotation:skip": ("post", {"annotator"}, True),
    "annotation:review": ("get", READERS, True),
    "annotation:review_task": ("get", READERS, True),
    "annotation:gold": ("get", ADMIN, True),
    "annotation:unmark": ("post", ADMIN, True),
    "annotation:reinstate": ("post", ADMIN, True),
    "annotation:settings": ("get", ADMIN, True),
    "annotation:dashboard": ("get", ADMIN, True),
    "annotation:history": ("get", {"annotator"}, True),
    "annotation:revise": ("get", {"annotator"}, True),
    "data:snapshots": ("get", READERS, True),
    "data:snapshot": ("get", READERS, True),
    "data:snapshot_diff": ("get", READERS, True),
    "data:download": ("get", READERS, True),
    "data:export": ("get", READERS, True),
    "data:imports": ("get", READERS, True),
    "data:import_report": ("get", READERS, True),
    "data:corpora": ("get", READERS, True),
    "data:corpus": ("get", READERS, True),
    "data:manager": ("get", READERS, True),
    "data:manager_task": ("get", READERS, True),
    "data:manager_freeze": ("post", READERS, True),
    "data:tokens": ("get", ANY_ROLE, False),
    "data:revoke": ("post", SIGNED_IN, False),
    "training:rounds": ("get", READERS, False),
    "training:launch": ("get", ADMIN, False),
    "training:round": ("get", READERS, True),
    "training:cancel": ("post", ADMIN, True),
    "training:resume": ("post", ADMIN, True),
    "training:job_log": ("get", READERS, True),
    "training:deploy": ("post", ADMIN, False),
    "training:rollback": ("post", ADMIN, False),
    "training:registry": ("get", READERS, False),
    "training:register_model": ("post", ADMIN, False),
    "playground": ("get", READERS, False),
    "overview:project": ("get", READERS, True),
    "overview:publish": ("post", ADMIN, True),
    "projects:projects": ("get", ADMIN, False),
    "projects:new": ("get", ADMIN, False),
    "projects:archive": ("post", ADMIN, True),
    "projects:prompts": ("get", ADMIN, True),
    "projects:held": ("get", ADMIN, True),
    "audit:log": ("get", READERS, False),
    "audit:export": ("get", READERS, False),
    "people:people": ("get", ADMIN, False),
    "people:person": ("get", ADMIN, False),
    "people:reset_link": ("post", ADMIN, False),
    "people:password_change": ("get", SIGNED_IN, False),
    "people:password_changed": ("get", SIGNED_IN, False),
}


def _named_routes(patterns, namespace: str = "") -> set[str]:
    names = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace in ("admin", "api"):
                continue
            inner = pattern.namespace or ""
            prefix = (
                f"{namespace}:{inner}" if namespace and inner else namespace or inner
            )
            names |= _named_routes(pattern.url_patterns, prefix)
        elif isinstance(pattern, URLPattern):
            assert pattern.name, f"the page {pattern.pattern} has no name; give it one"
            names.add(f"{namespace}:{pattern.name}" if namespace else pattern.name)
    return names


def test_every_page_has_a_row():
    routes = _named_routes(get_resolver().url_patterns)
    rows = set(PAGES) | set(PUBLIC)
    assert routes - rows == set(), "add these pages to PAGES"
    assert rows - routes == set(), "these rows name no page"


def persona_user(persona: str, project: Project) -> User | None:
    """Return the user playing `persona` (None for anonymous)."""
    if persona == "anonymous":
        return None
    if persona == "no_role":
        return make_user("no-role")
    role = ROLE_OF[persona]
    user = make_user(persona, role)
    if persona.endswith("_outsider"):
        add_member(user, Project.objects.get_or_create(name="other")[0])
    else:
        add_member(user, project)
    return user


def _world(project: Project, annotator: User) -> dict:
    world = build_world(project, annotator)
    training_round = TrainingRound.objects.get(pk=world["round_id"])
    world["job"] = TrainingJob.objects.create(
        round=training_round, stage="dpo", index=0
    ).pk
    world["task"] = make_task(project).pk
    return world


def _url(name: str, world: dict, user: User | None) -> str:
    args = {
        "annotation:review_task": [world["project"], world["task"]],
        "annotation:unmark": [world["project"], world["task"]],
        "data:manager_task": [world["project"], world["task"]],
        "annotation:revise": [world["project"], world["ranking"]],
        "annotation:reinstate": [world["project"], world["annotator"]],
        "data:snapshot": [world["snapshot"]],
        "data:import_report": [world["report"]],
        "data:corpus": [world["project"], world["corpus"]],
        "data:download": [world["snapshot"]],
        "data:export": [world["export"]],
        "data:snapshot_diff": [world["snapshot"]],
        "data:revoke": [world["token"]],
        "training:round": [world["round_id"]],
        "training:cancel": [world["round_id"]],
        "training:resume": [world["round_id"]],
        "training:job_log": [world["job"]],
        "training:deploy": [world["policy"]],
        "people:person": [world["annotator"]],
        "people:reset_link": [world["annotator"]],
        "people:set_password": ["MQ", "bad-token"],
    }
    if name in args:
        return reverse(name, args=args[name])
    try:
        return reverse(name, args=[world["project"]])
    except NoReverseMatch:
        return reverse(name)


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("page_name", sorted(PAGES) + sorted(PUBLIC))
def test_page_admits_exactly_its_roles_in_their_projects(
    page_name, persona, project, annotator
):
    world = _world(project, annotator)
    world["annotator"] = annotator.pk
    user = persona_user(persona, project)
    world["token"] = create_token(user or annotator, "old", ["read"])[0].pk
    # The ranking a persona may revise is their own (the task is in the project).
    world["ranking"] = rank(
        make_task(project), user or annotator, [[0], [1], [2], [3]]
    ).pk
    client = client_for(user) if user else Client()
    if page_name in PUBLIC:
        method, status = PUBLIC[page_name]
        url = _url(page_name, world, user)
        assert getattr(client, method)(url).status_code == status
        return
    method, roles, in_project = PAGES[page_name]
    response = getattr(client, method)(_url(page_name, world, user))
    if persona == "anonymous":
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))
    elif ROLE_OF[persona] not in roles:
        assert response.status_code == 403
    elif in_project and persona.endswith("_outsider"):
        assert response.status_code == 404
    else:
        # Allowed: the page answers (a POST without its fields is a 400 from the form,
        # or a redirect after acting), never a 403 or 404.
        assert response.status_code in {200, 302, 303, 400}, response.content[:300]


@pytest.mark.parametrize("persona", ["annotator_outsider", "researcher_outsider"])
def test_home_lists_only_ones_projects(persona, project):
    user = persona_user(persona, project)
    page = client_for(user).get(reverse("home")).content.decode()
    assert "<h2>other</h2>" in page
    assert f"/projects/{project.name}/" not in page
    assert f"/overview/{project.name}/" not in page


def test_training_rounds_list_only_ones_projects(project, annotator):
    world = _world(project, annotator)
    outsider = persona_user("researcher_outsider", project)
    member = persona_user("researcher", project)
    url = reverse("training:round", args=[world["round_id"]])
    assert url in client_for(member).get(reverse("training:rounds")).content.decode()
    assert (
        url not in client_for(outsider).get(reverse("training:rounds")).content.decode()
    )
