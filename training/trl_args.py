"""The TRL config fields a launch may pass through `trl_args`: an allow-list per method.

`trl_args` reaches TRL's own config unchanged, so anything TRL accepts would
otherwise be open to whoever launches a round: pushing to a hub with a token,
reading a config file from a path, running a model's remote code. Only fields
that shape the optimisation or the method's loss pass; paths, hubs, tokens,
logging destinations, remote code and servers never do. Plain Python (no TRL
import): the web process checks a launch without loading torch.
"""

from __future__ import annotations

from typing import Any

# transformers.TrainingArguments fields that only shape the optimisation.
OPTIMISATION = frozenset(
    {
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "data_seed",
        "dataloader_drop_last",
        "dataloader_num_workers",
        "fp16",
        "full_determinism",
        "label_smoothing_factor",
        "lr_scheduler_kwargs",
        "lr_scheduler_type",
        "max_grad_norm",
        "neftune_noise_alpha",
        "optim",
        "optim_args",
        "tf32",
        "torch_compile",
        "torch_compile_mode",
        "use_liger_kernel",
        "warmup_ratio",
        "weight_decay",
    }
)
_ONLINE = frozenset(
    {
        "beta",
        "epsilon",
        "epsilon_high",
        "generation_batch_size",
        "mask_truncated_completions",
        "max_completion_length",
        "min_p",
        "num_generations",
        "num_iterations",
        "repetition_penalty",
        "reward_weights",
        "shuffle_dataset",
        "steps_per_generation",
        "temperature",
        "top_k",
        "top_p",
    }
)
# Fields of each method's TRL config beyond TrainingArguments (trl 1.16).
METHOD_FIELDS: dict[str, frozenset[str]] = {
    "sft": frozenset(
        {
            "assistant_only_loss",
            "completion_only_loss",
            "loss_type",
            "max_length",
            "packing",
            "packing_strategy",
            "pad_to_multiple_of",
            "padding_free",
            "shuffle_dataset",
            "truncation_mode",
        }
    ),
    "pretrain": frozenset({"pad_to_multiple_of", "shuffle_dataset"}),
    "reward": frozenset(
        {"center_rewards_coefficient", "disable_dropout", "pad_to_multiple_of"}
    ),
    "dpo": frozenset(
        {
            "discopop_tau",
            "disable_dropout",
            "f_alpha_divergence_coef",
            "f_divergence_type",
            "ld_alpha",
            "pad_to_multiple_of",
            "padding_free",
            "precompute_ref_batch_size",
            "ref_model_mixup_alpha",
            "ref_model_sync_steps",
            "sync_ref_model",
            "truncation_mode",
            "use_weighting",
        }
    ),
    "grpo": _ONLINE
    | {
        "delta",
        "entropy_coef",
        "loss_type",
        "scale_rewards",
        "top_entropy_quantile",
    },
    "rloo": _ONLINE | {"normalize_advantages", "reward_clip_range"},
}


def check_trl_args(method: str, trl_args: dict[str, Any], ours: set[str]) -> None:
    """Raise ValueError for a `trl_args` field that is ours or not on the allow-list.

    `ours` are the fields of the platform's own config for the method: those are
    set there, not passed through.
    """
    if not isinstance(trl_args, dict):
        raise ValueError(
            f"trl_args must be a JSON object of TRL fields, got {trl_args!r}"
        )
    clash = sorted(set(trl_args) & (ours | {"output_dir", "report_to"}))
    if clash:
        raise ValueError(
            f"trl_args must not repeat {clash}; set them as fields of the {method} config"
        )
    allowed = OPTIMISATION | METHOD_FIELDS[method]
    refused = sorted(set(trl_args) - allowed)
    if refused:
        raise ValueError(
            f"trl_args field(s) {refused} may not be set for {method}: only fields "
            f"that shape the optimisation or the loss pass through (no paths, hubs, "
            f"tokens, logging or remote code); allowed: {sorted(allowed)}"
        )
