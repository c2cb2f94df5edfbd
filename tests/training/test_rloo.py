"""Tests for training/rloo.py: RLOO trains a policy against the platform's reward model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.training.ml_data import make_reward_model, prompt_records, write_jsonl
from training import rloo
from training.grpo import GRPOConfig
from training.progress import Reporter

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rloo_trains_a_lora_adapter_against_the_reward_model(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reward_dir = make_reward_model(tiny_model_dir, tmp_path / "rm")
    config = rloo.RLOOConfig(
        base_path=str(tiny_model_dir),
        reward_model_path=str(reward_dir),
        use_lora=True,
        max_steps=2,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
    )
    reporter = Reporter(tmp_path / "run")
    data = write_jsonl(tmp_path / "prompts.jsonl", prompt_records(16))
    metrics = rloo.train(
        config, data_path=data, output_dir=reporter.output_dir, reporter=reporter
    )

    assert math.isfinite(metrics["loss"]) is True
    assert metrics["steps"] == 2.0
    assert "rewards/reward_model/mean" in metrics
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), reporter.output_dir
    )
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert max(float(p.abs().max()) for p in lora_b) > 0.0
    saved = json.loads((reporter.output_dir / "training_config.json").read_text())
    assert saved == config.to_dict()


def test_rloo_config_wants_whole_groups_per_batch():
    with pytest.raises(ValueError) as error:
        rloo.RLOOConfig(
            base_path="x",
            reward_model_path="r",
            per_device_train_batch_size=6,
            num_generations=4,
        )
    assert str(error.value) == (
        "per_device_train_batch_size must be a multiple of num_generations, got 6 and 4"
    )


def test_rloo_refuses_to_start_without_a_reward_model(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", prompt_records(4))
    with pytest.raises(ValueError) as error:
        rloo.train(
            rloo.RLOOConfig(base_path="x"),
            data_path=data,
            output_dir=tmp_path / "o",
            reporter=Reporter(tmp_path / "run"),
        )
    assert "reward_model_path is empty" in str(error.value)


def test_rloo_shares_grpo_fields_and_defaults_but_keeps_its_trl_names():
    """RLOOConfig is GRPO's GroupConfig, defaults included (its beta weighs the KL in
    the reward): GRPO's loss_type is not one of its keys, and its extra TRL fields are
    checked against trl.RLOOConfig."""
    assert rloo.RLOOConfig().beta == GRPOConfig().beta == 0.1
    with pytest.raises(ValueError, match="loss_type"):
        rloo.RLOOConfig.from_dict({"base_path": "x", "loss_type": "dapo"})
    assert isinstance(rloo.RLOOConfig.from_dict({"base_path": "x"}), rloo.RLOOConfig)
    with pytest.raises(ValueError, match="needs data_path") as error:
        rloo.train(
            rloo.RLOOConfig(base_path="x", reward_model_path="r"),
            data_path=None,
            output_dir=Path("unused"),
            reporter=None,
        )
    assert str(error.value).startswith("RLOO needs data_path")
