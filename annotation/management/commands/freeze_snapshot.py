"""`manage.py freeze_snapshot`: freeze a named preference snapshot of a project."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from annotation.snapshots import (
    DEDUP_RULES,
    MARGIN_RULES,
    PAIR_RULES,
    REWRITE_RULES,
    TIE_RULES,
    freeze_snapshot,
)


class Command(BaseCommand):
    help = "Freeze a named, hashed snapshot of a project's preference pairs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Snapshot name, unique within the project.")
        parser.add_argument("--project", required=True)
        parser.add_argument("--filter", default="{}", help="Filter as JSON.")
        parser.add_argument(
            "--pair-rule", default="all_pairs", choices=sorted(PAIR_RULES)
        )
        parser.add_argument("--tie-rule", default="drop", choices=sorted(TIE_RULES))
        parser.add_argument("--dedup-rule", default="none", choices=sorted(DEDUP_RULES))
        parser.add_argument(
            "--margin-rule", default="rank", choices=sorted(MARGIN_RULES)
        )
        parser.add_argument(
            "--rewrite-rule",
            default="sft",
            choices=sorted(REWRITE_RULES),
            help="sft: rewrites are SFT data only; chosen: each rewrite is also chosen "
            "over every response its annotator ranked.",
        )

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}")
        try:
            snapshot = freeze_snapshot(
                project,
                options["name"],
                filter=json.loads(options["filter"]),
                pair_rule=options["pair_rule"],
                tie_rule=options["tie_rule"],
                dedup_rule=options["dedup_rule"],
                margin_rule=options["margin_rule"],
                rewrite_rule=options["rewrite_rule"],
            )
        except json.JSONDecodeError as exc:
            raise CommandError(f"--filter is not valid JSON ({exc})") from None
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            f"{snapshot.name}: {snapshot.row_count} pairs, sha256 {snapshot.sha256}"
        )
