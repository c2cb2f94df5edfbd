"""`manage.py run_loop`: run the feedback loop headless, round after round."""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from annotation.models import Project
from annotation.simulated import REWRITE_STARTS
from config.roles import ADMIN
from inference.models import Policy
from training.loop import METHOD_DEFAULTS, LoopConfig, run_loop


class Command(BaseCommand):
    help = (
        "Run publish -> annotate -> snapshot -> train -> evaluate -> deploy for N rounds, "
        "printing a table per round; the last line is one JSON object."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Long on purpose: one argument per LoopConfig field, each with its help."""
        defaults = LoopConfig()
        parser.add_argument("--project", required=True)
        parser.add_argument("--rounds", type=int, default=defaults.rounds)
        parser.add_argument(
            "--method", choices=sorted(METHOD_DEFAULTS), default=defaults.method
        )
        parser.add_argument(
            "--seeds",
            type=int,
            default=defaults.seeds,
            help="Independent runs of all rounds (seeds --seed.. --seed+N-1); figures "
            "are their mean with a 95%% interval over prompts.",
        )
        parser.add_argument(
            "--annotators",
            choices=["simulated"],
            default="simulated",
            help="Who ranks: simulated (noisy personas of the judge, one per overlap slot).",
        )
        parser.add_argument(
            "--split",
            choices=["test", "dev"],
            default=defaults.split,
            help="Held-out split evaluated on: test (reported) or dev (choosing settings).",
        )
        parser.add_argument(
            "--pairs",
            choices=["all_pairs", "best_vs_rest"],
            default="",
            help="Snapshot pair rule (default: the method's, see training.loop.METHOD_DEFAULTS).",
        )
        parser.add_argument(
            "--candidates",
            type=int,
            default=-1,  # not defaults.candidates: LoopConfig() has resolved DPO's
            help="Responses per task, 2-8 (0: the project's; default: the method's, "
            "see training.loop.METHOD_DEFAULTS).",
        )
        parser.add_argument(
            "--judge",
            default=defaults.judge,
            help="Registered name of the judge (default: the only registered one, "
            "the demo's when the demo is installed).",
        )
        parser.add_argument(
            "--prompts",
            type=int,
            default=-1,  # the method's (METHOD_DEFAULTS)
            help="Fresh prompts published per round (default: the method's, see "
            "training.loop.METHOD_DEFAULTS: 256 for the sft- methods, 128 for the "
            "others).",
        )
        parser.add_argument(
            "--earlier-policies",
            type=int,
            default=defaults.earlier_policies,
            help="Earlier policies that also write candidates each round.",
        )
        parser.add_argument(
            "--temperature",
            type=float,
            default=-1.0,  # the method's (METHOD_DEFAULTS)
            help="Sampling temperature of candidates (default: the method's, see "
            "training.loop.METHOD_DEFAULTS: 0.7 for the sft- methods, 1.0 for the "
            "others).",
        )
        parser.add_argument(
            "--max-new-tokens", type=int, default=defaults.max_new_tokens
        )
        parser.add_argument(
            "--noise",
            default=f"{defaults.flip_rate},{defaults.tie_rate},{defaults.skip_rate}",
            help="FLIP[,TIE[,SKIP]] rates of the simulated personas (each draws its "
            "flip rate within FLIP +-0.05).",
        )
        parser.add_argument(
            "--votes",
            choices=["consensus", "every"],
            default="",
            help="Snapshot votes (default: the method's, see training.loop.METHOD_DEFAULTS).",
        )
        parser.add_argument(
            "--rewrites",
            type=float,
            default=defaults.rewrites,
            help="Share of tasks (0-1) where a simulated annotator whose best candidate "
            "is wrong writes a corrected rewrite, trained on as a chosen response "
            "(needs a judge with `repair`: demo or instructions).",
        )
        parser.add_argument(
            "--rewrite-from",
            choices=REWRITE_STARTS,
            default=defaults.rewrite_from,
            help="Which candidate a rewrite starts from: the top-ranked (best) or the "
            "best-ranked whose repair says something (substantive; --judge instructions).",
        )
        parser.add_argument(
            "--data",
            choices=["round", "all"],
            default="",  # the method's (METHOD_DEFAULTS)
            help="Train each round on its own rankings or on all the seed's rounds so "
            "far (default: the method's, see training.loop.METHOD_DEFAULTS: all for "
            "sft-ppo, sft-grpo and sft-rloo, round for the others).",
        )
        parser.add_argument(
            "--reward-ensemble",
            type=int,
            default=defaults.reward_ensemble,
            help="PPO, GRPO, RLOO: score rollouts with the mean of this round's reward model and up "
            "to N-1 earlier rounds' of the seed, each normalised on its own (1: this "
            "round's only).",
        )
        parser.add_argument(
            "--reward",
            choices=["model", "judge"],
            default=defaults.reward,
            help="GRPO, RLOO: score rollouts with a reward model trained on the round's "
            "rankings (model), or with the judge itself, a verifiable reward (judge: no "
            "reward stage runs; needs a judge with `reward`: demo or instructions).",
        )
        parser.add_argument("--eval-prompts", type=int, default=defaults.eval_prompts)
        parser.add_argument("--eval-samples", type=int, default=defaults.eval_samples)
        parser.add_argument(
            "--eval-temperature", type=float, default=defaults.eval_temperature
        )
        parser.add_argument(
            "--step-decay",
            type=float,
            default=-1.0,  # the method's (METHOD_DEFAULTS)
            help="Each round's policy learning rate is the previous round's times this "
            "(1: constant; default: the method's, 0.5 for DPO and PPO).",
        )
        parser.add_argument(
            "--sft-step-decay",
            type=float,
            default=-1.0,  # the method's (METHOD_DEFAULTS)
            help="Each round's SFT step (the sft- methods: before the policy stage) "
            "learns at the previous round's rate times this (1: constant; default: the "
            "method's, 0.5 for the sft- methods).",
        )
        parser.add_argument(
            "--train",
            default="{}",
            help='Per-stage trainer options as JSON, e.g. \'{"dpo": {"learning_rate": 1e-3}}\'.',
        )
        parser.add_argument(
            "--reference",
            default="",
            help="Policy the win rate and KL are measured against (default: SFT).",
        )
        parser.add_argument(
            "--user",
            default="",
            help="Admin who launches and deploys (default: the first admin).",
        )
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument(
            "--plot",
            default="",
            help="PNG path of the curves (default: var/loop/<project>-<method>-<time>.png); "
            "each seed's figures go beside it as .json (manage.py pool_loop pools them).",
        )

    def handle(self, *args, **options) -> None:
        from annotation.management.commands.simulate_annotators import parse_noise

        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(
                f"no project named {options['project']!r}; run `make run` or create it"
            )
        flip, tie, skip = parse_noise(options["noise"])
        try:
            train = json.loads(options["train"])
        except json.JSONDecodeError as exc:
            raise CommandError(
                f'--train is not valid JSON ({exc}); e.g. \'{{"dpo": {{"beta": 0.1}}}}\''
            ) from None
        try:
            config = LoopConfig(
                rounds=options["rounds"],
                method=options["method"],
                seeds=options["seeds"],
                split=options["split"],
                pairs=options["pairs"],
                candidates=options["candidates"],
                prompts_per_round=options["prompts"],
                earlier_policies=options["earlier_policies"],
                temperature=options["temperature"],
                max_new_tokens=options["max_new_tokens"],
                flip_rate=flip,
                tie_rate=tie,
                skip_rate=skip,
                judge=options["judge"],
                votes=options["votes"],
                data=options["data"],
                reward_ensemble=options["reward_ensemble"],
                reward=options["reward"],
                rewrites=options["rewrites"],
                rewrite_from=options["rewrite_from"],
                eval_prompts=options["eval_prompts"],
                eval_samples=options["eval_samples"],
                eval_temperature=options["eval_temperature"],
                train=train,
                step_decay=options["step_decay"],
                sft_step_decay=options["sft_step_decay"],
                seed=options["seed"],
            )
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        reference = None
        if options["reference"]:
            reference = Policy.objects.filter(name=options["reference"]).first()
            if reference is None:
                raise CommandError(
                    f"no policy named {options['reference']!r} to use as --reference"
                )
        user = self._user(options["user"])
        plot = (
            Path(options["plot"])
            if options["plot"]
            else (
                Path(settings.VAR_DIR)
                / "loop"
                / f"{project.name}-{config.label}-{time.strftime('%Y%m%d-%H%M%S')}.png"
            )
        )
        try:
            run_loop(
                project,
                config,
                user=user,
                reference=reference,
                out=self.stdout.write,
                plot_path=plot,
                figures_path=plot.with_suffix(".json"),
            )
        except ValidationError as exc:  # a refused launch or deployment
            raise CommandError("; ".join(exc.messages)) from None
        except (RuntimeError, ValueError) as exc:
            raise CommandError(str(exc)) from None

    def _user(self, username: str) -> User | None:
        if username:
            user = User.objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"no user named {username!r} for --user")
            return user
        return (
            User.objects.filter(Q(is_superuser=True) | Q(groups__name=ADMIN))
            .order_by("id")
            .first()
        )
