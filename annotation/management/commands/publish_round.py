"""manage.py publish_round: generate candidates with a policy and publish a labelling round."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from inference.models import Policy


class Command(BaseCommand):
    help = "Generate K candidates per prompt with a policy and create one ranking task per prompt."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project name (slug).")
        parser.add_argument(
            "--policy", default="", help="Policy name (default: the project's current)."
        )
        parser.add_argument("--prompts", type=int, default=32, help="How many prompts.")
        parser.add_argument(
            "--k",
            type=int,
            default=None,
            help="Candidates per prompt (default: the project's).",
        )
        parser.add_argument(
            "--strategy",
            default="fresh",
            help="fresh, random, disagreement or uncertainty.",
        )
        parser.add_argument(
            "--reward-model",
            action="append",
            default=[],
            dest="reward_models",
            metavar="NAME",
            help="Reward model judging 'uncertainty'; repeat for an ensemble "
            "(default: the newest trained on one of the project's snapshots).",
        )
        parser.add_argument("--temperature", type=float, default=1.0)
        parser.add_argument("--top-k", type=int, default=0, help="0 turns top-k off.")
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--max-new-tokens", type=int, default=64)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **opts) -> None:
        from tqdm import tqdm

        from annotation.rounds import publish_round
        from inference.sampling import SamplingConfig

        project = Project.objects.filter(name=opts["project"]).first()
        if project is None:
            raise CommandError(f"no project named {opts['project']!r}; create it first")
        policy = None
        if opts["policy"]:
            policy = Policy.objects.filter(name=opts["policy"]).first()
            if policy is None:
                raise CommandError(
                    f"no policy named {opts['policy']!r}; registered: "
                    f"{list(Policy.objects.values_list('name', flat=True))}"
                )
        reward_models = []
        registered = Policy.objects.filter(kind=Policy.Kind.REWARD_MODEL)
        for name in opts["reward_models"]:
            found = registered.filter(name=name).first()
            if found is None:
                raise CommandError(
                    f"no reward model named {name!r}; registered reward models: "
                    f"{list(registered.values_list('name', flat=True))}"
                )
            reward_models.append(found)
        try:
            sampling = SamplingConfig(
                temperature=opts["temperature"],
                top_k=opts["top_k"],
                top_p=opts["top_p"],
                max_new_tokens=opts["max_new_tokens"],
                num_candidates=opts["k"] or project.responses_per_task,
                seed=opts["seed"],
            )
            # "uncertainty" generates for more prompts than it publishes.
            total = None if opts["strategy"] == "uncertainty" else opts["prompts"]
            with tqdm(total=total, desc="generating", unit="prompt") as bar:
                round_ = publish_round(
                    project,
                    policy=policy,
                    n_prompts=opts["prompts"],
                    sampling=sampling,
                    strategy=opts["strategy"],
                    seed=opts["seed"],
                    progress=bar.update,
                    reward_models=reward_models,
                )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"published {project.name} round {round_.number}: {round_.tasks.count()} tasks "
            f"by {round_.policy.name}"
        )
