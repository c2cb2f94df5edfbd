"""`manage.py freeze_snapshot`: freeze a named preference snapshot of a project."""

from __future__ import annotations

import inspect
import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.management.commands.import_preferences import ProgressBar
from annotation.models import Project
from annotation.snapshots import (
    DEDUP_RULES,
    MARGIN_RULES,
    PAIR_RULES,
    REWRITE_RULES,
    TIE_RULES,
    freeze_snapshot,
)

RULES = {
    "pair_rule": PAIR_RULES,
    "tie_rule": TIE_RULES,
    "dedup_rule": DEDUP_RULES,
    "margin_rule": MARGIN_RULES,
    "rewrite_rule": REWRITE_RULES,
}


def add_rule_arguments(parser: CommandParser) -> None:
    """Add --pair-rule, --tie-rule, --dedup-rule, --margin-rule and --rewrite-rule,
    each with freeze_snapshot's default and its choices explained (this and
    export_preferences)."""
    defaults = inspect.signature(freeze_snapshot).parameters
    for name, rules in RULES.items():
        default = defaults[name].default
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=default,
            choices=sorted(rules),
            help="; ".join(f"{k}: {v}" for k, v in rules.items()).replace("%", "%%")
            + f" (default {default})",
        )


def rule_options(options: dict) -> dict[str, str]:
    """Return the freeze_snapshot keyword arguments of the rule options."""
    return {name: options[name] for name in RULES}


class Command(BaseCommand):
    help = "Freeze a named, hashed snapshot of a project's preference pairs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Snapshot name, unique within the project.")
        parser.add_argument("--project", required=True)
        parser.add_argument("--filter", default="{}", help="Filter as JSON.")
        add_rule_arguments(parser)

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}")
        try:
            snapshot = freeze_snapshot(
                project,
                options["name"],
                filter=json.loads(options["filter"]),
                progress=ProgressBar(self.stderr, options["name"], verb="freezing"),
                **rule_options(options),
            )
        except json.JSONDecodeError as exc:
            raise CommandError(f"--filter is not valid JSON ({exc})") from None
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            f"{snapshot.name}: {snapshot.row_count} pairs, sha256 {snapshot.sha256}"
        )
