"""`manage.py launch_round`: launch a training round, optionally waiting with a progress bar."""

from __future__ import annotations

import time

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from training.models import FINISHED, Status, TrainingRound
from training.reaper import reap_stale_jobs
from training.rounds import parse_settings
from training.stages import parse_method
from training.tasks import launch

BAR_WIDTH = 30


def progress_line(training_round: TrainingRound) -> str:
    """Return one line: a bar over all stages, the current stage, its step and loss."""
    jobs = list(training_round.jobs.order_by("index"))
    done = sum(1 for j in jobs if j.status == Status.SUCCEEDED)
    current = next((j for j in jobs if j.status != Status.SUCCEEDED), jobs[-1])
    share = (
        done
        + (current.progress_fraction() if current.status != Status.SUCCEEDED else 0)
    ) / len(jobs)
    filled = round(share * BAR_WIDTH)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    parts = [
        f"[{bar}] {share:4.0%}",
        f"stage {current.index + 1}/{len(jobs)} {current.stage}",
        current.status,
        f"step {current.step}/{current.total_steps or '?'}",
    ]
    if isinstance(current.last_metrics.get("loss"), (int, float)):
        parts.append(f"loss {current.last_metrics['loss']:.4f}")
    return "  ".join(parts)


class Command(BaseCommand):
    help = (
        "Launch a training round: freeze a snapshot, queue the stages for the worker "
        "(manage.py db_worker). --wait prints progress until the round ends."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project name, e.g. demo.")
        parser.add_argument(
            "--method",
            default="dpo",
            help="Stages in order: dpo, sft,dpo, reward,ppo, reward,grpo, ...",
        )
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="queue=gpu, accelerate=ddp, policy=NAME, reward_model=NAME, snapshot=NAME, "
            "STAGE.FIELD=VALUE (e.g. dpo.beta=0.2), or FIELD=VALUE for every stage that has it.",
        )
        parser.add_argument(
            "--user", default="", help="Username recorded as the launcher."
        )
        parser.add_argument(
            "--wait", action="store_true", help="Print progress until the round ends."
        )
        parser.add_argument(
            "--poll", type=float, default=2.0, help="Seconds between progress lines."
        )

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(
                f"no project named {options['project']!r}; create it on the pages or with manage.py run_demo --setup-only (the demo)"
            )
        user = None
        if options["user"]:
            user = User.objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user named {options['user']!r}")
        try:
            stages = parse_method(options["method"])
            launch_options = parse_settings(options["set"], stages)
            training_round = launch(
                project, ",".join(stages), user=user, options=launch_options
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        snapshot = training_round.snapshot
        self.stdout.write(
            f"training round {training_round.pk} queued: {training_round.method} from "
            f"{training_round.parent_policy.name}"
            + (
                (
                    f" on snapshot {snapshot.name} ({snapshot.row_count} pairs, sha256 {snapshot.sha256})"
                    if snapshot.status == "done"
                    else f" on snapshot {snapshot.name} (of every ranking; its first "
                    "stage freezes it in the worker)"
                )
                if snapshot
                else ""
            )
        )
        if options["wait"]:
            self.wait(training_round, options["poll"])

    def wait(self, training_round: TrainingRound, poll: float) -> None:
        """Print a progress line whenever it changes until the round finishes."""
        last = ""
        while True:
            reap_stale_jobs()
            training_round.refresh_from_db()
            line = progress_line(training_round)
            if line != last:
                self.stdout.write(line)
                last = line
            if (
                training_round.status in FINISHED
                and not training_round.jobs.filter(status=Status.RUNNING).exists()
            ):
                break
            time.sleep(poll)
        if training_round.status != Status.SUCCEEDED:
            raise CommandError(
                f"training round {training_round.pk} {training_round.status}: {training_round.error}"
            )
        self.stdout.write(
            f"training round {training_round.pk} succeeded: {training_round.output_policy}"
        )
