"""`manage.py import_preferences FILE --project NAME`: import rankings, whole or nothing."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.importing import FORMATS, import_preferences, iter_lines
from annotation.models import Project


class Command(BaseCommand):
    help = (
        "Import preference data (TRL, KTO, HH-RLHF, UltraFeedback, OpenAssistant, ranking "
        "lists; JSONL, gzip JSONL or Parquet). Lands whole or not at all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--project", required=True, help="Created if absent.")
        parser.add_argument("--format", choices=FORMATS, help="Default: detected.")
        parser.add_argument(
            "--source", help="Name for imported:<source> (default: file name)."
        )
        parser.add_argument(
            "--skip-invalid",
            action="store_true",
            help="Import valid records, report the rest.",
        )

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        project, created = Project.objects.get_or_create(name=options["project"])
        if created:
            self.stdout.write(f"created project {project.name}")
        try:
            report = import_preferences(
                project,
                path,
                fmt=options["format"],
                source=options["source"],
                skip_invalid=options["skip_invalid"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        for line in iter_lines(report):
            self.stdout.write(line)
        if not report.is_applied:
            raise CommandError(
                f"{len(report.rejected)} invalid records; nothing imported"
            )
