"""The headless feedback loop: publish, annotate, snapshot, train, evaluate, deploy; repeat.

Each round goes through the same functions the pages call:

1. `publish_round` samples candidates from the deployed policy (and, for cross-policy
   comparisons, from earlier ones) on fresh prompts of the pool;
2. simulated annotators (`annotation.simulated`), as many as the project's overlap,
   take the tasks through `next_task` / `submit_ranking` like people;
3. `freeze_snapshot` freezes this round's rankings into hashed preference pairs;
4. `launch` creates the training round and its stage jobs; the loop then runs
   those jobs itself with the worker's own task function (`run_training_job`),
   which starts each stage as a child process with a run directory, exactly as
   `db_worker` does. A running `db_worker` may take a stage instead: `start_job`
   lets exactly one claim it, and the loop waits for it. The platform's code path
   is the one measured; only the queue wait is skipped;
5. the new policy is evaluated on held-out prompts (never published): the
   judge's win rate (a registered judge, `inference.judges`: the demo's when the
   demo is installed) against the previous policy and against the SFT policy, the
   KL divergence to the SFT policy, and distinct-2 diversity; the figures are
   stored on the policy (`Policy.metrics`, read by the leaderboard);
6. `deploy_policy` makes it current, so the next round samples from it.

Win rates compare the i-th sample of one policy with the i-th sample of the other
on the same prompt, both drawn with the evaluation sampling; a judge tie counts
half. Distinct-2 is taken over each prompt's samples and averaged over prompts;
KL is `training.evaluation.kl_to_reference` on the policy's own samples. Plain
figures go to `out` as a table per round; the last line is one JSON object (see
`RoundFigures.summary`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from annotation.models import Project, Prompt, Snapshot
from inference.judges import Judge, get_judge
from inference.models import Policy
from training.charts import save_plot, table_header, table_row
from training.evaluation import mean_distinct_n
from training.models import TrainingRound
from training.stages import PIPELINES, implicit_stages

# The methods the loop runs (named pipelines of training/stages.py) and what each
# method's rounds use unless the loop's options say otherwise: snapshot votes, and
# stage options merged key by key under `LoopConfig.train`. PPO needs a
# short, KL-bound PPO stage: with the stage defaults a round's policy exploits the
# reward model (KL 9.8 to SFT, its diversity a third of SFT's) instead of beating
# SFT. Consensus votes beat every vote here (0.755 vs 0.701 against SFT, in half
# the time; one run each). Measured in docs/loop.md.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "dpo": {"votes": "consensus", "train": {}},
    "ppo": {
        "votes": "consensus",
        "train": {
            "reward": {"num_train_epochs": 1},
            "ppo": {"kl_coef": 0.3, "learning_rate": 1e-4, "max_steps": 15},
        },
    },
}
# Policy.metrics keys the loop writes (the leaderboard reads the first two).
JUDGE_VS_SFT = "judge_win_rate_vs_sft"
RM_VS_SFT = "rm_win_rate_vs_sft"
JUDGE_VS_PREVIOUS = "judge_win_rate_vs_previous"


@dataclass
class LoopConfig:
    """How the loop runs: round sizes, annotator noise, sampling, evaluation, training."""

    rounds: int = field(
        default=3, metadata={"help": "Rounds of publish -> train -> deploy."}
    )
    method: str = field(
        default="dpo", metadata={"help": "dpo, or ppo (a reward stage, then PPO)."}
    )
    prompts_per_round: int = field(
        default=128,
        metadata={
            "help": "Fresh prompts published per round (both methods measured at 128: docs/loop.md)."
        },
    )
    earlier_policies: int = field(
        default=1,
        metadata={
            "help": "How many earlier policies also write candidates, for cross-policy comparisons."
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature of candidates."}
    )
    top_k: int = field(default=0, metadata={"help": "Top-k of candidates (0: off)."})
    top_p: float = field(
        default=1.0, metadata={"help": "Top-p of candidates (1: off)."}
    )
    max_new_tokens: int = field(
        default=48, metadata={"help": "Longest candidate, in tokens."}
    )
    flip_rate: float = field(
        default=0.1, metadata={"help": "Simulated annotators' flip rate."}
    )
    tie_rate: float = field(
        default=0.0, metadata={"help": "Simulated annotators' tie rate."}
    )
    skip_rate: float = field(
        default=0.0, metadata={"help": "Simulated annotators' skip rate."}
    )
    judge: str = field(
        default="",
        metadata={
            "help": "Registered judge the simulated annotators rank with and the win "
            "rates are measured by ('': the only registered one, e.g. the demo's)."
        },
    )
    votes: str = field(
        default="",
        metadata={
            "help": "Snapshot votes: 'consensus' (one Borda order per task) or 'every'; "
            "'' takes the method's default (METHOD_DEFAULTS: consensus for both)."
        },
    )
    data: str = field(
        default="round",
        metadata={
            "help": "Train on this round's rankings ('round') or on all rounds so far ('all')."
        },
    )
    eval_prompts: int = field(
        default=100, metadata={"help": "Held-out prompts evaluated on."}
    )
    eval_samples: int = field(
        default=4,
        metadata={"help": "Samples per held-out prompt and policy (2 or more)."},
    )
    eval_temperature: float = field(
        default=1.0,
        metadata={"help": "Sampling temperature of evaluation samples (0: greedy)."},
    )
    train: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "Per-stage options, e.g. {'dpo': {'learning_rate': 1e-3}}; 'evaluate' "
            "configures the round's own evaluation stage."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of sampling, noise and training."}
    )

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.method not in METHOD_DEFAULTS:
            raise ValueError(
                f"method must be one of {sorted(METHOD_DEFAULTS)}, got {self.method!r}"
            )
        if self.prompts_per_round < 1:
            raise ValueError(
                f"prompts_per_round must be at least 1, got {self.prompts_per_round}"
            )
        if self.earlier_policies < 0:
            raise ValueError(
                f"earlier_policies must be >= 0, got {self.earlier_policies}"
            )
        for name in ("flip_rate", "tie_rate", "skip_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not self.votes and self.method in METHOD_DEFAULTS:
            self.votes = METHOD_DEFAULTS[self.method]["votes"]
        if self.votes not in ("consensus", "every"):
            raise ValueError(
                f"votes must be 'consensus' or 'every', got {self.votes!r}"
            )
        if self.data not in ("round", "all"):
            raise ValueError(f"data must be 'round' or 'all', got {self.data!r}")
        if self.eval_prompts < 1 or self.eval_samples < 2:
            raise ValueError(
                f"eval_prompts must be at least 1 and eval_samples at least 2 (distinct-2 "
                f"compares a prompt's samples), got {self.eval_prompts} and {self.eval_samples}"
            )
        stages = PIPELINES[self.method].split(",") + sorted(implicit_stages())
        unknown = sorted(set(self.train) - set(stages))
        if unknown:
            raise ValueError(
                f"train options name stages {unknown} that the {self.method} pipeline "
                f"({', '.join(stages)}) does not run"
            )

    def sampling(self, num_candidates: int, seed: int):
        """Return the SamplingConfig of one round's candidates."""
        from inference.sampling import SamplingConfig

        return SamplingConfig(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            num_candidates=num_candidates,
            seed=seed,
        )

    def eval_sampling(self):
        """Return the SamplingConfig of evaluation samples (the same seed for every policy)."""
        from inference.sampling import SamplingConfig

        return SamplingConfig(
            temperature=self.eval_temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            num_candidates=self.eval_samples,
            seed=self.seed + 10_000,
        )


