"""`manage.py import_prompts FILE --project NAME`: curate a prompt file into the pool."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from annotation.pool import add_prompts
from annotation.prompt_files import read_prompt_file


def read_prompts(path: Path) -> list:
    """Return the prompts of a file (see annotation/prompt_files.py for the kinds).

    Raise CommandError naming the first unreadable record.
    """
    try:
        read = read_prompt_file(path.name, path)
    except ValidationError as exc:
        raise CommandError("; ".join(exc.messages)) from None
    if read.unreadable:
        first = read.unreadable[0]
        raise CommandError(f"{path.name} line {first['line']}: {first['reason']}")
    return read.prompts


class Command(BaseCommand):
    help = "Add prompts from a file to a project's pool, curated: duplicates and junk left out."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--project", required=True)
        parser.add_argument(
            "--held-out", action="store_true", help="Keep them for evaluation."
        )

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}")
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        prompts = read_prompts(path)
        report = add_prompts(
            project,
            prompts,
            source=f"file:{path.name}",
            is_held_out=options["held_out"],
        )
        self.stdout.write(
            f"{len(prompts)} prompts read, {len(report.added)} added, "
            f"{len(report.rejected)} left out, {len(report.flagged)} flagged"
        )
        for item in report.rejected:
            self.stdout.write(f"  left out #{item['index'] + 1}: {item['reason']}")
        for item in report.flagged:
            self.stdout.write(f"  flagged #{item['index'] + 1}: {item['reason']}")
