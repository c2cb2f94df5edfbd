"""`manage.py export_preferences`: freeze a snapshot (or reuse one) and export it."""

from __future__ import annotations

import json
import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from annotation.export import (
    FILE_FORMATS,
    FORMATS,
    PROMPT_MODES,
    STYLES,
    export_snapshot,
)
from annotation.management.commands.freeze_snapshot import (
    add_rule_arguments,
    rule_options,
)
from annotation.models import Project, Snapshot
from annotation.snapshots import freeze_snapshot, not_frozen


class Command(BaseCommand):
    help = (
        "Freeze a preference snapshot of a project and write it in a trainer's format."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project name.")
        parser.add_argument("--out", required=True, help="Output file or folder.")
        parser.add_argument(
            "--snapshot", help="Export this existing snapshot instead of freezing."
        )
        parser.add_argument(
            "--name", help="Name of the new snapshot (default: a timestamp)."
        )
        parser.add_argument("--filter", default="{}", help="Snapshot filter as JSON.")
        add_rule_arguments(parser)
        parser.add_argument("--format", default="trl", choices=FORMATS)
        parser.add_argument("--style", default="conversational", choices=STYLES)
        parser.add_argument("--prompt", default="explicit", choices=PROMPT_MODES)
        parser.add_argument(
            "--file-format",
            choices=FILE_FORMATS,
            help="Default: from the --out suffix.",
        )
        parser.add_argument(
            "--push-to-hub", metavar="REPO_ID", help="Also push (hf folders)."
        )
        parser.add_argument("--hub-token", help="Hub token (default: $HF_TOKEN).")

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(
                f"no project named {options['project']!r}; existing: "
                f"{', '.join(Project.objects.values_list('name', flat=True)) or 'none'}"
            )
        try:
            if options["snapshot"]:
                snapshot = Snapshot.any_state.filter(
                    project=project, name=options["snapshot"]
                ).first()
                if snapshot is None:
                    raise CommandError(
                        f"project {project.name} has no snapshot {options['snapshot']!r}"
                    )
                if snapshot.status != Snapshot.Status.DONE:
                    raise CommandError(
                        not_frozen(snapshot, "export it once its page says done")
                    )
            else:
                try:
                    filter = json.loads(options["filter"])
                except json.JSONDecodeError as exc:
                    raise CommandError(
                        f"--filter is not valid JSON ({exc}): {options['filter']!r}"
                    ) from None
                snapshot = freeze_snapshot(
                    project,
                    options["name"] or f"export-{timezone.now():%Y%m%d-%H%M%S-%f}",
                    filter=filter,
                    **rule_options(options),
                )
            path = export_snapshot(
                snapshot,
                options["out"],
                fmt=options["format"],
                style=options["style"],
                prompt=options["prompt"],
                file_format=options["file_format"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            f"snapshot {snapshot.name}: {snapshot.row_count} pairs, sha256 {snapshot.sha256}\n"
            f"wrote {path}"
        )
        if options["push_to_hub"]:
            from annotation.export import push_to_hub

            token = options["hub_token"] or os.environ.get("HF_TOKEN", "")
            if not token:
                raise CommandError("--push-to-hub needs --hub-token or HF_TOKEN")
            if path.is_file():
                raise CommandError(
                    "--push-to-hub needs a folder export (--file-format hf)"
                )
            self.stdout.write(
                f"pushed to {push_to_hub(path, options['push_to_hub'], token)}"
            )