@dataclass
class RoundFigures:
    """What one round of the loop measured."""

    round: int
    policy: str
    pairs: int
    rm_accuracy: float | None
    win_rate_vs_previous: float
    win_rate_vs_sft: float
    kl: float
    distinct_2: float
    distinct_2_sft: float
    wall_s: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Return the JSON line's keys: the final round's figures for scripts."""
        return {
            "round": self.round,
            "win_rate_vs_sft": round(self.win_rate_vs_sft, 4),
            "win_rate_vs_previous": round(self.win_rate_vs_previous, 4),
            "kl": round(self.kl, 4),
            "distinct_2": round(self.distinct_2, 4),
            "distinct_2_sft": round(self.distinct_2_sft, 4),
            "wall_s": round(self.wall_s, 1),
        }


def judge_win_rate(
    prompts: list[list[dict]],
    ours: list[list[str]],
    theirs: list[list[str]],
    judge: Judge,
) -> float:
    """Return the share of (prompt, sample) comparisons the judge gives to `ours`.

    The i-th sample of each side meet on the same prompt; a tie counts half.
    """
    from inference.judges import win_probability
    from training.evaluation import win_rate_by_judge

    flat_prompts, a, b = _paired(prompts, ours, theirs)
    return win_rate_by_judge(flat_prompts, a, b, win_probability(judge))


def reward_model_win_rate(
    reward_model: Policy,
    prompts: list[list[dict]],
    ours: list[list[str]],
    theirs: list[list[str]],
) -> float:
    """Return the share of paired samples the reward model scores higher for `ours`
    (equal scores count half)."""
    from inference.scoring import reward_function
    from training import evaluation

    scorer = reward_function(reward_model.base_path)
    flat_prompts, a, b = _paired(prompts, ours, theirs)
    return evaluation.reward_win_rate(scorer, flat_prompts, a, b)["win_rate"]


def _paired(
    prompts: list[list[dict]], ours: list[list[str]], theirs: list[list[str]]
) -> tuple[list[list[dict]], list[str], list[str]]:
    """Flatten per-prompt samples into aligned (prompt, ours_i, theirs_i) lists."""
    flat_prompts, a, b = [], [], []
    for messages, a_samples, b_samples in zip(prompts, ours, theirs, strict=True):
        for x, y in zip(a_samples, b_samples, strict=True):
            flat_prompts.append(messages)
            a.append(x)
            b.append(y)
    if not a:
        raise ValueError("no samples to compare; evaluate on at least one prompt")
    return flat_prompts, a, b


def kl_to_sft(
    policy: Policy,
    reference: Policy,
    prompts: list[list[dict]],
    *,
    max_new_tokens: int,
    seed: int,
) -> float:
    """Return the sampled estimate of KL(policy || reference) per response, in nats."""
    from training.evaluation import kl_to_reference, load_models

    tokenizer, model, ref = load_models(
        (policy.base_path, policy.adapter_path),
        (reference.base_path, reference.adapter_path),
    )
    return kl_to_reference(
        model, ref, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed
    )


def held_out_prompts(project: Project, n: int) -> list[list[dict]]:
    """Return the first n held-out prompts of the project (never published for labelling)."""
    prompts = list(
        Prompt.objects.filter(project=project, is_held_out=True)
        .order_by("id")
        .values_list("messages", flat=True)[:n]
    )
    if not prompts:
        raise ValueError(
            f"project {project.name} has no held-out prompts; mark some prompts "
            "is_held_out=True (the demo keeps 100) so the loop can evaluate on unseen prompts"
        )
    return prompts


def sample(policy: Policy, prompts: list[list[dict]], sampling) -> list[list[str]]:
    """Return the policy's samples for the prompts (transformers backend, CPU or GPU)."""
    from inference.generation import generate_for_policy

    return generate_for_policy(
        policy.base_path, policy.adapter_path, prompts, sampling, backend="transformers"
    )


