"""`manage.py evaluate_reward_model MODEL_NAME FILE`: pairwise accuracy of a registered reward model."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.importing import parse_file
from annotation.models import order_to_pairs
from inference.models import Policy


def preference_pairs(path: Path, fmt: str | None = None) -> tuple[list[dict], int]:
    """Return (prompt/chosen/rejected rows, rejected record count) of any file the importer reads.

    Every pair of differing rank of each record is one row; ties give none.
    """
    parsed = parse_file(path, fmt)
    rows = []
    for record in parsed.records:
        for chosen, rejected, _ in order_to_pairs(record.order):
            rows.append(
                {
                    "prompt": record.prompt,
                    "chosen": [
                        {"role": "assistant", "content": record.responses[chosen]}
                    ],
                    "rejected": [
                        {"role": "assistant", "content": record.responses[rejected]}
                    ],
                }
            )
    return rows, len(parsed.rejected)


class Command(BaseCommand):
    help = (
        "Score every preference pair of FILE with a registered reward model and print its "
        'pairwise accuracy; the last line is JSON: {"pairs", "accuracy", "mean_margin"}.'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "model_name", help="Name of a registered Policy of kind reward_model."
        )
        parser.add_argument(
            "file", help="A preference file in any format the importer reads."
        )
        parser.add_argument(
            "--format", default=None, help="Force the file format (default: detect)."
        )
        parser.add_argument(
            "--batch-size", type=int, default=32, help="Pairs scored per batch."
        )
        parser.add_argument(
            "--max-length", type=int, default=512, help="Tokens kept per input."
        )

    def handle(self, *args, **options) -> None:
        from inference.scoring import load_reward_model
        from training.reward import evaluate_pairs

        name = options["model_name"]
        try:
            policy = Policy.objects.get(name=name)
        except Policy.DoesNotExist:
            raise CommandError(
                f"no registered model named {name!r}; see the registry page"
            ) from None
        if policy.kind != Policy.Kind.REWARD_MODEL:
            raise CommandError(
                f"{name!r} is a {policy.kind}, not a reward_model; pass a reward model's name"
            )
        if policy.adapter_path:
            raise CommandError(
                f"{name!r} has an adapter; reward stages save merged models, register its merged folder"
            )
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"file {path} does not exist")
        try:
            rows, skipped = preference_pairs(path, options["format"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if not rows:
            raise CommandError(f"{path} holds no pair of differing rank to score")
        model, tokenizer = load_reward_model(policy.base_path)
        result = evaluate_pairs(
            model,
            tokenizer,
            rows,
            batch_size=options["batch_size"],
            max_length=options["max_length"],
        )
        self.stdout.write(
            f"{name}: {result['pairs']} pairs from {path.name} ({skipped} records skipped)"
        )
        self.stdout.write(json.dumps(result))
