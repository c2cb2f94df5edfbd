"""`manage.py import_prompts FILE --project NAME`: curate a prompt file into the pool."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from annotation.pool import add_prompts


def read_prompts(path: Path) -> list:
    """Return the prompts of a file: .txt one per line; .json a list; .jsonl one per line.

    A JSON record may be a string, a message list, or an object with `prompt`,
    `messages` or `text`.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    name = path.name.removesuffix(".gz")
    if name.endswith(".txt"):
        return [line for line in text.splitlines() if line.strip()]
    if name.endswith(".json"):
        records = json.loads(text)
    elif name.endswith(".jsonl"):
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        raise CommandError(f"cannot read {path.name}: use .txt, .json or .jsonl")
    prompts = []
    for record in records:
        if isinstance(record, dict):
            record = record.get("prompt", record.get("messages", record.get("text")))
        prompts.append(record)
    return prompts


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
        try:
            prompts = read_prompts(path)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path.name} is not valid JSON: {exc}") from None
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