def _round_reward_model(training_round) -> Policy | None:
    """Return the reward model a training round registered, if it trained one."""
    job = (
        training_round.jobs.filter(stage="reward")
        .select_related("output_policy")
        .first()
    )
    return job.output_policy if job is not None else None


def drain_round(training_round, *, poll_seconds: float = 1.0) -> None:
    """Run the round's stages here with the worker's task function until it finishes.

    Only the stage that may start now (`next_job`) is run; one a `db_worker` claimed
    first is waited for instead (`start_job` lets exactly one runner claim a job).
    """
    from training.jobs import next_job
    from training.models import FINISHED
    from training.tasks import run_training_job

    while True:
        training_round.refresh_from_db()
        if training_round.status in FINISHED:
            return
        job = next_job(training_round)
        if job is None or run_training_job.call(job.pk)["status"] == "skipped":
            time.sleep(poll_seconds)


def _annotators(project: Project, config: LoopConfig, judge: Judge):
    """Return (user, annotator) pairs: as many noisy judges as the project's overlap."""
    from annotation.simulated import JudgeAnnotator, NoisyAnnotator, simulated_user

    pairs = []
    for i in range(1, max(1, project.overlap) + 1):
        annotator = NoisyAnnotator(
            JudgeAnnotator(judge),
            flip_rate=config.flip_rate,
            tie_rate=config.tie_rate,
            skip_rate=config.skip_rate,
            seed=config.seed * 1000 + i,
        )
        pairs.append((simulated_user(f"sim-judge-{i}", annotator.simulator), annotator))
    return pairs


