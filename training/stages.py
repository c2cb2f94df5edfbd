"""The stage registry: every training stage by name, its config, what it consumes and produces.

A stage names its config dataclass and its trainer function by dotted path, so
this module imports neither (nor Django, nor torch): the child process
(`python -m training.stage`) imports the trainer from the path the worker wrote
into its envelope, and the launch form, the API, the loop and the worker read
the specs here, with the named pipelines and the parsing of a pipeline and of
stage options into a resolved config. Another module (a plugin, the tests'
stage) adds a stage with `register`; a Django process imports the modules named
in the setting `TRAINING_STAGE_MODULES` at start-up (training/apps.py), so a
worker knows them too.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import typing
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

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
    # What it trains on: an export format of the round's snapshot ("trl", "sft"),
    # "prompts" (held-out), "corpus" (the round's pre-training corpus), or "" for none.
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


# Config fields the platform fills from the previous stage or the registry.
INPUT_FIELDS = {
    "base_path",
    "adapter_path",
    "reward_model_path",
    "reward_ensemble_paths",
    "parent_base_path",
    "parent_adapter_path",
    "judge_path",
}


def parse_method(method: str) -> list[str]:
    """Return the stage names of a pipeline such as 'sft,reward,ppo'.

    Raise ValidationError for an unknown stage or an online stage without a reward
    stage before it (unless a reward_model option names one: see `launch_round`).
    """
    stages = [
        s.strip().lower() for s in method.replace("->", ",").split(",") if s.strip()
    ]
    if not stages:
        raise ValidationError(
            f"method must name at least one stage, e.g. 'dpo'; got {method!r}"
        )
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValidationError(
            f"unknown stage(s) {unknown} in method {method!r}; expected a comma-separated "
            f"pipeline of {sorted(STAGES)}, e.g. 'dpo' or 'sft,reward,ppo'"
        )
    return stages


def config_class(stage: str) -> type:
    """Return the config dataclass of a stage (imports its trainer module, not torch)."""
    return get_stage(stage).config_class()


def coerce(cls: type, name: str, value: Any) -> Any:
    """Return `value` converted to the type of field `name` of `cls` (text from forms/CLI)."""
    if not isinstance(value, str):
        return value
    hints = typing.get_type_hints(cls)
    if name not in hints:
        return value
    kind = hints[name]
    if kind is str:
        return value
    if kind is bool or bool in typing.get_args(kind):
        # A flag, or a flag with named values besides (bf16: true, false or "auto").
        words = [
            word
            for part in typing.get_args(kind)
            if typing.get_origin(part) is typing.Literal
            for word in typing.get_args(part)
        ]
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        if lowered in words:
            return lowered
        allowed = ", ".join(["true", "false", *(repr(w) for w in words)])
        raise ValidationError(f"{name} must be one of {allowed}, got {value!r}")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ValidationError(f"{name} must be an integer, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except ValueError:
            raise ValidationError(f"{name} must be a number, got {value!r}") from None
    # Lists, dicts, optionals: JSON, or a comma-separated list ("sigmoid,sft", "1,0.5").
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        lists = [
            k for k in (kind, *typing.get_args(kind)) if typing.get_origin(k) is list
        ]
        if not lists:
            raise ValidationError(
                f"{name} must be JSON ({kind}), got {value!r}"
            ) from None
        item_type = (typing.get_args(lists[0]) or (str,))[0]
        items = [item.strip() for item in value.split(",") if item.strip()]
        try:
            return (
                [item_type(item) for item in items]
                if item_type in (int, float)
                else items
            )
        except ValueError:
            raise ValidationError(
                f"{name} must be a list of {item_type.__name__}, got {value!r}"
            ) from None


def resolve_config(
    stage: str, overrides: dict[str, Any], inputs: dict[str, str]
) -> dict[str, Any]:
    """Return the stage's full config: defaults, then overrides, then the platform's inputs.

    Raise ValidationError (also for the config's own checks) naming a bad value.
    """
    cls = config_class(stage)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: coerce(cls, k, v) for k, v in overrides.items()}
    set_inputs = sorted(INPUT_FIELDS & set(values))
    if set_inputs:
        raise ValidationError(
            f"{stage} options {set_inputs} are set by the platform (from the starting policy "
            "and the previous stages); choose the policy with the 'policy' option instead"
        )
    values.update({k: v for k, v in inputs.items() if k in names})
    try:
        return cls.from_dict(values).to_dict()
    except ValueError as exc:
        # The configs are plain dataclasses (the trainers read them outside Django):
        # their checks raise ValueError, which is the user's input here.
        raise ValidationError(str(exc)) from None


for _spec in (
    StageSpec(
        "pretrain",
        "training.pretrain.PretrainConfig",
        "training.pretrain.train",
        POLICY,
        "corpus",
        help="Continued next-token pre-training on a curated corpus (round option corpus).",
        # A base model, not a chat policy: win rates on prompts say nothing yet.
        evaluated=False,
    ),
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
        help="GRPO with the reward model (or a judge: option judge) as reward function.",
    ),
    StageSpec(
        "rloo",
        "training.rloo.RLOOConfig",
        "training.rloo.train",
        POLICY,
        "trl",
        needs_reward=True,
        help="RLOO with the reward model (or a judge: option judge) as reward function.",
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
    "sft-grpo": "sft,reward,grpo",
    "rloo": "reward,rloo",
    "sft-rloo": "sft,reward,rloo",
    "sft": "sft",
    "reward": "reward",
    "pretrain": "pretrain",
    "pretrain-sft": "pretrain,sft",
}
