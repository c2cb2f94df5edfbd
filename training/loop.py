"""The headless feedback loop: publish, annotate, snapshot, train, evaluate, deploy; repeat.

Each round goes through the same functions the pages call:

1. `publish_round` samples candidates from the deployed policy (and, for cross-policy
   comparisons, from earlier ones) on fresh prompts of the pool;
2. simulated annotators (`annotation.simulated.personas`), as many as the project's
   overlap, take the tasks through `next_task` / `submit_ranking` like people: noisy
   personas, each weighing the judge's aspects its own way and flipping 10-20% of
   its order, so the annotators are not the yardstick; with `rewrites` above 0 they
   also write a rewrite where no top candidate is correct (`RewritingAnnotator`: the
   judge's repair of the best one), as a person uses the ranking page's field;
3. `freeze_snapshot` freezes this round's rankings into hashed preference pairs
   (with rewrites, under the rewrite rule "chosen": each ranks above its order);
4. `launch` creates the training round and its stage jobs; the loop then runs
   those jobs itself with the worker's own task function (`run_training_job`),
   which starts each stage as a child process with a run directory, exactly as
   `db_worker` does. A running `db_worker` may take a stage instead: `start_job`
   lets exactly one claim it, and the loop waits for it. The platform's code path
   is the one measured; only the queue wait is skipped. The round's own
   evaluation stage is off: step 5 is the one evaluation;
5. the new policy is evaluated on held-out prompts of one split
   (`annotation.pool.held_out_prompts`: "test" for the figures reported, "dev"
   for choosing settings; never published, and in the demo never asked in any
   phrasing by a demonstration or a round): the noiseless judge's win rate against
   the previous policy and against the SFT policy (a tie counts half), factual
   accuracy (the share of samples whose answer the judge's reference confirms,
   where the judge offers `correct`), KL to the SFT policy, and distinct-2; the
   figures are stored on the policy (`Policy.metrics`, read by the leaderboard);
6. `deploy_policy` makes it current, so the next round samples from it.

The rounds run once per seed (`LoopConfig.seeds`, default 3), each seed starting
again from the policy deployed when the loop began, with its own candidates,
personas, training seed and evaluation samples. A figure is the mean over seeds;
its 95% interval is bootstrapped over prompts (each prompt's samples and seeds
averaged first: prompts are resampled, not samples).

Win rates compare the i-th sample of one policy with the i-th sample of the other
on the same prompt, both drawn with the evaluation sampling. Distinct-2 is taken
over each prompt's samples and averaged over prompts; KL is
`training.evaluation.kl_to_reference` on the policy's own samples. Plain figures
go to `out` as a table per round and seed, then the mean over seeds; the last
line is one JSON object (see `RoundFigures.summary`). Every seed's figures, per
prompt, are also saved to a JSON file as each seed ends (`save_figures`), so seeds
run in separate processes or on separate machines pool into one figure with one
interval (`pool_figures`, `manage.py pool_loop`), as if one process had run them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from annotation.models import Project, Snapshot
from annotation.pool import held_out_prompts
from annotation.simulated import REWRITE_STARTS, check_rewrite_start
from inference.judges import Judge, default_judge_name, get_judge, judge_offers
from inference.models import Policy
from training.charts import save_plot, table_header, table_row
from training.evaluation import (
    bootstrap_interval,
    mean_distinct_n,
    per_prompt_accuracy,
    per_prompt_win_rates,
)
from training.models import TrainingRound
from training.reward import MAX_ENSEMBLE
from training.stages import PIPELINES

# The methods the loop runs (named pipelines of training/stages.py) and what each
# method's rounds use unless the loop's options say otherwise: snapshot votes and
# pair rule, candidates per task (0: the project's), and stage options merged key by
# key under `LoopConfig.train`. DPO: best-vs-rest pairs over 8 candidates beat all
# pairs over 4 on the dev split (0.69 against 0.60 after one round, accuracy +4
# points against +1). PPO needs a KL-bound PPO stage: with the stage defaults a
# round's policy exploits the reward model instead of beating SFT; all pairs over 8
# candidates give its reward model 28 pairs a task (held-out accuracy 0.76 against
# 0.63 over 4) and 30 PPO updates beat 15 (0.75 against 0.62 after one round on the
# dev split). DPO's step halves each round (`step_decay`): at a constant step a seed's
# third round drifted to KL 80 and lost a third of its win rate. Each method also says
# how many fresh prompts a round publishes and the candidates' temperature. Measured
# in docs/loop.md.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "dpo": {
        "votes": "consensus",
        "pairs": "best_vs_rest",
        "data": "round",
        "candidates": 8,
        "step_decay": 0.5,
        "sft_step_decay": 1.0,
        "prompts_per_round": 128,
        "temperature": 1.0,
        "train": {},
    },
    # SFT on the round's demonstrations (the annotators' rewrites; the top-ranked
    # responses of the orders nobody rewrote), then DPO from that policy on the
    # round's pairs, as DPO's. With rewrites (`--rewrites 1`) it beat DPO on the
    # demo's dev split on each of 4 seeds (0.836 against 0.807 after 3 rounds,
    # accuracy +6.8 points against +4.1). 256 prompts a
    # round with candidates at temperature 0.7 beat 128 at 1.0 over 4 dev seeds (0.861
    # against 0.835, accuracy +8.3 points against +3.5). The SFT step's rate halves
    # each round as DPO's does: at a constant SFT step the later rounds' imitation of
    # train questions' answers took back held-out accuracy (4 dev seeds: 0.868
    # against 0.859, accuracy +10.5 points against +7.7; docs/loop.md). Every round's
    # data, which sft-ppo keeps, lost here on both dev seeds tried (0.798 against
    # 0.851, accuracy +12.8 points against +15.9): the round's own data stays.
    "sft-dpo": {
        "votes": "consensus",
        "pairs": "best_vs_rest",
        "data": "round",
        "candidates": 8,
        "step_decay": 0.5,
        "sft_step_decay": 0.5,
        "prompts_per_round": 256,
        "temperature": 0.7,
        "train": {},
    },
    # PPO: 60 updates a round with the step halved each round. On the 96-creature
    # world's dev split that beat 30 updates at a constant step on each of 4 seeds
    # (0.797 against 0.758 after 3 rounds, accuracy +7.7 points against +0.9; chosen
    # among 11 arms on seeds 0-1, confirmed on seeds 2-3): round 1 gains more, and
    # the later rounds, whose reward models see fewer pairs and fall toward chance,
    # move the policy less. 90 updates, a weaker KL bound, 256 prompts, reward models
    # on every round's pairs, two reward epochs, an acting KL controller, rollout
    # batches of 32 and candidates at 0.7 did not beat it (docs/loop.md). Scores
    # normalised on the starting policy's samples (4 rollout batches) then beat raw
    # scores on 3 of 4 dev seeds and tied the fourth (0.803 against 0.788; accuracy
    # +6.8 points against +6.0, KL 3.3 against 3.9); raw scores with kl_coef 0.45 did
    # as well, but normalising sets that weight for any reward model's scale. Reward-model
    # ensembles did not help: earlier rounds' beside the round's own (`reward_ensemble`
    # 3, 0.777 against 0.785 on dev seeds 0-1), three members a round (the reward
    # stage's `ensemble_size`, 0.802 against 0.803 over 4 dev seeds).
    "ppo": {
        "votes": "consensus",
        "pairs": "all_pairs",
        "data": "round",
        "candidates": 8,
        "step_decay": 0.5,
        "sft_step_decay": 1.0,
        "prompts_per_round": 128,
        "temperature": 1.0,
        "train": {
            "reward": {"num_train_epochs": 1},
            "ppo": {
                "kl_coef": 0.3,
                "learning_rate": 1e-4,
                "max_steps": 60,
                "score_norm_batches": 4,
            },
        },
    },
    # GRPO: the reward stage as PPO's, then the GRPO stage at its defaults (lr 5e-4,
    # beta 0.1), its step halved each round. Before 2026-12-05 the stage's defaults were
    # lr 1e-3 with no KL term, and a constant step: they collapsed the demo's policy over
    # 3 rounds (win rate 0.33 against SFT over dev seeds 0-3, KL 20-68); the halving beat
    # a constant step on both seeds tried (docs/loop.md, "GRPO's loop settings"). A run
    # on a model of real size passes LoRA and its own rate in `train`, as docs/loop.md's
    # real-model run does.
    "grpo": {
        "votes": "consensus",
        "pairs": "all_pairs",
        "data": "round",
        "candidates": 8,
        "step_decay": 0.5,
        "sft_step_decay": 1.0,
        "prompts_per_round": 128,
        "temperature": 1.0,
        "train": {"reward": {"num_train_epochs": 1}},
    },
}
# SFT on the round's demonstrations, then PPO's reward model and PPO from that policy
# (InstructGPT's order), with PPO's settings, the SFT step's rate halved each round as
# sft-dpo's and sft-dpo's 256 prompts a round sampled at 0.7. With rewrites (`--rewrites
# 1`) the SFT step beat PPO alone on the 96-creature world's dev split on 3 of 4 seeds
# and tied the fourth (0.836 against 0.803 after 3 rounds, accuracy +15.2 points
# against +7.3); sft-dpo's prompts then beat PPO's 128 at 1.0 on 3 of 4 seeds (0.851
# against 0.836, accuracy +17.9 points against +15.2), and every round's rankings so
# far beat the round's own on each of 4 (0.871 against 0.851, accuracy +22.9 points
# against +17.9: round 3's reward model keeps its pairs; docs/loop.md, "An SFT step
# before PPO").
SFT_STEP_ROUNDS = {
    "sft_step_decay": 0.5,
    "prompts_per_round": 256,
    "temperature": 0.7,
    "data": "all",
}
METHOD_DEFAULTS["sft-ppo"] = {
    **copy.deepcopy(METHOD_DEFAULTS["ppo"]),
    **SFT_STEP_ROUNDS,
}
# RLOO: GRPO's settings (its stage shares GRPO's fields and defaults).
METHOD_DEFAULTS["rloo"] = copy.deepcopy(METHOD_DEFAULTS["grpo"])
# SFT on the round's demonstrations before GRPO's or RLOO's reward model and policy
# stage, with sft-ppo's round settings and half the group stage's rate. On the demo's
# dev split sft-grpo beat GRPO alone on each of 4 seeds (0.841 against 0.738 after 3
# rounds, accuracy +17.6 points against -1.2); every round's data beat the round's own
# (seed 0: 0.818 against 0.792), and the group stage at lr 2.5e-4 beat 5e-4 on each of
# 4 seeds: from the SFT step's policy, 5e-4 drove round 1 to KL 7.3 and no accuracy
# gain (docs/loop.md, "An SFT step before GRPO"). RLOO takes GRPO's settings, as alone
# (on dev seed 0 its own 5e-4 lost to 2.5e-4 too).
for _group in ("grpo", "rloo"):
    METHOD_DEFAULTS[f"sft-{_group}"] = {
        **copy.deepcopy(METHOD_DEFAULTS[_group]),
        **SFT_STEP_ROUNDS,
    }
    METHOD_DEFAULTS[f"sft-{_group}"]["train"][_group] = {"learning_rate": 2.5e-4}
# The LoopConfig numbers whose -1 means "the method's", from METHOD_DEFAULTS.
METHOD_NUMBERS = (
    "prompts_per_round",
    "temperature",
    "candidates",
    "step_decay",
    "sft_step_decay",
)
# The option that bounds an online policy stage's rollouts, by stage.
ROLLOUT_LENGTH = {
    "ppo": "max_new_tokens",
    "grpo": "max_completion_length",
    "rloo": "max_completion_length",
}
# Policy.metrics keys the loop writes (the leaderboard reads the first two).
JUDGE_VS_SFT = "judge_win_rate_vs_sft"
RM_VS_SFT = "rm_win_rate_vs_sft"
JUDGE_VS_PREVIOUS = "judge_win_rate_vs_previous"
MAX_SEEDS = 10


@dataclass
class LoopConfig:
    """How the loop runs: rounds, seeds, annotator noise, sampling, evaluation, training."""

    rounds: int = field(
        default=3, metadata={"help": "Rounds of publish -> train -> deploy."}
    )
    method: str = field(
        default="dpo",
        metadata={
            "help": "dpo, ppo (a reward stage, then PPO) or grpo (a reward stage, then GRPO)."
        },
    )
    seeds: int = field(
        default=3,
        metadata={
            "help": "Independent runs of all rounds, seeds seed..seed+N-1, each from the "
            "starting policy; figures are their mean (3: the protocol's minimum)."
        },
    )
    prompts_per_round: int = field(
        default=-1,
        metadata={
            "help": "Fresh prompts published per round (-1: the method's default, "
            "METHOD_DEFAULTS)."
        },
    )
    candidates: int = field(
        default=-1,
        metadata={
            "help": "Responses per task, earlier policies' included, 2-8 (0: the "
            "project's; -1: the method's default, METHOD_DEFAULTS)."
        },
    )
    earlier_policies: int = field(
        default=1,
        metadata={
            "help": "How many earlier policies also write candidates, for cross-policy comparisons."
        },
    )
    temperature: float = field(
        default=-1.0,
        metadata={
            "help": "Sampling temperature of candidates (-1: the method's default, "
            "METHOD_DEFAULTS)."
        },
    )
    top_k: int = field(default=0, metadata={"help": "Top-k of candidates (0: off)."})
    top_p: float = field(
        default=1.0, metadata={"help": "Top-p of candidates (1: off)."}
    )
    max_new_tokens: int = field(
        default=48, metadata={"help": "Longest candidate, in tokens."}
    )
    flip_rate: float = field(
        default=0.15,
        metadata={
            "help": "Simulated personas' mean flip rate; each draws its own within "
            "+-0.05 (default: 10-20%)."
        },
    )
    tie_rate: float = field(
        default=0.0, metadata={"help": "Simulated annotators' tie rate."}
    )
    skip_rate: float = field(
        default=0.0, metadata={"help": "Simulated annotators' skip rate."}
    )
    persona_spread: float = field(
        default=0.5,
        metadata={
            "help": "Each persona weighs each judge aspect by the judge's weight times "
            "a factor in [1-spread, 1+spread]."
        },
    )
    judge: str = field(
        default="",
        metadata={
            "help": "Registered judge the simulated personas rank by and the win "
            "rates are measured by ('': the only registered one, e.g. the demo's)."
        },
    )
    votes: str = field(
        default="",
        metadata={
            "help": "Snapshot votes: 'consensus' (one Borda order per task) or 'every'; "
            "'' takes the method's default (METHOD_DEFAULTS)."
        },
    )
    pairs: str = field(
        default="",
        metadata={
            "help": "Snapshot pair rule: 'all_pairs' or 'best_vs_rest'; '' takes the "
            "method's default (METHOD_DEFAULTS)."
        },
    )
    rewrites: float = field(
        default=0.0,
        metadata={
            "help": "Share of tasks whose simulated annotator, when no top-ranked "
            "candidate is correct, writes a rewrite: the judge's repair of the best "
            "one (a judge with `repair`: demo or instructions). Above 0 the snapshot "
            "ranks each rewrite above its order (rewrite rule 'chosen'; with "
            "best_vs_rest it is chosen over every candidate)."
        },
    )
    rewrite_from: str = field(
        default="best",
        metadata={
            "help": "Which candidate a simulated rewrite starts from: 'best' (the "
            "top-ranked) or 'substantive' (the best-ranked whose repair is also "
            "substantive, a judge with `correct_substantively`: instructions)."
        },
    )
    data: str = field(
        default="",
        metadata={
            "help": "Train on this round's rankings ('round') or on all this seed's "
            "rounds so far ('all'); '' takes the method's default (METHOD_DEFAULTS)."
        },
    )
    split: str = field(
        default="test",
        metadata={
            "help": "Held-out split evaluated on: 'test' (reported) or 'dev' (for "
            "choosing settings)."
        },
    )
    eval_prompts: int = field(
        default=100,
        metadata={
            "help": "Held-out prompts evaluated on (at most; the split's first)."
        },
    )
    eval_samples: int = field(
        default=4,
        metadata={"help": "Samples per held-out prompt and policy (2 or more)."},
    )
    eval_temperature: float = field(
        default=1.0,
        metadata={"help": "Sampling temperature of evaluation samples (0: greedy)."},
    )
    reward_ensemble: int = field(
        default=1,
        metadata={
            "help": "PPO, GRPO or RLOO scores each rollout with the mean of this round's reward model "
            "and up to N-1 of this seed's earlier rounds' (each normalised on its own; "
            "1: this round's only)."
        },
    )
    reward: str = field(
        default="model",
        metadata={
            "help": "What scores GRPO's or RLOO's rollouts: 'model' (a reward stage "
            "trains a reward model on the round's rankings) or 'judge' (the loop's "
            "judge itself, a verifiable reward: no reward stage runs; a judge with "
            "`reward`: demo or instructions)."
        },
    )
    step_decay: float = field(
        default=-1.0,
        metadata={
            "help": "Each round's policy learning rate is the previous round's times "
            "this (1: constant; -1: the method's, METHOD_DEFAULTS)."
        },
    )
    sft_step_decay: float = field(
        default=-1.0,
        metadata={
            "help": "Each round's SFT step (before the policy stage, as in sft-dpo) "
            "learns at the previous round's rate times this (1: constant; -1: the "
            "method's, METHOD_DEFAULTS)."
        },
    )
    train: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"help": "Per-stage options, e.g. {'dpo': {'learning_rate': 1e-3}}."},
    )
    seed: int = field(
        default=0, metadata={"help": "First seed of sampling, noise and training."}
    )

    def __post_init__(self) -> None:
        if self.method not in METHOD_DEFAULTS:
            raise ValueError(
                f"method must be one of {sorted(METHOD_DEFAULTS)}, got {self.method!r}"
            )
        for name in METHOD_NUMBERS:
            if getattr(self, name) == -1:
                setattr(self, name, METHOD_DEFAULTS[self.method][name])
        self.votes = self.votes or METHOD_DEFAULTS[self.method]["votes"]
        self.pairs = self.pairs or METHOD_DEFAULTS[self.method]["pairs"]
        self.data = self.data or METHOD_DEFAULTS[self.method]["data"]
        self._check_numbers()
        self._check_choices()

    def _check_numbers(self) -> None:
        """Raise ValueError naming a count, rate or bound out of its range."""
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if not 1 <= self.seeds <= MAX_SEEDS:
            raise ValueError(f"seeds must be 1 to {MAX_SEEDS}, got {self.seeds}")
        if self.temperature < 0:
            raise ValueError(
                f"temperature must be 0 (greedy) or more, or -1 (the method's), got "
                f"{self.temperature}"
            )
        if self.prompts_per_round < 1:
            raise ValueError(
                f"prompts_per_round must be at least 1, got {self.prompts_per_round}"
            )
        if self.earlier_policies < 0:
            raise ValueError(
                f"earlier_policies must be >= 0, got {self.earlier_policies}"
            )
        for name in ("step_decay", "sft_step_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(
                    f"{name} must be in (0, 1] (1: the same step every round), got "
                    f"{getattr(self, name)}"
                )
        if self.candidates and not 2 <= self.candidates <= 8:
            raise ValueError(
                f"candidates must be 0 (the project's) or 2 to 8, got {self.candidates}"
            )
        for name in ("flip_rate", "tie_rate", "skip_rate", "rewrites"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0 <= self.persona_spread < 1:
            raise ValueError(
                f"persona_spread must be in [0, 1), got {self.persona_spread}"
            )
        if not 1 <= self.reward_ensemble <= MAX_ENSEMBLE:
            raise ValueError(
                f"reward_ensemble must be 1 to {MAX_ENSEMBLE}, got {self.reward_ensemble}"
            )
        if self.eval_prompts < 1 or self.eval_samples < 2:
            raise ValueError(
                f"eval_prompts must be at least 1 and eval_samples at least 2 (distinct-2 "
                f"compares a prompt's samples), got {self.eval_prompts} and {self.eval_samples}"
            )

    def _check_choices(self) -> None:
        """Raise ValueError naming a named choice or a train option the method cannot take."""
        if self.votes not in ("consensus", "every"):
            raise ValueError(
                f"votes must be 'consensus' or 'every', got {self.votes!r}"
            )
        if self.pairs not in ("all_pairs", "best_vs_rest"):
            raise ValueError(
                f"pairs must be 'all_pairs' or 'best_vs_rest', got {self.pairs!r}"
            )
        if self.rewrite_from not in REWRITE_STARTS:
            raise ValueError(
                f"rewrite_from must be one of {REWRITE_STARTS}, got {self.rewrite_from!r}"
            )
        if self.reward not in ("model", "judge"):
            raise ValueError(f"reward must be 'model' or 'judge', got {self.reward!r}")
        if self.reward == "judge" and not self.method.endswith(("grpo", "rloo")):
            raise ValueError(
                f"reward='judge' is for GRPO and RLOO (a verifiable reward); method "
                f"{self.method!r} trains no group stage (use --method grpo or "
                "--reward model)"
            )
        if self.reward_ensemble > 1 and (
            self.reward == "judge"
            or not PIPELINES[self.method].endswith(("ppo", "grpo", "rloo"))
        ):
            raise ValueError(
                f"reward_ensemble={self.reward_ensemble} is for the reward models of PPO, "
                f"GRPO or RLOO; method {self.method!r} with reward={self.reward!r} runs "
                "none (use --method ppo or 1)"
            )
        if self.data not in ("round", "all"):
            raise ValueError(f"data must be 'round' or 'all', got {self.data!r}")
        if self.split not in ("dev", "test"):
            raise ValueError(f"split must be 'dev' or 'test', got {self.split!r}")
        if "evaluate" in self.train:
            raise ValueError(
                "the loop evaluates each round itself (step 5), so the round's "
                "evaluation stage is off; drop 'evaluate' from the train options"
            )
        stages = self.stages()
        unknown = sorted(set(self.train) - set(stages))
        if unknown:
            raise ValueError(
                f"train options name stages {unknown} that the {self.method} pipeline "
                f"({', '.join(stages)}) does not run"
            )

    @property
    def label(self) -> str:
        """The method as figures name it: 'grpo', or 'grpo-judge' where the judge gives
        the reward (so that pooling refuses to mix the two)."""
        return self.method if self.reward == "model" else f"{self.method}-judge"

    def stages(self) -> list[str]:
        """Return the pipeline's stages: the method's, less the reward stage when the
        judge gives the reward."""
        stages = PIPELINES[self.method].split(",")
        if self.reward == "judge":
            stages.remove("reward")
        return stages

    def seed_list(self) -> list[int]:
        """Return the seeds the loop runs, in order."""
        return list(range(self.seed, self.seed + self.seeds))

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

    def eval_sampling(self, seed: int):
        """Return the SamplingConfig of evaluation samples (the same for every policy of a seed)."""
        from inference.sampling import SamplingConfig

        return SamplingConfig(
            temperature=self.eval_temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            num_candidates=self.eval_samples,
            seed=seed + 10_000,
        )


# The readings whose gain over SFT `RoundFigures.accuracy_gain_ci` bootstraps.
GAIN_READINGS = ("accuracy", "loose", "substantive")


@dataclass
class RoundFigures:
    """What one round of the loop measured: for one seed, or the mean over seeds.

    Per-prompt values (a prompt's samples averaged) are kept for the interval.
    """

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
    accuracy: float | None = None
    accuracy_sft: float | None = None
    win_rate_ci: tuple[float, float] | None = None
    seeds: list[int] = field(default_factory=list)
    win_by_prompt: list[float] = field(default_factory=list, repr=False)
    accuracy_by_prompt: list[float] = field(default_factory=list, repr=False)
    accuracy_sft_by_prompt: list[float] = field(default_factory=list, repr=False)
    win_rate_by_seed: list[float] = field(default_factory=list)
    accuracy_by_seed: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    # Where the judge offers `correct_loosely` (the instructions judge: IFEval's loose
    # reading): the same accuracy read leniently, for the policy and for SFT.
    loose_accuracy: float | None = None
    loose_accuracy_sft: float | None = None
    loose_by_prompt: list[float] = field(default_factory=list, repr=False)
    loose_sft_by_prompt: list[float] = field(default_factory=list, repr=False)
    # Where the judge offers `correct_substantively` (the instructions judge): strict
    # accuracy counting only answers that say something on the subject, for the
    # policy and for SFT, and the answers' mean length in words.
    substantive_accuracy: float | None = None
    substantive_accuracy_sft: float | None = None
    substantive_by_prompt: list[float] = field(default_factory=list, repr=False)
    substantive_sft_by_prompt: list[float] = field(default_factory=list, repr=False)
    words: float | None = None
    words_sft: float | None = None

    def accuracy_gain_ci(self, reading: str = "accuracy") -> tuple[float, float] | None:
        """Return the 95% interval of a reading's accuracy minus SFT's, bootstrapped
        over prompts (paired: a resampled prompt brings both its values).

        `reading`: "accuracy" (strict), "loose" or "substantive", the stems of the
        per-prompt columns `<reading>_by_prompt` and `<reading>_sft_by_prompt`.
        """
        if reading not in GAIN_READINGS:
            raise ValueError(
                f"no per-prompt reading {reading!r}; use one of {list(GAIN_READINGS)}"
            )
        policy = getattr(self, f"{reading}_by_prompt")
        sft = getattr(self, f"{reading}_sft_by_prompt")
        if not policy or not sft:
            return None
        gains = [a - b for a, b in zip(policy, sft, strict=True)]
        return bootstrap_interval(gains, seed=self.seeds[0] if self.seeds else 0)

    def summary(self) -> dict[str, Any]:
        """Return the JSON line's keys: the final round's figures for scripts."""

        def r4(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        gain_ci = self.accuracy_gain_ci()
        sub_ci = self.accuracy_gain_ci("substantive")
        return {
            "round": self.round,
            "win_rate_vs_sft": r4(self.win_rate_vs_sft),
            "win_rate_ci": [r4(x) for x in self.win_rate_ci]
            if self.win_rate_ci
            else None,
            "win_rate_vs_previous": r4(self.win_rate_vs_previous),
            "accuracy": r4(self.accuracy),
            "accuracy_sft": r4(self.accuracy_sft),
            "accuracy_gain_ci": [r4(x) for x in gain_ci] if gain_ci else None,
            **(
                {
                    "loose_accuracy": r4(self.loose_accuracy),
                    "loose_accuracy_sft": r4(self.loose_accuracy_sft),
                }
                if self.loose_accuracy is not None
                else {}
            ),
            **(
                {
                    "substantive_accuracy": r4(self.substantive_accuracy),
                    "substantive_accuracy_sft": r4(self.substantive_accuracy_sft),
                    "substantive_gain_ci": [r4(x) for x in sub_ci] if sub_ci else None,
                    "words": r4(self.words),
                    "words_sft": r4(self.words_sft),
                }
                if self.substantive_accuracy is not None
                else {}
            ),
            "kl": r4(self.kl),
            "distinct_2": r4(self.distinct_2),
            "distinct_2_sft": r4(self.distinct_2_sft),
            "seeds": self.seeds,
            "win_rate_by_seed": [r4(x) for x in self.win_rate_by_seed],
            "accuracy_by_seed": [r4(x) for x in self.accuracy_by_seed if x is not None],
            "wall_s": round(self.wall_s, 1),
            "cpu_s": round(self.cpu_s, 1),
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
    (equal scores count half); a reward stage's ensemble scores by its members' mean."""
    from inference.scoring import reward_function
    from training import evaluation
    from training.reward import ensemble_members

    path = reward_model.base_path
    scorer = reward_function(path, ensemble=ensemble_members(path))
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


def _annotators(project: Project, config: LoopConfig, judge: Judge, seed: int):
    """Return (user, annotator) pairs: as many noisy personas as the project's overlap."""
    from annotation.simulated import RewritingAnnotator, personas, simulated_user

    flips = (max(0.0, config.flip_rate - 0.05), min(1.0, config.flip_rate + 0.05))
    annotators = personas(
        judge,
        max(1, project.overlap),
        seed=seed,
        flip_range=flips,
        spread=config.persona_spread,
        tie_rate=config.tie_rate,
        skip_rate=config.skip_rate,
        judge_name=config.judge or default_judge_name() or "",
    )
    if config.rewrites:
        annotators = [
            RewritingAnnotator(
                a, judge, rate=config.rewrites, seed=seed, start=config.rewrite_from
            )
            for a in annotators
        ]
    return [
        (simulated_user(f"sim-persona-{i}", a.simulator), a)
        for i, a in enumerate(annotators, start=1)
    ]


def _rm_accuracy(training_round) -> float | None:
    """Return the round's reward model's pairwise accuracy on its held-out prompts:
    an ensemble's (the reward stage's `ensemble_size`) is its members' mean score's,
    the one PPO scores with.

    None for DPO: it has no reward model, and its implicit-reward accuracy is only
    logged on training batches, which says nothing about held-out pairs.
    """
    job = training_round.jobs.filter(stage="reward").first()
    metrics = (job.last_metrics or {}) if job is not None else {}
    for key in ("eval_ensemble_accuracy", "eval_accuracy"):
        if key in metrics:
            return float(metrics[key])
    return None


def _publish_strategy(project: Project, n: int) -> str:
    """Return "fresh" while the pool has n prompts never published, else "random"
    (over the prompts the seed has not labelled: `publish_round(avoid_rounds=...)`)."""
    fresh = project.prompts.filter(
        is_held_out=False, held_for_review=False, tasks__isnull=True
    ).count()
    return "fresh" if fresh >= n else "random"


@dataclass
class _Round:
    """One round's inputs: its number, seed, policies and the seed's labelling rounds."""

    number: int
    seed: int
    current: Policy
    earlier: list[Policy]
    labelled: list[int]  # this seed's labelling round numbers so far (appended to)
    # The seed's earlier rounds' reward models, oldest first.
    reward_models: list[str] = field(default_factory=list)


def _publish_annotate_train(
    project: Project,
    config: LoopConfig,
    step: _Round,
    *,
    judge: Judge,
    user: AbstractBaseUser | None,
    seconds: dict[str, float],
) -> tuple[TrainingRound, Snapshot]:
    """Run steps 1-4 of one round; return the succeeded training round and its snapshot.

    Publish candidates of `step.current` (and of the earlier policies), let the
    simulated personas rank them, freeze the snapshot, and train on it through
    the worker's task function. Record each step's wall time in `seconds`. Raise
    RuntimeError with the round's error text when the training round fails.
    """
    from annotation.rounds import publish_round
    from annotation.simulated import annotate
    from annotation.snapshots import freeze_snapshot
    from training.models import Status
    from training.tasks import launch

    tick = time.monotonic()
    per_task = config.candidates or project.responses_per_task
    round_seed = step.seed * 100 + step.number
    labelling_round = publish_round(
        project,
        policy=step.current,
        n_prompts=config.prompts_per_round,
        sampling=config.sampling(max(1, per_task - len(step.earlier)), round_seed),
        strategy=_publish_strategy(project, config.prompts_per_round),
        seed=round_seed,
        earlier_policies=step.earlier,
        avoid_rounds=step.labelled,
    )
    step.labelled.append(labelling_round.number)
    seconds["publish"] = time.monotonic() - tick

    tick = time.monotonic()
    for annotator_user, annotator in _annotators(project, config, judge, step.seed):
        annotate(project, annotator_user, annotator)
    seconds["annotate"] = time.monotonic() - tick

    tick = time.monotonic()
    rounds = step.labelled if config.data == "all" else step.labelled[-1:]
    snapshot = freeze_snapshot(
        project,
        f"loop-{config.label}-round{labelling_round.number}-{int(time.time())}",
        user=user,
        filter={"votes": config.votes, "simulated": "include", "rounds": rounds},
        pair_rule=config.pairs,
        rewrite_rule="chosen" if config.rewrites else "sft",
    )
    options: dict[str, Any] = {
        "snapshot": snapshot.name,
        "policy": step.current.name,
        "evaluate": False,  # step 5 is the round's one evaluation
    }
    options.update(stage_options(config, seed=step.seed, round_number=step.number))
    if config.reward_ensemble > 1 and step.reward_models:
        options["reward_ensemble"] = step.reward_models[-(config.reward_ensemble - 1) :]
    training_round = launch(
        project, ",".join(config.stages()), user=user, options=options
    )
    drain_round(training_round)
    training_round.refresh_from_db()
    if (
        training_round.status != Status.SUCCEEDED
        or training_round.output_policy is None
    ):
        raise RuntimeError(
            f"round {step.number} (seed {step.seed}): training round "
            f"{training_round.pk} ended {training_round.status}: "
            f"{training_round.error or 'no error text'}"
        )
    seconds["train"] = time.monotonic() - tick
    return training_round, snapshot


@dataclass
class _Baseline:
    """What a round is compared with: the reference's and the previous policy's samples."""

    reference: Policy
    reference_samples: list[list[str]]
    accuracy_sft: list[float] | None
    previous_samples: list[list[str]]
    loose_sft: list[float] | None = None
    substantive_sft: list[float] | None = None


def _evaluate(
    config: LoopConfig,
    policy: Policy,
    prompts: list[list[dict]],
    baseline: _Baseline,
    *,
    judge: Judge,
    seed: int,
) -> tuple[RoundFigures, list[list[str]]]:
    """Step 5: the round's one evaluation; return its figures and the policy's samples."""
    from inference.judges import win_probability

    samples = sample(policy, prompts, config.eval_sampling(seed))
    probability = win_probability(judge)
    wins = per_prompt_win_rates(
        prompts, samples, baseline.reference_samples, probability
    )
    accuracy = _reading(judge, "correct", prompts, samples)
    loose = _reading(judge, "correct_loosely", prompts, samples)
    substantive = _reading(judge, "correct_substantively", prompts, samples)
    figure = RoundFigures(
        round=0,
        policy=policy.name,
        pairs=0,
        rm_accuracy=None,
        win_rate_vs_previous=judge_win_rate(
            prompts, samples, baseline.previous_samples, judge
        ),
        win_rate_vs_sft=_mean(wins),
        kl=kl_to_sft(
            policy,
            baseline.reference,
            prompts,
            max_new_tokens=config.max_new_tokens,
            seed=seed,
        ),
        distinct_2=mean_distinct_n(samples, 2),
        distinct_2_sft=mean_distinct_n(baseline.reference_samples, 2),
        wall_s=0.0,
        accuracy=_mean(accuracy) if accuracy is not None else None,
        accuracy_sft=_mean(baseline.accuracy_sft) if baseline.accuracy_sft else None,
        win_rate_ci=bootstrap_interval(wins, seed=seed),
        seeds=[seed],
        win_by_prompt=wins,
        accuracy_by_prompt=accuracy or [],
        accuracy_sft_by_prompt=baseline.accuracy_sft or [],
        loose_accuracy=_mean(loose) if loose is not None else None,
        loose_accuracy_sft=_mean(baseline.loose_sft) if baseline.loose_sft else None,
        loose_by_prompt=loose or [],
        loose_sft_by_prompt=baseline.loose_sft or [],
    )
    if substantive is not None:
        figure.substantive_accuracy = _mean(substantive)
        figure.substantive_accuracy_sft = _mean(baseline.substantive_sft or [])
        figure.substantive_by_prompt = substantive
        figure.substantive_sft_by_prompt = baseline.substantive_sft or []
        figure.words = mean_words(samples)
        figure.words_sft = mean_words(baseline.reference_samples)
    return figure, samples


def _reading(
    judge: Judge, feature: str, prompts: list[list[dict]], samples: list[list[str]]
) -> list[float] | None:
    """Return per prompt the share of samples the judge's `feature` ("correct",
    "correct_loosely", "correct_substantively") accepts, or None where it offers none."""
    if not judge_offers(judge, feature):
        return None
    return per_prompt_accuracy(prompts, samples, getattr(judge, feature))


def mean_words(samples: list[list[str]]) -> float:
    """Return the mean length in words of the samples (every prompt's, pooled)."""
    lengths = [len(text.split()) for texts in samples for text in texts]
    return _mean(lengths) if lengths else 0.0


def _store_metrics(
    policy: Policy, figure: RoundFigures, rm_vs_sft: float | None, config: LoopConfig
) -> None:
    """Store the round's figures on the policy (the registry and leaderboard read them)."""
    policy.metrics = {
        **policy.metrics,
        **({RM_VS_SFT: rm_vs_sft} if rm_vs_sft is not None else {}),
        JUDGE_VS_SFT: figure.win_rate_vs_sft,
        JUDGE_VS_PREVIOUS: figure.win_rate_vs_previous,
        "judge_win_rate_vs_sft_ci": list(figure.win_rate_ci or ()),
        **({"accuracy": figure.accuracy} if figure.accuracy is not None else {}),
        "kl": figure.kl,
        "distinct_2": figure.distinct_2,
        "eval_split": config.split,
        "eval_prompts": len(figure.win_by_prompt),
        "eval_samples": config.eval_samples,
        "seed": figure.seeds[0],
    }
    policy.save(update_fields=["metrics"])


def _run_seed(
    project: Project,
    config: LoopConfig,
    seed: int,
    prompts: list[list[dict]],
    reference: Policy,
    *,
    judge: Judge,
    user: AbstractBaseUser | None,
    out: Callable[[str], None],
) -> list[RoundFigures]:
    """Run every round for one seed from the project's current policy; return its figures."""
    from training.deployment import deploy_policy

    eval_sampling = config.eval_sampling(seed)
    reference_samples = sample(reference, prompts, eval_sampling)
    project.refresh_from_db()
    previous = project.current_policy
    baseline = _Baseline(
        reference=reference,
        reference_samples=reference_samples,
        accuracy_sft=_reading(judge, "correct", prompts, reference_samples),
        previous_samples=reference_samples
        if previous.pk == reference.pk
        else sample(previous, prompts, eval_sampling),
        loose_sft=_reading(judge, "correct_loosely", prompts, reference_samples),
        substantive_sft=_reading(
            judge, "correct_substantively", prompts, reference_samples
        ),
    )
    history, labelled, figures, reward_models = [previous], [], [], []
    for r in range(1, config.rounds + 1):
        started, cpu_started = time.monotonic(), _cpu_seconds()
        seconds: dict[str, float] = {}
        project.refresh_from_db()
        # The deployed policy writes the task's other candidates (publish_round adds one
        # per earlier policy), so people compare policies within a task.
        earlier = (
            history[:-1][-config.earlier_policies :] if config.earlier_policies else []
        )
        step = _Round(
            r, seed, project.current_policy, earlier, labelled, list(reward_models)
        )
        training_round, snapshot = _publish_annotate_train(
            project, config, step, judge=judge, user=user, seconds=seconds
        )
        tick = time.monotonic()
        policy = training_round.output_policy
        figure, samples = _evaluate(
            config, policy, prompts, baseline, judge=judge, seed=seed
        )
        figure.round, figure.pairs = r, snapshot.row_count
        figure.rm_accuracy = _rm_accuracy(training_round)
        reward_model = _round_reward_model(training_round)
        if reward_model is not None:
            reward_models.append(reward_model.name)
        rm_vs_sft = (
            reward_model_win_rate(reward_model, prompts, samples, reference_samples)
            if reward_model is not None
            else None
        )
        _store_metrics(policy, figure, rm_vs_sft, config)
        deploy_policy(project, policy, user=user)
        seconds["evaluate"] = time.monotonic() - tick
        figure.wall_s = time.monotonic() - started
        figure.cpu_s = _cpu_seconds() - cpu_started
        figure.stage_seconds = seconds
        figures.append(figure)
        out(table_row(figure))
        out("       seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
        baseline.previous_samples = samples
        history.append(policy)
    return figures


def _loop_judge(config: LoopConfig) -> Judge:
    """Return the loop's judge; raise ValueError when it cannot do what is asked."""
    judge = get_judge(config.judge)
    if config.rewrites and not judge_offers(judge, "repair"):
        raise ValueError(
            f"rewrites={config.rewrites:g} needs a judge that repairs a response "
            f"(`repair`); judge {config.judge or default_judge_name()!r} has none: "
            "use --judge demo or --judge instructions, or leave --rewrites at 0"
        )
    if config.rewrites:
        check_rewrite_start(judge, config.rewrite_from)
    if config.reward == "judge" and not judge_offers(judge, "reward"):
        raise ValueError(
            f"reward='judge' needs a judge that scores one response (`reward`); judge "
            f"{config.judge or default_judge_name()!r} has none: use --judge demo or "
            "--judge instructions, or --reward model"
        )
    return judge


def run_loop(
    project: Project,
    config: LoopConfig,
    *,
    user: AbstractBaseUser | None = None,
    reference: Policy | None = None,
    out: Callable[[str], None] = print,
    plot_path: Path | None = None,
    figures_path: Path | None = None,
) -> list[RoundFigures]:
    """Run `config.rounds` rounds once per seed; return each round's mean over seeds.

    `reference` is the SFT policy the win rate and KL are measured against
    (default: the oldest ancestor of the current policy with responses in the
    project, else the current policy). Each seed starts from the policy current
    when the loop began (redeployed). Print a table row per round and seed to
    `out`, then the means over seeds with their intervals, save the curves to
    `plot_path` (PNG) if given, and print the final JSON line. With
    `figures_path`, every finished seed's figures are saved there as it ends
    (`save_figures`; a loop stopped early leaves its finished seeds to pool).
    Raise RuntimeError with the round's error text when a training round fails.
    """
    from annotation.leaderboard import sft_policy
    from training.deployment import deploy_policy

    judge = _loop_judge(config)
    if project.current_policy is None:
        raise ValueError(
            f"project {project.name} has no current policy; deploy one (e.g. demo-sft) first"
        )
    loop_started, cpu_started = time.monotonic(), _cpu_seconds()
    start = project.current_policy
    reference = reference or sft_policy(project) or start
    prompts = held_out_prompts(project, config.eval_prompts, config.split)
    runs: list[list[RoundFigures]] = []
    out(table_header())
    for seed in config.seed_list():
        project.refresh_from_db()
        if project.current_policy_id != start.pk:
            deploy_policy(project, start, user=user, is_rollback=True)
        runs.append(
            _run_seed(
                project,
                config,
                seed,
                prompts,
                reference,
                judge=judge,
                user=user,
                out=out,
            )
        )
        if figures_path is not None:
            save_figures(
                figures_path,
                runs,
                project=project.name,
                method=config.label,
                split=config.split,
                prompts=prompts,
                wall_s=time.monotonic() - loop_started,
                cpu_s=_cpu_seconds() - cpu_started,
            )
    if figures_path is not None:
        out(f"figures: {figures_path}")
    return report_means(
        runs,
        split=config.split,
        prompts=len(prompts),
        out=out,
        plot_path=plot_path,
        title=f"{project.name}: {config.label} loop",
        wall_s=time.monotonic() - loop_started,
        cpu_s=_cpu_seconds() - cpu_started,
    )


def report_means(
    runs: list[list[RoundFigures]],
    *,
    split: str,
    prompts: int,
    out: Callable[[str], None],
    plot_path: Path | None,
    title: str,
    wall_s: float,
    cpu_s: float,
) -> list[RoundFigures]:
    """Print each round's mean over the seeds' `runs`, the accuracy lines, the time
    and the JSON line; save the plot; return the means (the loop's and the pool's end)."""
    rounds = len(runs[0])
    figures = [mean_over_seeds([run[r] for run in runs]) for r in range(rounds)]
    out(f"mean of {len(runs)} seeds, {split} split, {prompts} prompts:")
    for figure in figures:
        out(table_row(figure))
    for figure in figures:
        if figure.accuracy is not None:
            out(accuracy_line(figure))
    if plot_path is not None:
        save_plot(figures, plot_path, title=title)
        out(f"plot: {plot_path}")
    out(
        f"total wall time: {wall_s:.0f} s, CPU time {cpu_s:.0f} s "
        f"({cpu_s / len(runs) / 60:.1f} CPU-minutes per seed)"
    )
    last = figures[-1]
    last.wall_s, last.cpu_s = wall_s, cpu_s
    out(json.dumps(last.summary()))
    return figures


FIGURES_FORMAT = "rlhf-loop-figures/1"
# What must agree for seeds to pool: the same evaluation, not only the same numbers.
POOL_KEYS = ("project", "method", "split", "prompts_digest", "rounds")


def prompts_digest(prompts: list[list[dict]]) -> str:
    """Return a digest of the evaluation prompts (their messages, in order)."""
    text = json.dumps(prompts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_figures(
    path: Path,
    runs: list[list[RoundFigures]],
    *,
    project: str,
    method: str,
    split: str,
    prompts: list[list[dict]],
    wall_s: float,
    cpu_s: float,
) -> Path:
    """Write every seed's per-round figures (per-prompt values included) to `path`
    as JSON, by atomic rename; `pool_figures` reads it back."""
    data = {
        "format": FIGURES_FORMAT,
        "project": project,
        "method": method,
        "split": split,
        "prompts": len(prompts),
        "prompts_digest": prompts_digest(prompts),
        "rounds": len(runs[0]),
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "runs": [[dataclasses.asdict(f) for f in run] for run in runs],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
    return path


def load_figures(path: Path) -> dict[str, Any]:
    """Read a `save_figures` file; its runs become RoundFigures. Raise ValueError
    naming the file for anything else."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a loop figures file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FIGURES_FORMAT:
        raise ValueError(
            f"{path}: not a loop figures file (format {FIGURES_FORMAT!r} expected); "
            "run_loop prints the path of the one it writes"
        )
    names = {f.name for f in dataclasses.fields(RoundFigures)}
    runs = []
    try:
        for run in data["runs"]:
            figures = []
            for values in run:
                values = {k: v for k, v in values.items() if k in names}
                if values.get("win_rate_ci") is not None:
                    values["win_rate_ci"] = tuple(values["win_rate_ci"])
                figures.append(RoundFigures(**values))
            runs.append(figures)
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: a damaged loop figures file ({exc!r})") from None
    missing = [k for k in (*POOL_KEYS, "prompts", "wall_s", "cpu_s") if k not in data]
    if missing or not runs:
        raise ValueError(
            f"{path}: a damaged loop figures file (no {missing or 'runs'})"
        )
    data["runs"] = runs
    return data


def pool_figures(
    paths: list[Path],
    *,
    out: Callable[[str], None] = print,
    plot_path: Path | None = None,
) -> list[RoundFigures]:
    """Pool the seeds of several `save_figures` files into one mean per round, with
    its interval over prompts, printed as `run_loop` prints its own seeds.

    Raise ValueError when the files measured different things (project, method,
    split, evaluation prompts or number of rounds) or share a seed.
    """
    loaded = [load_figures(p) for p in paths]
    if not loaded:
        raise ValueError("give at least one figures file")
    first = loaded[0]
    for path, data in zip(paths[1:], loaded[1:], strict=True):
        differ = [k for k in POOL_KEYS if data[k] != first[k]]
        if differ:
            raise ValueError(
                f"{path} measured another loop than {paths[0]}: "
                + ", ".join(f"{k} {data[k]!r} against {first[k]!r}" for k in differ)
            )
    runs = [run for data in loaded for run in data["runs"]]
    seeds = [s for run in runs for s in run[0].seeds]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(
            f"seed(s) {repeated} appear in more than one run; pool distinct seeds"
        )
    out(table_header())
    for run in runs:
        for figure in run:
            out(table_row(figure))
    return report_means(
        runs,
        split=first["split"],
        prompts=first["prompts"],
        out=out,
        plot_path=plot_path,
        title=f"{first['project']}: {first['method']} loop ({len(runs)} seeds pooled)",
        wall_s=sum(d["wall_s"] for d in loaded),
        cpu_s=sum(d["cpu_s"] for d in loaded),
    )


def accuracy_line(figure: RoundFigures) -> str:
    """Return a round's accuracy against SFT's, the gain's interval, the loose reading
    and, where the judge offers it, the substantive reading with its gain's interval."""
    gain = figure.accuracy - figure.accuracy_sft
    nan = float("nan")
    low, high = figure.accuracy_gain_ci() or (nan, nan)
    line = (
        f"round {figure.round}: accuracy {figure.accuracy:.3f} against SFT's "
        f"{figure.accuracy_sft:.3f}, gain {100 * gain:+.1f} points "
        f"[{100 * low:+.1f}, {100 * high:+.1f}]"
    )
    if figure.loose_accuracy is not None:
        line += (
            f"; loosely {figure.loose_accuracy:.3f} against "
            f"{figure.loose_accuracy_sft:.3f}"
        )
    if figure.substantive_accuracy is not None:
        gain = figure.substantive_accuracy - figure.substantive_accuracy_sft
        low, high = figure.accuracy_gain_ci("substantive") or (nan, nan)
        line += (
            f"; substantive answers only {figure.substantive_accuracy:.3f} against "
            f"{figure.substantive_accuracy_sft:.3f}, gain {100 * gain:+.1f} points "
            f"[{100 * low:+.1f}, {100 * high:+.1f}] (mean words {figure.words:.1f} "
            f"against {figure.words_sft:.1f})"
        )
    return line


def mean_over_seeds(figures: list[RoundFigures]) -> RoundFigures:
    """Return one round's figures averaged over seeds, its interval over prompts.

    Each prompt's value is averaged over seeds (the prompts are the same), then the
    prompts are resampled: `bootstrap_interval`.
    """

    def mean_of(name: str) -> float | None:
        values = [getattr(f, name) for f in figures]
        return None if any(v is None for v in values) else _mean(values)

    def per_prompt(name: str) -> list[float]:
        columns = [getattr(f, name) for f in figures]
        return [_mean(values) for values in zip(*columns, strict=True)]

    wins = per_prompt("win_by_prompt")
    return RoundFigures(
        round=figures[0].round,
        policy=f"mean of {len(figures)} seeds",
        pairs=round(_mean([f.pairs for f in figures])),
        rm_accuracy=mean_of("rm_accuracy"),
        win_rate_vs_previous=_mean([f.win_rate_vs_previous for f in figures]),
        win_rate_vs_sft=_mean(wins),
        kl=_mean([f.kl for f in figures]),
        distinct_2=_mean([f.distinct_2 for f in figures]),
        distinct_2_sft=_mean([f.distinct_2_sft for f in figures]),
        wall_s=_mean([f.wall_s for f in figures]),
        accuracy=mean_of("accuracy"),
        accuracy_sft=mean_of("accuracy_sft"),
        win_rate_ci=bootstrap_interval(wins, seed=figures[0].seeds[0]),
        seeds=[s for f in figures for s in f.seeds],
        win_by_prompt=wins,
        accuracy_by_prompt=per_prompt("accuracy_by_prompt"),
        accuracy_sft_by_prompt=per_prompt("accuracy_sft_by_prompt"),
        win_rate_by_seed=[f.win_rate_vs_sft for f in figures],
        accuracy_by_seed=[f.accuracy for f in figures if f.accuracy is not None],
        cpu_s=_mean([f.cpu_s for f in figures]),
        loose_accuracy=mean_of("loose_accuracy"),
        loose_accuracy_sft=mean_of("loose_accuracy_sft"),
        loose_by_prompt=per_prompt("loose_by_prompt"),
        loose_sft_by_prompt=per_prompt("loose_sft_by_prompt"),
        substantive_accuracy=mean_of("substantive_accuracy"),
        substantive_accuracy_sft=mean_of("substantive_accuracy_sft"),
        substantive_by_prompt=per_prompt("substantive_by_prompt"),
        substantive_sft_by_prompt=per_prompt("substantive_sft_by_prompt"),
        words=mean_of("words"),
        words_sft=mean_of("words_sft"),
    )


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _cpu_seconds() -> float:
    """Return the CPU time of this process and its finished children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def stage_options(
    config: LoopConfig, seed: int | None = None, round_number: int = 1
) -> dict[str, dict[str, Any]]:
    """Return each stage's trainer options: the method's defaults, overridden key by
    key by `config.train`; with `seed`, every stage trains with it unless told otherwise.

    An online policy stage (PPO, GRPO) samples rollouts of up to
    `config.max_new_tokens` tokens, as the candidates and evaluated answers are.
    The policy stage (the pipeline's last) of round `round_number` learns at its
    learning rate times `config.step_decay ** (round_number - 1)`, and an SFT stage
    before it at its own times `config.sft_step_decay ** (round_number - 1)`.
    """
    from training.stages import config_class

    stages = config.stages()
    options = {
        stage: dict(values)
        for stage, values in METHOD_DEFAULTS[config.method]["train"].items()
        if stage in stages
    }
    # Online stages sample their own rollouts: as long as the candidates the
    # reward model learnt from and the answers the loop evaluates, unless told.
    length = ROLLOUT_LENGTH.get(stages[-1])
    if length:
        options.setdefault(stages[-1], {})[length] = config.max_new_tokens
    if config.reward == "judge":
        options[stages[-1]]["judge"] = config.judge or default_judge_name() or ""
    if seed is not None:
        for stage in stages:
            options.setdefault(stage, {})["seed"] = seed
    for stage, values in config.train.items():
        options.setdefault(stage, {}).update(values)
    decays = {stages[-1]: config.step_decay}
    if "sft" in stages[:-1]:
        decays["sft"] = config.sft_step_decay
    for stage, decay in decays.items():
        if round_number > 1 and decay != 1:
            values = options.setdefault(stage, {})
            rate = values.get("learning_rate", config_class(stage)().learning_rate)
            values["learning_rate"] = rate * decay ** (round_number - 1)
    return options