def _rm_accuracy(training_round) -> float | None:
    """Return the round's reward model's pairwise accuracy on its held-out prompts.

    None for DPO: it has no reward model, and its implicit-reward accuracy is only
    logged on training batches, which says nothing about held-out pairs.
    """
    job = training_round.jobs.filter(stage="reward").first()
    if job is None or "eval_accuracy" not in (job.last_metrics or {}):
        return None
    return float(job.last_metrics["eval_accuracy"])


def _publish_annotate_train(
    project: Project,
    config: LoopConfig,
    r: int,
    current: Policy,
    earlier: list[Policy],
    *,
    judge: Judge,
    user: AbstractBaseUser | None,
    seconds: dict[str, float],
) -> tuple[TrainingRound, Snapshot]:
    """Run steps 1-4 of round `r`; return the succeeded training round and its snapshot.

    Publish candidates of `current` (and of the `earlier` policies), let the
    simulated annotators (noisy copies of `judge`) rank them, freeze the snapshot, and train on it through
    the worker's task function. Record each step's wall time in `seconds`. Raise
    RuntimeError with the round's error text when the training round fails.
    """
    from annotation.rounds import publish_round
    from annotation.simulated import annotate
    from annotation.snapshots import freeze_snapshot
    from training.models import Status
    from training.tasks import launch

    tick = time.monotonic()
    labelling_round = publish_round(
        project,
        policy=current,
        n_prompts=config.prompts_per_round,
        sampling=config.sampling(
            max(1, project.responses_per_task - len(earlier)), config.seed + r
        ),
        strategy="fresh",
        seed=config.seed + r,
        earlier_policies=earlier,
    )
    seconds["publish"] = time.monotonic() - tick

    tick = time.monotonic()
    for annotator_user, annotator in _annotators(project, config, judge):
        annotate(project, annotator_user, annotator)
    seconds["annotate"] = time.monotonic() - tick

    tick = time.monotonic()
    snapshot_filter: dict[str, Any] = {
        "votes": config.votes,
        "simulated": "include",
    }
    if config.data == "round":
        snapshot_filter["rounds"] = [labelling_round.number]
    snapshot = freeze_snapshot(
        project,
        f"loop-{config.method}-round{labelling_round.number}-{int(time.time())}",
        user=user,
        filter=snapshot_filter,
    )
    options: dict[str, Any] = {"snapshot": snapshot.name, "policy": current.name}
    options.update(stage_options(config))
    training_round = launch(
        project, PIPELINES[config.method], user=user, options=options
    )
    drain_round(training_round)
    training_round.refresh_from_db()
    if (
        training_round.status != Status.SUCCEEDED
        or training_round.output_policy is None
    ):
        raise RuntimeError(
            f"round {r}: training round {training_round.pk} ended {training_round.status}: "
            f"{training_round.error or 'no error text'}"
        )
    seconds["train"] = time.monotonic() - tick
    return training_round, snapshot


