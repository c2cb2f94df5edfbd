"""The demo installation that `make run` sets up: users, the demo project, round 1.

Idempotent: a second call finds everything in place and changes nothing, so a second
`make run` serves within seconds.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import transaction

from annotation.models import AnnotatorProfile, Project, Prompt
from config.roles import ADMIN, ANNOTATOR, RESEARCHER, ensure_groups
from inference.models import Policy

DEMO_PROJECT = "demo"
DEMO_USERS = {
    "admin": ADMIN,
    "researcher": RESEARCHER,
    "annotator1": ANNOTATOR,
    "annotator2": ANNOTATOR,
    "annotator3": ANNOTATOR,
}
GUIDELINES = """\
# Ranking guidelines

Put the responses in order, **best first**. A good response:

1. **answers correctly** (check the facts in the question),
2. **helps** instead of dodging ("ask someone else" is evasive),
3. is **polite** without being servile,
4. is **concise**: no rambling filler.

Mark two responses as a tie only when you genuinely cannot prefer one.
Flag a response as unsafe if it is harmful; mark *all bad* if none is acceptable.
"""


@dataclass
class DemoReport:
    """What `setup_demo` created; passwords only for users created in this call."""

    new_passwords: dict[str, str] = field(default_factory=dict)
    created_project: bool = False
    published_round: int | None = None


def password_for(username: str) -> str:
    """Return the password from DEMO_<USERNAME>_PASSWORD, or a fresh random one."""
    return os.environ.get(f"DEMO_{username.upper()}_PASSWORD") or secrets.token_urlsafe(
        9
    )


def create_demo_users() -> dict[str, str]:
    """Create the five demo users that are missing; return their new passwords."""
    ensure_groups()
    created = {}
    for username, role in DEMO_USERS.items():
        if User.objects.filter(username=username).exists():
            continue
        password = password_for(username)
        user = User.objects.create_user(username=username, password=password)
        user.groups.add(Group.objects.get(name=role))
        if role == ANNOTATOR:
            AnnotatorProfile.objects.create(user=user)
        created[username] = password
    return created


def create_demo_project(seed: int = 0) -> tuple[Project, bool]:
    """Create the demo project with its prompt pool and demo-sft deployed, if absent.

    The pool is every prompt of the train split's questions (4,470); held out are one
    prompt per dev question (180, `eval_split="dev"`) and per test question (306,
    "test"), so no evaluation question is ever published or demonstrated.
    """
    from demo.world import eval_prompts, make_prompts

    existing = Project.objects.filter(name=DEMO_PROJECT).first()
    if existing is not None:
        return existing, False
    with transaction.atomic():
        project = Project.objects.create(
            name=DEMO_PROJECT,
            title="Demo: the invented-world assistant",
            guidelines=GUIDELINES,
            responses_per_task=4,
            overlap=3,
            current_policy=Policy.objects.filter(name="demo-sft").first(),
        )
        pool = make_prompts(None, seed, split="train")
        rows = [_prompt(project, m, split="") for m in pool]
        for split in ("dev", "test"):
            rows += [
                _prompt(project, m, split=split) for m in eval_prompts(split, seed)
            ]
        Prompt.objects.bulk_create(rows, ignore_conflicts=True)
    return project, True


def add_demo_members(project: Project) -> None:
    """Make every demo user a member of the demo project (idempotent)."""
    from annotation.membership import add_member

    for user in User.objects.filter(username__in=DEMO_USERS):
        add_member(user, project)


def _prompt(project: Project, messages: list[dict], *, split: str) -> Prompt:
    """Return an unsaved demo prompt: a pool prompt (split '') or a held-out dev/test one."""
    from annotation.models import messages_hash, normalise_messages

    messages = normalise_messages(messages)
    return Prompt(
        project=project,
        messages=messages,
        content_hash=messages_hash(messages),
        source="demo_domain",
        is_held_out=bool(split),
        eval_split=split or "test",
    )


def setup_demo(
    *, preset: str = "demo", prompts_per_round: int = 32, seed: int = 0
) -> DemoReport:
    """Build demo models if absent, create users and project, publish round 1 once."""
    report = DemoReport()
    if not Policy.objects.filter(name__in=["demo-base", "demo-sft"]).count() == 2:
        call_command("build_demo_models", preset=preset, seed=seed)
    report.new_passwords = create_demo_users()
    project, report.created_project = create_demo_project(seed=seed)
    add_demo_members(project)
    if project.current_policy is None:
        project.current_policy = Policy.objects.get(name="demo-sft")
        project.save(update_fields=["current_policy"])
    if not project.rounds.exists():
        from annotation.rounds import publish_round

        round_ = publish_round(project, n_prompts=prompts_per_round, seed=seed)
        report.published_round = round_.number
    return report
