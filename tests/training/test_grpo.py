"""Tests for training/grpo.py: GRPO trains a policy against the platform's reward model."""

from __future__ import annotations

import json
import math

import pytest

from tests.training.ml_data import (
    make_opposite_reward_model,
    make_reward_model,
    prompt_records,
    write_jsonl,
)
from training import grpo, rloo
from training.artifacts import config_from_dict
from training.progress import Reporter

pytestmark = pytest.mark.usefixtures("one_thread")


def run_small(tiny_model_dir, reward_dir, tmp_path, prompts=None, **options):
    """Train a LoRA adapter on the tiny model with GRPO for a step or two on `prompts`
    (records with a prompt column; default 16 of ml_data's), scored by the reward
    model at `reward_dir` (None: the options name a judge); return the config, the
    reporter and the metrics."""
    config = grpo.GRPOConfig(
        base_path=str(tiny_model_dir),
        reward_model_path=str(reward_dir or ""),
        use_lora=True,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        **options,
    )
    reporter = Reporter(tmp_path / "run")
    data = write_jsonl(tmp_path / "prompts.jsonl", prompts or prompt_records(16))
    metrics = grpo.train(
        config, data_path=data, output_dir=reporter.output_dir, reporter=reporter
    )
    return config, reporter, metrics


def test_grpo_trains_a_lora_adapter_against_the_reward_model(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reward_dir = make_reward_model(tiny_model_dir, tmp_path / "rm")
    config, reporter, metrics = run_small(
        tiny_model_dir, reward_dir, tmp_path, max_steps=2
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


def test_grpo_trains_against_a_judges_verifiable_reward_with_no_reward_model(
    tiny_model_dir, tmp_path
):
    from inference.instructions import make_requests

    requests = make_requests(16, "train", seed=0)
    _, reporter, metrics = run_small(
        tiny_model_dir,
        None,
        tmp_path,
        prompts=[{"prompt": r.messages} for r in requests],
        judge="instructions",
        judge_path="inference.instructions:JUDGE",
        max_steps=2,
    )

    assert metrics["steps"] == 2.0
    assert "rewards/reward_model/mean" not in metrics
    # The judge's reward is a share of constraints followed: in [0, 1].
    assert 0.0 <= metrics["rewards/judge/mean"] <= 1.0
    assert (reporter.output_dir / "adapter_config.json").exists()


@pytest.mark.parametrize("config_class", [grpo.GRPOConfig, rloo.RLOOConfig])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"reward_model_path": "/rm"},
            "judge 'instructions' gives the reward, so the reward model '/rm' would "
            "go unused: drop the judge, or the reward stage / reward_model option",
        ),
        (
            {"reward_ensemble_paths": ["/rm1"]},
            "judge 'instructions' gives the reward, so the reward model '/rm1' would "
            "go unused",
        ),
        (
            {"judge_path": ""},
            "judge 'instructions' has no judge_path; launch the round through the "
            "platform",
        ),
    ],
)
def test_a_judged_group_stage_takes_no_reward_model(config_class, options, message):
    values = {
        "base_path": "x",
        "judge": "instructions",
        "judge_path": "inference.instructions:JUDGE",
        **options,
    }
    with pytest.raises(ValueError) as error:
        config_class(**values)
    assert message in str(error.value)


def test_grpo_config_wants_whole_groups_per_batch():
    with pytest.raises(ValueError) as error:
        grpo.GRPOConfig(
            base_path="x",
            reward_model_path="r",
            per_device_train_batch_size=6,
            num_generations=4,
        )
    assert str(error.value) == (
        "per_device_train_batch_size must be a multiple of num_generations, got 6 and 4"
    )


def test_grpo_refuses_to_start_without_a_reward_model(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", prompt_records(4))
    with pytest.raises(ValueError) as error:
        grpo.train(
            grpo.GRPOConfig(base_path="x"),
            data_path=data,
            output_dir=tmp_path / "o",
            reporter=Reporter(tmp_path / "run"),
        )
    assert "reward_model_path is empty" in str(error.value)


def test_grpo_scores_with_the_mean_of_an_ensembles_members_each_normalised(
    tiny_model_dir, tmp_path
):
    reward_dir = make_reward_model(tiny_model_dir, tmp_path / "rm")
    opposite = make_opposite_reward_model(reward_dir, tmp_path / "opposite")
    _, reporter, metrics = run_small(
        tiny_model_dir,
        reward_dir,
        tmp_path,
        max_steps=1,
        reward_ensemble_paths=[str(opposite)],
    )

    # Normalised on the first batch, the opposite member cancels the first: were
    # only the stage's own model scoring (or the raw scores averaged), the mean
    # reward would not be 0.
    assert metrics["rewards/reward_model/mean"] == pytest.approx(0.0, abs=1e-4)
    shift, scale = metrics["score_shift"], metrics["score_scale"]
    assert len(shift) == len(scale) == 2
    assert shift[1] == pytest.approx(-3 * shift[0], rel=1e-3, abs=1e-5)
    assert scale[1] == pytest.approx(3 * scale[0], rel=1e-3)
    saved = json.loads((reporter.run_dir / "score-norm-0.json").read_text())
    assert saved == {"shift": shift, "scale": scale}


@pytest.mark.parametrize("config_class", [grpo.GRPOConfig, rloo.RLOOConfig])
@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ([f"/rm{i}" for i in range(8)], "reward_ensemble_paths holds 8 reward models"),
        ([""], "reward_ensemble_paths must be folder paths, got ['']"),
    ],
)
def test_a_group_stages_ensemble_is_bounded(config_class, paths, message):
    with pytest.raises(ValueError) as error:
        config_from_dict(
            config_class,
            {
                "base_path": "x",
                "reward_model_path": "r",
                "reward_ensemble_paths": paths,
            },
        )
    assert message in str(error.value)
