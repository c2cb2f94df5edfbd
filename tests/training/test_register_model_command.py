"""`manage.py register_model` registers a model and, with --project --deploy, serves it."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from inference.models import Policy


def test_the_command_registers_and_deploys_a_folder(project, settings, tiny_model_dir):
    out = StringIO()
    call_command(
        "register_model",
        "tiny",
        str(tiny_model_dir),
        "--project",
        "demo",
        "--deploy",
        stdout=out,
    )
    policy = Policy.objects.get(name="tiny")
    project.refresh_from_db()
    assert (project.current_policy, policy.base_path) == (
        policy,
        str(Path(settings.MODEL_DIR) / "tiny"),
    )
    assert f"{policy.parameter_count:,} parameters" in out.getvalue()
    assert "tiny is the current policy of demo" in out.getvalue()


def test_the_command_registers_a_reward_model_under_a_parent(db, tiny_model_dir):
    call_command("register_model", "base", str(tiny_model_dir), stdout=StringIO())
    call_command(
        "register_model",
        "rm",
        str(tiny_model_dir),
        "--kind",
        "reward",
        "--parent",
        "base",
        stdout=StringIO(),
    )
    rm = Policy.objects.get(name="rm")
    assert (rm.kind, rm.parent.name) == ("reward_model", "base")


@pytest.mark.parametrize(
    "args, message",
    [
        (["x", "/no/such/model"], "'/no/such/model' does not exist"),
        (["x", "/no/such/model", "--deploy"], "--project and --deploy go together"),
        (
            ["x", "/no/such/model", "--project", "nope", "--deploy"],
            "no project named 'nope'",
        ),
        (
            [
                "x",
                "/no/such/model",
                "--project",
                "demo",
                "--deploy",
                "--kind",
                "reward",
            ],
            "--deploy serves a policy, not a reward model",
        ),
        (
            ["x", "/no/such/model", "--parent", "nope"],
            "--parent 'nope' is not a registered",
        ),
    ],
)
def test_the_command_names_what_is_wrong(project, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("register_model", *args, stdout=StringIO())
    assert Policy.objects.count() == 0
