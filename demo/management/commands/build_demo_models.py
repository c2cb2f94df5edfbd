"""manage.py build_demo_models: pre-train demo-base, fine-tune demo-sft, register both."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Build the tiny demo models (pre-trained demo-base and SFT demo-sft) from the "
        "generated demo domain and register them. Skips models already built."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--preset",
            default="demo",
            help="demo (a few CPU minutes) or micro (tests).",
        )
        parser.add_argument(
            "--out", default="", help="Folder for the models (default: MODEL_DIR)."
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--force", action="store_true", help="Rebuild even if present."
        )

    def handle(
        self, *args, preset: str, out: str, seed: int, force: bool, **options
    ) -> None:
        from demo.policies import PLANS, build_demo_models, register_demo_models

        if preset not in PLANS:
            raise CommandError(
                f"unknown --preset {preset!r}; expected one of {sorted(PLANS)}"
            )
        out_dir = Path(out) if out else Path(settings.MODEL_DIR)
        paths = build_demo_models(out_dir, preset, seed, progress=True, force=force)
        rows = register_demo_models(paths)
        for _key, row in rows.items():
            samples = row.metrics.get("samples")
            extra = (
                f" judge mean {samples['judge_mean']} ± {samples['judge_std']}"
                if samples
                else ""
            )
            self.stdout.write(f"{row.name}: {row.base_path}{extra}")
