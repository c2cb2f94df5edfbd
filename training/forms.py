"""Forms of the training pages: the launch form built from the stages' config dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Any

from django import forms
from django.conf import settings

from annotation.models import Project
from inference.models import Policy
from training.stages import (
    INPUT_FIELDS,
    PIPELINES,
    STAGES,
    config_class,
    implicit_stages,
    launch_page_stages,
    parse_method,
)
from training.supervisor import accelerate_configs


def launchable_stages() -> list[str]:
    """Return the stages shown on the launch page: not hidden, their trainer module exists."""
    stages = []
    for name in launch_page_stages():
        try:
            config_class(name)
        except ImportError:
            continue
        stages.append(name)
    return stages


def _options(field: dataclasses.Field, default: Any) -> list[tuple[str, str]] | None:
    """Return a stage field's choices on the launch page (a callable in its metadata's
    "choices", such as the registered judges, or true/false for a flag), or None for a
    typed value."""
    choices = field.metadata.get("choices")
    if callable(choices):
        return [("", f"default ({default or 'none'})")] + [
            (c, c) for c in sorted(choices())
        ]
    if isinstance(default, bool):
        return [
            ("", f"default ({str(default).lower()})"),
            ("true", "true"),
            ("false", "false"),
            *((c, c) for c in field.metadata.get("extra_choices", ())),
        ]
    return None


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


class LaunchForm(forms.Form):
    """Launch a training round: pipeline, round options, and any stage option to override."""

    project = forms.ModelChoiceField(
        queryset=Project.objects.all(), to_field_name="name"
    )
    method = forms.CharField(
        initial="dpo",
        max_length=100,
        help_text="Stages, comma-separated, run in order; e.g. "
        + "; ".join(PIPELINES.values())
        + ".",
    )
    policy = forms.ModelChoiceField(
        queryset=Policy.objects.filter(
            kind=Policy.Kind.POLICY, status=Policy.Status.READY
        ),
        required=False,
        to_field_name="name",
        empty_label="the project's current policy",
        help_text="The policy the first stage starts from.",
    )
    reward_model = forms.ModelChoiceField(
        queryset=Policy.objects.filter(
            kind=Policy.Kind.REWARD_MODEL, status=Policy.Status.READY
        ),
        required=False,
        to_field_name="name",
        empty_label="none (a reward stage trains one)",
        help_text="A registered reward model for ppo, grpo or rloo without a reward stage.",
    )
    reward_ensemble = forms.ModelMultipleChoiceField(
        queryset=Policy.objects.filter(
            kind=Policy.Kind.REWARD_MODEL, status=Policy.Status.READY, adapter_path=""
        ),
        required=False,
        to_field_name="name",
        help_text="For ppo, grpo or rloo: registered reward models whose scores are "
        "averaged with the round's own reward model's, each normalised on the starting "
        "policy's samples (at most 7).",
    )
    corpus = forms.SlugField(
        max_length=100,
        required=False,
        help_text="For a pretrain stage: the project's pre-training corpus (its "
        "corpus page).",
    )
    demonstrations = forms.SlugField(
        max_length=100,
        required=False,
        help_text="For an sft stage: the project's uploaded demonstrations (default: "
        "the snapshot's rewrites and top-ranked responses).",
    )
    queue = forms.ChoiceField(
        choices=[],
        help_text="'default' runs on the CPU worker; 'gpu' on a GPU host's worker.",
    )
    accelerate = forms.ChoiceField(
        choices=[],
        required=False,
        help_text="How the stage is launched on its host (configs in platform/accelerate/).",
    )

    evaluate = forms.BooleanField(
        required=False,
        initial=True,
        help_text="Evaluate the new policy against its parent on held-out prompts "
        "(a policy must be evaluated before it can be deployed).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        queues = settings.TASKS["default"].get("QUEUES", ["default"])
        self.fields["queue"].choices = [(q, q) for q in queues]
        self.fields["accelerate"].choices = [("", "none: one plain process")] + [
            (name, name) for name in accelerate_configs()
        ]
        self.stage_fields: dict[str, list[str]] = {}
        for stage in launchable_stages():
            names = []
            for field in dataclasses.fields(config_class(stage)):
                if field.name in INPUT_FIELDS:
                    continue
                default = _default(field)
                name = f"{stage}__{field.name}"
                help_text = field.metadata.get("help", "")
                options = _options(field, default)
                if options is not None:
                    self.fields[name] = forms.ChoiceField(
                        choices=options,
                        required=False,
                        label=field.name,
                        help_text=help_text,
                    )
                else:
                    self.fields[name] = forms.CharField(
                        required=False,
                        max_length=10_000,
                        label=field.name,
                        help_text=help_text,
                        widget=forms.TextInput(attrs={"placeholder": f"{default}"}),
                    )
                names.append(name)
            self.stage_fields[stage] = names

    def clean_method(self) -> str:
        """Return the pipeline normalised ('sft, dpo' -> 'sft,dpo'), or a form error."""
        return ",".join(parse_method(self.cleaned_data["method"]))

    def stage_fieldsets(self) -> list[tuple[str, str, list[forms.BoundField]]]:
        """Return (stage, what it does, its bound fields) for the template."""
        return [
            (stage, STAGES[stage].help, [self[name] for name in names])
            for stage, names in self.stage_fields.items()
        ]

    def launch_options(self) -> dict[str, Any]:
        """Return the options for `launch_round` from the cleaned data (blank = default)."""
        data = self.cleaned_data
        options: dict[str, Any] = {
            "queue": data["queue"],
            "accelerate": data["accelerate"] or "",
        }
        if data.get("policy"):
            options["policy"] = data["policy"].name
        if data.get("reward_model"):
            options["reward_model"] = data["reward_model"].name
        if data.get("reward_ensemble"):
            options["reward_ensemble"] = sorted(p.name for p in data["reward_ensemble"])
        for name in ("corpus", "demonstrations"):
            if data.get(name):
                options[name] = data[name]
        pipeline = data["method"].split(",")
        for stage, names in self.stage_fields.items():
            if stage not in pipeline and stage not in implicit_stages():
                continue  # fields of stages not in the pipeline do not apply
            for name in names:
                value = data.get(name)
                if value not in (None, ""):
                    options.setdefault(stage, {})[name.split("__", 1)[1]] = value
        if not data.get("evaluate"):
            options["evaluate"] = False
        return options


class RegisterModelForm(forms.Form):
    """Register a model from a path on the server or a hub id (not a browser upload)."""

    name = forms.CharField(
        max_length=200, help_text="Unique; also the name of its folder in MODEL_DIR."
    )
    source = forms.CharField(
        max_length=1000,
        help_text="A path on the server: a Hugging Face folder, a .gguf file or a "
        "PEFT adapter folder; or a hub id.",
    )
    kind = forms.ChoiceField(
        choices=[("policy", "Policy"), ("reward", "Reward model")], initial="policy"
    )
    parent = forms.ModelChoiceField(
        queryset=Policy.objects.all(),
        to_field_name="name",
        required=False,
        help_text="The registered model it was derived from, if any.",
    )
    base = forms.ModelChoiceField(
        queryset=Policy.objects.filter(adapter_path=""),
        to_field_name="name",
        required=False,
        help_text="For an adapter: the registered model it sits on (default: the "
        "one its adapter_config.json names).",
    )
    allow_pickle = forms.BooleanField(
        required=False,
        help_text="Accept pickle-only (.bin) weights; only from a source you trust.",
    )
    chat_template = forms.CharField(
        max_length=1000,
        required=False,
        help_text="A Jinja chat-template file on the server, for a model without one.",
    )

    def register_options(self) -> dict[str, Any]:
        """Return `register_model`'s keyword arguments from the cleaned data."""
        data = self.cleaned_data
        return {
            "kind": data["kind"],
            "parent": data["parent"].name if data.get("parent") else "",
            "base": data["base"].name if data.get("base") else "",
            "allow_pickle": data["allow_pickle"],
            "chat_template": data["chat_template"],
        }
