"""Pool the seeds of several run_loop figures files into one figure with one interval."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.loop import pool_figures

MAX_FILES = 100


class Command(BaseCommand):
    help = (
        "Pool the seeds of run_loop figures files (printed as 'figures: PATH') into "
        "each round's mean with its 95% interval over prompts, printed as run_loop "
        "prints them; the last line is the same JSON object."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "files", nargs="+", help="Figures files (.json) of run_loop."
        )
        parser.add_argument(
            "--plot", default="", help="PNG path of the pooled curves (default: none)."
        )

    def handle(self, *args, **options) -> None:
        files = [Path(f) for f in options["files"]]
        if len(files) > MAX_FILES:
            raise CommandError(f"at most {MAX_FILES} files, got {len(files)}")
        try:
            pool_figures(
                files,
                out=self.stdout.write,
                plot_path=Path(options["plot"]) if options["plot"] else None,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
