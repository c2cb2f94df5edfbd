"""`manage.py import_preferences FILE --project NAME`: import rankings, whole or nothing."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    OutputWrapper,
)
from django.db import transaction

from annotation.importing import FORMATS, import_preferences, iter_lines
from annotation.models import Project


class _Refused(Exception):
    """Roll back a project created for an import that was refused."""

    def __init__(self, report) -> None:
        super().__init__()
        self.report = report


class ProgressBar:
    """Draw how far a command's work got on stderr (reading a file, freezing a
    snapshot): redrawn in place on a terminal, one line per tenth elsewhere (a log
    keeps eleven lines, not thousands)."""

    WIDTH = 30

    def __init__(self, out: OutputWrapper, name: str, verb: str = "reading") -> None:
        self.out = out
        self.name = name
        self.verb = verb
        self.in_place = out.isatty()
        self.shown = -1

    def __call__(self, fraction: float, records: int | None = None) -> None:
        tenth = int(fraction * 10)
        if not self.in_place and tenth == self.shown:
            return
        self.shown = tenth
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"{self.verb} {self.name} [{bar}] {fraction:4.0%}"
        if records is not None:
            line += f" {records:,} records"
        if self.in_place:
            self.out.write("\r" + line, ending="\n" if fraction >= 1 else "")
        else:
            self.out.write(line)


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
        try:
            # One transaction: a refused import into a project it created leaves
            # no project behind.
            with transaction.atomic():
                project, created = Project.objects.get_or_create(
                    name=options["project"]
                )
                report = import_preferences(
                    project,
                    path,
                    fmt=options["format"],
                    source=options["source"],
                    skip_invalid=options["skip_invalid"],
                    progress=ProgressBar(self.stderr, path.name),
                )
                if created and not report.is_applied:
                    raise _Refused(report)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        except _Refused as refused:
            report = refused.report
        if created and report.is_applied:
            self.stdout.write(f"created project {project.name}")
        for line in iter_lines(report):
            self.stdout.write(line)
        if not report.is_applied:
            raise CommandError(
                f"{len(report.rejected)} invalid records; nothing imported"
            )
