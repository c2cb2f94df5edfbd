"""Tests for training/trl_args.py: only optimisation and loss fields pass through to TRL."""

import pytest

from training.dpo import DPOConfig
from training.grpo import GRPOConfig
from training.reward import RewardConfig
from training.rloo import RLOOConfig
from training.sft import SFTConfig

CONFIGS = [SFTConfig, RewardConfig, DPOConfig, GRPOConfig, RLOOConfig]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize(
    "field, value",
    [
        ("push_to_hub", True),
        ("hub_token", "hf_secret"),
        ("hub_model_id", "someone/model"),
        ("deepspeed", "/etc/passwd"),
        ("logging_dir", "/tmp/elsewhere"),
        ("trust_remote_code", True),
        ("resume_from_checkpoint", "/somewhere"),
    ],
)
def test_a_field_that_reaches_outside_training_is_refused(config, field, value):
    with pytest.raises(ValueError, match=rf"trl_args field\(s\) \['{field}'\] may not"):
        config(trl_args={field: value})


@pytest.mark.parametrize("config", CONFIGS)
def test_an_optimisation_field_passes_through(config):
    assert config(trl_args={"max_grad_norm": 0.5}).trl_args == {"max_grad_norm": 0.5}


def test_a_method_field_passes_for_its_method_only():
    assert DPOConfig(trl_args={"use_weighting": True}).trl_args == {
        "use_weighting": True
    }
    with pytest.raises(ValueError, match="may not be set for sft"):
        SFTConfig(trl_args={"use_weighting": True})


def test_trl_args_must_be_an_object():
    with pytest.raises(ValueError, match="trl_args must be a JSON object"):
        DPOConfig(trl_args=["max_grad_norm"])
