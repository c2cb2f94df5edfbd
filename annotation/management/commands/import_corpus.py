"""`manage.py import_corpus FILE --project NAME --name CORPUS`: curate a corpus into a project."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.corpora import create_corpus
from annotation.curation import CORPUS_FILTERS
from annotation.models import Corpus, Project


class Command(BaseCommand):
    help = (
        "Curate a text corpus (or demonstrations) into a project: duplicates, junk and "
        "harmful texts left out, the rest stored with its SHA-256 for a pretrain (sft) stage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--project", required=True)
        parser.add_argument("--name", required=True, help="The corpus's name.")
        parser.add_argument(
            "--kind", default=Corpus.Kind.TEXT, choices=Corpus.Kind.values
        )
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FILTER=VALUE",
            help=f"A curation threshold, e.g. min_chars=32; of {sorted(CORPUS_FILTERS.to_dict())}.",
        )

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}")
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        filters = {}
        for pair in options["set"][:20]:
            key, sep, value = pair.partition("=")
            if not sep:
                raise CommandError(f"--set takes FILTER=VALUE, got {pair!r}")
            default = CORPUS_FILTERS.to_dict().get(key.strip())
            try:
                filters[key.strip()] = (
                    value.strip().lower() in ("1", "true", "yes", "on")
                    if isinstance(default, bool)
                    else type(default or 0.0)(value)
                )
            except ValueError:
                raise CommandError(f"--set {key}: not a number: {value!r}") from None
        try:
            with path.open("rb") as handle:
                corpus = create_corpus(
                    project,
                    options["name"],
                    File(handle, name=path.name),
                    kind=options["kind"],
                    filters=filters,
                    max_bytes=settings.IMPORT_MAX_BYTES,
                )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            f"{corpus.name}: kept {corpus.kept} of {corpus.records} records, "
            f"SHA-256 {corpus.sha256}"
        )
        for reason in corpus.report["reasons"]:
            self.stdout.write(f"  {reason['reason']}: {reason['count']} dropped")
