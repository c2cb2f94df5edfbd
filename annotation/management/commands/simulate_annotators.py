"""`manage.py simulate_annotators`: rank a project's open tasks with simulated annotators."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from annotation.simulated import (
    JudgeAnnotator,
    NoisyAnnotator,
    RewardModelAnnotator,
    annotate,
    simulated_agreement,
    simulated_user,
)
from inference.judges import get_judge
from inference.models import Policy


def parse_noise(text: str) -> tuple[float, float, float]:
    """Return (flip, tie, skip) rates from 'FLIP[,TIE[,SKIP]]', e.g. '0.1,0.05,0.02'."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CommandError(
            f"--noise takes FLIP[,TIE[,SKIP]] rates such as 0.1,0.05,0.02; got {text!r}"
        ) from None
    if not 1 <= len(values) <= 3:
        raise CommandError(
            f"--noise takes one to three comma-separated rates, got {text!r}"
        )
    values += [0.0] * (3 - len(values))
    for name, value in zip(("flip", "tie", "skip"), values, strict=False):
        if not 0 <= value <= 1:
            raise CommandError(f"--noise {name} rate must be in [0, 1], got {value}")
    return values[0], values[1], values[2]


class Command(BaseCommand):
    help = (
        "Rank a project's open tasks with simulated annotators, through the same "
        "assignment and submission path as people."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument(
            "--annotator",
            choices=["judge", "reward-model"],
            default="judge",
            help="judge: a registered judge (--judge); reward-model: --reward-model.",
        )
        parser.add_argument(
            "--judge",
            default="",
            help="Registered name of the judge to rank with (default: the only "
            "registered one, the demo's when the demo is installed).",
        )
        parser.add_argument(
            "--reward-model",
            default="",
            help="Registry name of the reward model to rank with.",
        )
        parser.add_argument(
            "--noise",
            default="",
            help="FLIP[,TIE[,SKIP]] rates of the noisy wrapper, e.g. 0.1,0.05,0.02.",
        )
        parser.add_argument(
            "--count",
            type=int,
            default=1,
            help="How many simulated annotators (users sim-<kind>-1..N), each with its own seed.",
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the noise.")
        parser.add_argument(
            "--max-tasks",
            type=int,
            default=None,
            help="At most this many tasks per annotator.",
        )

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(
                f"no project named {options['project']!r}; create it first"
            )
        if options["count"] < 1:
            raise CommandError(f"--count must be at least 1, got {options['count']}")
        if options["annotator"] == "reward-model":
            rm = Policy.objects.filter(
                name=options["reward_model"], kind=Policy.Kind.REWARD_MODEL
            ).first()
            if rm is None:
                raise CommandError(
                    f"no reward model named {options['reward_model']!r}; pass "
                    "--reward-model with a registry name of kind reward_model"
                )
            base = RewardModelAnnotator(rm)
        else:
            try:
                base = JudgeAnnotator(get_judge(options["judge"]), options["judge"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        flip, tie, skip = (
            parse_noise(options["noise"]) if options["noise"] else (0, 0, 0)
        )
        for i in range(1, options["count"] + 1):
            annotator = base
            if options["noise"]:
                annotator = NoisyAnnotator(
                    base,
                    flip_rate=flip,
                    tie_rate=tie,
                    skip_rate=skip,
                    seed=options["seed"] + i - 1,
                )
            user = simulated_user(
                f"sim-{options['annotator']}-{i}", annotator.simulator
            )
            report = annotate(project, user, annotator, max_tasks=options["max_tasks"])
            paused = " (paused by the gold rule)" if report.paused else ""
            self.stdout.write(
                f"{report.username} [{annotator.simulator}]: ranked {report.ranked}, "
                f"skipped {report.skipped}{paused}"
            )
        for row in simulated_agreement(project):
            if row.agreement is not None:
                people = (
                    f"{row.human_agreement:.3f}"
                    if row.human_agreement is not None
                    else "n/a"
                )
                self.stdout.write(
                    f"{row.username} agrees with people on {row.agreement:.3f} of "
                    f"{row.pairs} pair judgements over {row.tasks} tasks "
                    f"(people with each other: {people})"
                )
