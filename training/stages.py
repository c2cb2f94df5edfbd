"""The stage registry: every training stage by name, what it consumes and produces, and the pipelines.

A stage names its config dataclass and its trainer function by dotted path, so
this module imports neither (nor Django, nor torch): the child process
(`python -m training.stage`) imports the trainer from the path the worker wrote
into its envelope, and the launch form, the API, the loop and the worker read
the specs here. Another module (a plugin, the tests' stage) adds a stage with
`register`; a Django process imports the modules named in the setting
`TRAINING_STAGE_MODULES` at start-up (training/apps.py), so a worker knows them
too.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

# What a stage produces: the values of inference.models.Policy.Kind ("" for nothing).
POLICY = "policy"
REWARD_MODEL = "reward_model"


@dataclass(frozen=True)
class StageSpec:
    """What a stage is: its config and trainer, what it needs and what it makes."""

    name: str
    # Dotted path of the config dataclass, e.g. "training.dpo.DPOConfig".
    config: str
    # Dotted path of train(config, *, data_path, output_dir, reporter, resume_from).
    trainer: str
    # Policy.Kind of its artifact (POLICY, REWARD_MODEL), or "" for none.
    produces: str
    # Export format it trains on: "trl", "sft", "prompts" (held-out), or "" for none.
    data: str
    # Needs a reward model: a reward stage before it, or a registered one.
    needs_reward: bool = False
    help: str = ""
    # Kept off the launch page (command line and API only).
    hidden: bool = False
    # Added by the platform; configurable without being named in the method.
    implicit: bool = False
    # A round that trains a policy with it gets the evaluation stage appended.
    evaluated: bool = True

    def config_class(self) -> type:
        """Return the config dataclass (imports the trainer module, which imports no torch)."""
        return import_object(self.config)

    def train_function(self) -> Any:
        """Return the trainer function."""
        return import_object(self.trainer)


def import_object(path: str) -> Any:
    """Return the object a dotted path 'package.module.name' names."""
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"expected a dotted path 'package.module.name', got {path!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(
            f"module {module_name} has no {name!r} (from {path!r})"
        ) from None


STAGES: dict[str, StageSpec] = {}


def register(spec: StageSpec) -> StageSpec:
    """Add a stage to the registry; registering the same spec again is a no-op.

    Raise ValueError when another stage of that name is registered already.
    """
    known = STAGES.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(
            f"a different stage named {spec.name!r} is registered already "
            f"({known.trainer}); give {spec.trainer} another name"
        )
    STAGES[spec.name] = spec
    return spec


def get_stage(name: str) -> StageSpec:
    """Return the spec of a registered stage; raise ValueError naming the registered ones."""
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(
            f"unknown stage {name!r}; expected one of {sorted(STAGES)}"
        ) from None


def implicit_stages() -> set[str]:
    """Return the stages the platform adds itself, configurable without being named."""
    return {name for name, spec in STAGES.items() if spec.implicit}


def launch_page_stages() -> list[str]:
    """Return the registered stages that are not hidden from the launch page."""
    return [name for name, spec in STAGES.items() if not spec.hidden]


for _spec in (
    StageSpec(
        "sft",
        "training.sft.SFTConfig",
        "training.sft.train",
        POLICY,
        "sft",
        help="Supervised fine-tuning on rewrites and top-ranked responses.",
    ),
    StageSpec(
        "reward",
        "training.reward.RewardConfig",
        "training.reward.train",
        REWARD_MODEL,
        "trl",
        help="Bradley-Terry reward model on the pairs.",
    ),
    StageSpec(
        "dpo",
        "training.dpo.DPOConfig",
        "training.dpo.train",
        POLICY,
        "trl",
        help="Direct preference optimisation on the pairs.",
    ),
    StageSpec(
        "ppo",
        "training.ppo.PPOConfig",
        "training.ppo.train",
        POLICY,
        "trl",
        needs_reward=True,
        help="PPO against the reward model (prompts of the pairs).",
    ),
    StageSpec(
        "grpo",
        "training.grpo.GRPOConfig",
        "training.grpo.train",
        POLICY,
        "trl",
        needs_reward=True,
        help="GRPO with the reward model as reward function.",
    ),
    StageSpec(
        "rloo",
        "training.rloo.RLOOConfig",
        "training.rloo.train",
        POLICY,
        "trl",
        needs_reward=True,
        help="RLOO with the reward model as reward function.",
    ),
    # Appended to every round that trains a policy (see training.rounds.launch_round).
    StageSpec(
        "evaluate",
        "training.stage.EvaluateConfig",
        "training.stage.train_evaluate",
        "",
        "prompts",
        help="Win rate against the parent, KL, length and diversity on held-out prompts.",
        implicit=True,
    ),
):
    register(_spec)

# Named pipelines: the launch page's examples and the loop's methods
# (training.loop.METHOD_DEFAULTS says which of them the loop runs).
PIPELINES: dict[str, str] = {
    "dpo": "dpo",
    "sft-dpo": "sft,dpo",
    "ppo": "reward,ppo",
    "sft-ppo": "sft,reward,ppo",
    "grpo": "reward,grpo",
    "rloo": "reward,rloo",
    "sft": "sft",
    "reward": "reward",
}
