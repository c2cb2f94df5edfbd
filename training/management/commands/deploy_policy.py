"""`manage.py deploy_policy`: make a policy the project's current policy, or roll back."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from inference.models import Policy
from training.deployment import deploy_policy, rollback_policy


class Command(BaseCommand):
    help = (
        "Deploy a registered policy to a project (publish_round then samples from it)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "policy", nargs="?", default="", help="Registered policy name."
        )
        parser.add_argument("--project", required=True)
        parser.add_argument(
            "--rollback",
            action="store_true",
            help="Deploy again the policy the newest deployment replaced.",
        )

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}")
        if options["rollback"] == bool(options["policy"]):
            raise CommandError("give either a policy name or --rollback")
        try:
            if options["rollback"]:
                deployment = rollback_policy(project, user=None)
            else:
                policy = Policy.objects.filter(name=options["policy"]).first()
                if policy is None:
                    raise CommandError(
                        f"no registered policy named {options['policy']!r}"
                    )
                deployment = deploy_policy(project, policy, user=None)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            f"{deployment.policy.name} is the current policy of {project.name}"
        )
