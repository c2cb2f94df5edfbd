"""`manage.py resume_round ID`: re-queue a failed or cancelled round from its last checkpoint."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.models import TrainingRound
from training.reaper import reap_stale_jobs
from training.tasks import resume


class Command(BaseCommand):
    help = (
        "Resume a failed or cancelled training round: its first unfinished stage restarts "
        "from its last checkpoint. Marks jobs of dead workers failed first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("round", type=int, help="Training round id.")

    def handle(self, *args, **options) -> None:
        reaped = reap_stale_jobs()
        if reaped:
            self.stdout.write(
                f"marked jobs {reaped} failed: their worker stopped heartbeating"
            )
        training_round = TrainingRound.objects.filter(pk=options["round"]).first()
        if training_round is None:
            raise CommandError(f"no training round {options['round']}")
        try:
            job = resume(training_round)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            f"training round {training_round.pk} resumes at stage {job.index + 1} ({job.stage})"
        )
