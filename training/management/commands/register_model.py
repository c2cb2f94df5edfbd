"""`manage.py register_model`: bring a model in (folder, GGUF file, adapter or hub id), optionally deploy it."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from inference.registry import register_model
from training.deployment import deploy_policy


class Command(BaseCommand):
    help = (
        "Register a model from SOURCE: a Hugging Face folder (safetensors), a .gguf "
        "file (converted to safetensors), a PEFT adapter folder or a hub id. The "
        "model lands in MODEL_DIR/NAME with a model card."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Unique name; also the model's folder name.")
        parser.add_argument(
            "source", help="Model folder, .gguf file, adapter folder or hub id."
        )
        parser.add_argument("--kind", choices=["policy", "reward"], default="policy")
        parser.add_argument(
            "--parent", default="", help="A registered model it was derived from."
        )
        parser.add_argument(
            "--base",
            default="",
            help="For an adapter: the registered model it sits on (default: the "
            "base named in its adapter_config.json).",
        )
        parser.add_argument(
            "--allow-pickle",
            action="store_true",
            help="Accept pickle-only (.bin) weights; only from a source you trust.",
        )
        parser.add_argument(
            "--chat-template",
            default="",
            metavar="FILE",
            help="A Jinja chat template for a model whose tokenizer has none.",
        )
        parser.add_argument(
            "--project", default="", help="With --deploy: the project to serve."
        )
        parser.add_argument(
            "--deploy",
            action="store_true",
            help="Make it the project's current policy (needs --project).",
        )

    def handle(self, *args, **options) -> None:
        project = None
        if options["deploy"] or options["project"]:
            if not (options["deploy"] and options["project"]):
                raise CommandError("--project and --deploy go together; give both")
            project = Project.objects.filter(name=options["project"]).first()
            if project is None:
                raise CommandError(
                    f"no project named {options['project']!r}; create it first or "
                    "check the name"
                )
            if options["kind"] != "policy":
                raise CommandError(
                    f"--deploy serves a policy, not a {options['kind']} model; "
                    "drop --deploy or register it with --kind policy"
                )
        try:
            policy = register_model(
                options["name"],
                options["source"],
                kind=options["kind"],
                parent=options["parent"],
                base=options["base"],
                allow_pickle=options["allow_pickle"],
                chat_template=options["chat_template"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if project is not None:
            try:
                deploy_policy(project, policy, user=None)
            except ValidationError as exc:
                raise CommandError(
                    f"registered {policy.name} but did not deploy it: "
                    + "; ".join(exc.messages)
                ) from None
        self.stdout.write(
            f"registered {policy.name}: {policy.architecture or 'unknown architecture'}, "
            f"{policy.parameter_count or 0:,} parameters, {policy.dtype or '?'}, "
            f"in {policy.adapter_path or policy.base_path}"
        )
        if project is not None:
            self.stdout.write(f"{policy.name} is the current policy of {project.name}")