def run_loop(
    project: Project,
    config: LoopConfig,
    *,
    user: AbstractBaseUser | None = None,
    reference: Policy | None = None,
    out: Callable[[str], None] = print,
    plot_path: Path | None = None,
) -> list[RoundFigures]:
    """Run `config.rounds` rounds of the loop on the project; return each round's figures.

    `reference` is the SFT policy the win rate and KL are measured against
    (default: the oldest ancestor of the current policy with responses in the
    project, else the current policy). Print a table row per round to `out`, save
    the curves to `plot_path` (PNG) if given, and print the final JSON line.
    Raise RuntimeError with the round's error text when a training round fails.

    Long on purpose: after `_publish_annotate_train` it reads top to bottom as
    steps 5 and 6 of the module docstring, and each round's samples and policy
    carry over to the next round's comparisons in its locals.
    """
    from annotation.leaderboard import sft_policy
    from training.deployment import deploy_policy

    if project.current_policy is None:
        raise ValueError(
            f"project {project.name} has no current policy; deploy one (e.g. demo-sft) first"
        )
    judge = get_judge(config.judge)
    loop_started = time.monotonic()
    reference = reference or sft_policy(project) or project.current_policy
    prompts = held_out_prompts(project, config.eval_prompts)
    eval_sampling = config.eval_sampling()
    reference_samples = sample(reference, prompts, eval_sampling)
    distinct_sft = mean_distinct_n(reference_samples, 2)
    previous = project.current_policy
    previous_samples = (
        reference_samples
        if previous.pk == reference.pk
        else sample(previous, prompts, eval_sampling)
    )
    history: list[Policy] = [previous]
    figures: list[RoundFigures] = []
    out(table_header())
    for r in range(1, config.rounds + 1):
        started = time.monotonic()
        seconds: dict[str, float] = {}
        project.refresh_from_db()
        current = project.current_policy
        # The deployed policy writes the task's other candidates (publish_round adds one
        # per earlier policy), so people compare policies within a task.
        earlier = (
            history[:-1][-config.earlier_policies :] if config.earlier_policies else []
        )
        training_round, snapshot = _publish_annotate_train(
            project,
            config,
            r,
            current,
            earlier,
            judge=judge,
            user=user,
            seconds=seconds,
        )

        tick = time.monotonic()
        policy = training_round.output_policy
        samples = sample(policy, prompts, eval_sampling)
        figure = RoundFigures(
            round=r,
            policy=policy.name,
            pairs=snapshot.row_count,
            rm_accuracy=_rm_accuracy(training_round),
            win_rate_vs_previous=judge_win_rate(
                prompts, samples, previous_samples, judge
            ),
            win_rate_vs_sft=judge_win_rate(prompts, samples, reference_samples, judge),
            kl=kl_to_sft(
                policy,
                reference,
                prompts,
                max_new_tokens=config.max_new_tokens,
                seed=config.seed,
            ),
            distinct_2=mean_distinct_n(samples, 2),
            distinct_2_sft=distinct_sft,
            wall_s=0.0,
            stage_seconds=seconds,
        )
        reward_model = _round_reward_model(training_round)
        rm_vs_sft = (
            reward_model_win_rate(reward_model, prompts, samples, reference_samples)
            if reward_model is not None
            else None
        )
        policy.metrics = {
            **policy.metrics,
            **({RM_VS_SFT: rm_vs_sft} if rm_vs_sft is not None else {}),
            JUDGE_VS_SFT: figure.win_rate_vs_sft,
            JUDGE_VS_PREVIOUS: figure.win_rate_vs_previous,
            "kl": figure.kl,
            "distinct_2": figure.distinct_2,
            "eval_prompts": len(prompts),
            "eval_samples": config.eval_samples,
        }
        policy.save(update_fields=["metrics"])
        deploy_policy(project, policy, user=user)
        seconds["evaluate"] = time.monotonic() - tick
        figure.wall_s = time.monotonic() - started
        figures.append(figure)
        out(table_row(figure))
        out("       seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
        previous, previous_samples = policy, samples
        history.append(policy)
    if plot_path is not None:
        save_plot(figures, plot_path, title=f"{project.name}: {config.method} loop")
        out(f"plot: {plot_path}")
    out(f"total wall time: {time.monotonic() - loop_started:.0f} s")
    out(json.dumps(figures[-1].summary()))
    return figures


def stage_options(config: LoopConfig) -> dict[str, dict[str, Any]]:
    """Return each stage's trainer options: the method's defaults, overridden key by key by `config.train`."""
    options = {
        stage: dict(values)
        for stage, values in METHOD_DEFAULTS[config.method]["train"].items()
    }
    for stage, values in config.train.items():
        options.setdefault(stage, {}).update(values)
    return options
