"""`manage.py cancel_round ID`: cancel a training round; a running stage stops at a checkpoint."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.models import TrainingRound
from training.rounds import cancel_round


class Command(BaseCommand):
    help = "Cancel a training round: queued stages never start, a running stage is asked to stop."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("round", type=int, help="Training round id.")

    def handle(self, *args, **options) -> None:
        training_round = TrainingRound.objects.filter(pk=options["round"]).first()
        if training_round is None:
            raise CommandError(f"no training round {options['round']}")
        try:
            cancel_round(training_round)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"training round {training_round.pk} cancelled")
