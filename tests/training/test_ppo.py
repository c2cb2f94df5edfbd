"""Tests for training/ppo.py: our PPO trains, logs, checkpoints, resumes, stops and raises the reward."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest

from tests.training.ml_data import (
    demonstration_records,
    make_opposite_reward_model,
    make_reward_model,
    prompt_records,
    write_jsonl,
)
from training import ppo
from training.progress import STOP_FILE, Reporter

pytestmark = pytest.mark.usefixtures("one_thread")

LOGGED = {
    "score",
    "reward",
    "kl",
    "non_score_reward",
    "response_length",
    "eos_fraction",
    "kl_coef",
    "learning_rate",
    "policy_loss",
    "value_loss",
    "entropy",
    "clipfrac",
    "approx_kl",
}


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_reward_model(tiny_model_dir, tmp_path_factory.mktemp("ppo-rm") / "rm")


def run(tmp_path: Path, name: str, config: ppo.PPOConfig, **kwargs) -> dict:
    data = write_jsonl(tmp_path / "prompts.jsonl", prompt_records(16))
    reporter = Reporter(tmp_path / name)
    return ppo.train(
        config,
        data_path=data,
        output_dir=reporter.output_dir,
        reporter=reporter,
        **kwargs,
    )


def small(tiny_model_dir: Path, reward_dir: Path, **options) -> ppo.PPOConfig:
    defaults = dict(
        base_path=str(tiny_model_dir),
        reward_model_path=str(reward_dir),
        max_steps=2,
        batch_size=4,
        mini_batch_size=2,
        ppo_epochs=2,
        max_new_tokens=6,
    )
    return ppo.PPOConfig(**{**defaults, **options})


def test_ppo_trains_all_weights_logs_every_metric_and_saves_a_loadable_model(
    tiny_model_dir, reward_dir, tmp_path
):
    import torch
    from transformers import AutoModelForCausalLM

    config = small(tiny_model_dir, reward_dir)
    metrics = run(tmp_path, "full", config)

    assert metrics["steps"] == 2
    assert metrics["stopped"] == 0.0
    assert metrics["bf16"] == 0.0  # the precision it ran in, as every stage records
    assert math.isfinite(metrics["policy_loss"]) is True
    lines = [
        json.loads(x)
        for x in (tmp_path / "full" / "progress.jsonl").read_text().splitlines()
    ]
    assert [line["step"] for line in lines] == [1, 2]
    assert (LOGGED <= set(lines[0])) is True
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(
        tmp_path / "full" / "output"
    ).state_dict()
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(before[name], after[name]) is False
    saved = json.loads(
        (tmp_path / "full" / "output" / "training_config.json").read_text()
    )
    assert saved == config.to_dict()


def test_ppo_with_lora_saves_an_adapter_and_starts_at_zero_kl(
    tiny_model_dir, reward_dir, tmp_path
):
    config = small(tiny_model_dir, reward_dir, use_lora=True, max_steps=1)
    run(tmp_path, "lora", config)

    first = json.loads(
        (tmp_path / "lora" / "progress.jsonl").read_text().splitlines()[0]
    )
    # The adapter starts at zero, so the policy equals its reference on the first rollout.
    assert first["kl"] == 0.0
    assert (tmp_path / "lora" / "output" / "adapter_config.json").exists() is True


def test_ppo_resumes_from_its_checkpoint_with_the_next_update(
    tiny_model_dir, reward_dir, tmp_path
):
    config = small(tiny_model_dir, reward_dir, save_steps=2)
    run(tmp_path, "a", config)
    checkpoint = Reporter(tmp_path / "a").last_checkpoint()
    assert checkpoint.name == "checkpoint-2"

    config.max_steps = 3
    metrics = run(tmp_path, "b", config, resume_from=checkpoint)

    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "b" / "progress.jsonl").read_text().splitlines()
    ]
    assert steps == [3]
    assert metrics["steps"] == 3


def test_ppo_stops_when_asked_checkpoints_and_saves_no_artifact(
    tiny_model_dir, reward_dir, tmp_path
):
    (tmp_path / "stop").mkdir()
    (tmp_path / "stop" / STOP_FILE).touch()
    metrics = run(tmp_path, "stop", small(tiny_model_dir, reward_dir, max_steps=20))

    assert metrics["stopped"] == 1.0
    assert metrics["steps"] == 1
    assert metrics["bf16"] == 0.0
    assert (tmp_path / "stop" / "output").exists() is False
    assert Reporter(tmp_path / "stop").last_checkpoint().name == "checkpoint-1"


def spy_on_scores(monkeypatch) -> list[tuple[list, list[float]]]:
    """Record each call of the reward model through PPO: its prompts and raw scores."""
    from inference import scoring

    calls: list[tuple[list, list[float]]] = []
    real = scoring.score

    def recording(model, tokenizer, prompts, responses, **kwargs):
        scores = real(model, tokenizer, prompts, responses, **kwargs)
        calls.append((list(prompts), list(scores)))
        return scores

    monkeypatch.setattr(scoring, "score", recording)
    return calls


def test_ppo_normalises_scores_on_the_starting_policys_samples(
    tiny_model_dir, reward_dir, tmp_path, monkeypatch
):
    import statistics

    calls = spy_on_scores(monkeypatch)
    config = small(
        tiny_model_dir,
        reward_dir,
        max_steps=1,
        score_norm_batches=2,
        missing_eos_penalty=0.0,
    )
    metrics = run(tmp_path, "norm", config)

    # Two batches of the starting policy's samples, then the one update's.
    assert len(calls) == 3
    start = calls[0][1] + calls[1][1]
    assert metrics["score_shift"] == pytest.approx(statistics.fmean(start))
    assert metrics["score_scale"] == pytest.approx(statistics.pstdev(start))
    raw = calls[2][1]
    first = json.loads(
        (tmp_path / "norm" / "progress.jsonl").read_text().splitlines()[0]
    )
    expected = statistics.fmean(
        (x - metrics["score_shift"]) / metrics["score_scale"] for x in raw
    )
    assert first["score"] == pytest.approx(expected, abs=1e-5)

    # The update's prompts are those a run without normalisation takes first.
    update_prompts = calls[2][0]
    calls.clear()
    run(tmp_path, "raw", small(tiny_model_dir, reward_dir, max_steps=1))
    assert len(calls) == 1
    assert calls[0][0] == update_prompts


def test_ppo_resumed_keeps_the_score_statistics_it_started_with(
    tiny_model_dir, reward_dir, tmp_path, monkeypatch
):
    calls = spy_on_scores(monkeypatch)
    config = small(tiny_model_dir, reward_dir, save_steps=2, score_norm_batches=2)
    first = run(tmp_path, "a", config)
    assert len(calls) == 4  # two batches for the statistics, two updates

    calls.clear()
    config.max_steps = 3
    resumed = run(
        tmp_path, "b", config, resume_from=Reporter(tmp_path / "a").last_checkpoint()
    )

    assert len(calls) == 1  # the one new update; no new statistics
    assert resumed["score_shift"] == first["score_shift"]
    assert resumed["score_scale"] == first["score_scale"]


def test_ppo_stopped_reports_the_score_statistics_it_used(
    tiny_model_dir, reward_dir, tmp_path
):
    (tmp_path / "stop").mkdir()
    (tmp_path / "stop" / STOP_FILE).touch()
    config = small(tiny_model_dir, reward_dir, max_steps=5, score_norm_batches=1)
    metrics = run(tmp_path, "stop", config)

    assert metrics["stopped"] == 1.0
    assert metrics["score_scale"] > 0
    assert "score_shift" in metrics


@pytest.fixture(scope="module")
def opposite_reward_dir(reward_dir, tmp_path_factory) -> Path:
    return make_opposite_reward_model(
        reward_dir, tmp_path_factory.mktemp("ppo-rm-opposite") / "rm"
    )


def run_ensemble(
    tmp_path,
    name,
    tiny_model_dir,
    reward_dir,
    opposite_reward_dir,
    monkeypatch,
    **options,
) -> tuple[list, dict, dict]:
    """Run one PPO update scored by the reward model and its opposite; return the
    recorded reward-model calls, the final metrics and the first progress line."""
    calls = spy_on_scores(monkeypatch)
    config = small(
        tiny_model_dir,
        reward_dir,
        reward_ensemble_paths=[str(opposite_reward_dir)],
        max_steps=1,
        missing_eos_penalty=0.0,
        **options,
    )
    metrics = run(tmp_path, name, config)
    logged = json.loads(
        (tmp_path / name / "progress.jsonl").read_text().splitlines()[0]
    )
    return calls, metrics, logged


def test_an_ensembles_members_are_normalised_each_on_its_own_then_averaged(
    tiny_model_dir, reward_dir, opposite_reward_dir, tmp_path, monkeypatch
):
    import statistics

    calls, metrics, logged = run_ensemble(
        tmp_path,
        "ensemble",
        tiny_model_dir,
        reward_dir,
        opposite_reward_dir,
        monkeypatch,
        score_norm_batches=1,
    )

    # Each member scores the statistics batch, then the update's batch.
    assert len(calls) == 4
    first, opposite = calls[0][1], calls[1][1]
    assert opposite == pytest.approx([-3 * x for x in first], abs=1e-4)
    assert metrics["score_shift"] == pytest.approx(
        [statistics.fmean(first), statistics.fmean(opposite)]
    )
    assert metrics["score_scale"] == pytest.approx(
        [statistics.pstdev(first), statistics.pstdev(opposite)]
    )
    # Normalised, the opposite member cancels the first whatever its scale.
    assert logged["score"] == pytest.approx(0.0, abs=1e-4)


def test_an_ensemble_without_normalisation_averages_the_raw_scores(
    tiny_model_dir, reward_dir, opposite_reward_dir, tmp_path, monkeypatch
):
    import statistics

    calls, metrics, logged = run_ensemble(
        tmp_path,
        "raw-ensemble",
        tiny_model_dir,
        reward_dir,
        opposite_reward_dir,
        monkeypatch,
    )

    assert len(calls) == 2
    expected = statistics.fmean(
        (a + b) / 2 for a, b in zip(calls[0][1], calls[1][1], strict=True)
    )
    assert logged["score"] == pytest.approx(expected, abs=1e-5)
    assert "score_shift" not in metrics


def test_ensemble_score_normalises_each_member_and_leaves_one_model_as_it_is():
    import torch

    raw = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    combined = ppo.ensemble_score(raw, [2.0, 20.0], [1.0, 10.0])
    assert combined.tolist() == pytest.approx([-1.0, 1.0])
    single = ppo.ensemble_score(torch.tensor([1.0, 3.0]), 2.0, 0.5)
    assert single.tolist() == pytest.approx([-2.0, 2.0])


def test_prompt_rows_keep_each_prompt_once_and_wrap_strings_as_user_messages(tmp_path):
    rows = [
        {"prompt": "hi"},
        {"prompt": [{"role": "user", "content": "hi"}]},
        {"prompt": "yo"},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert ppo.prompt_rows(path) == [
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "yo"}],
    ]


def test_masked_whiten_gives_mean_zero_and_unit_variance_over_the_mask():
    import torch

    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    white = ppo.masked_whiten(values, mask)
    assert float(ppo.masked_mean(white, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(ppo.masked_mean(white**2, mask)) == pytest.approx(1.0, abs=1e-4)


def test_position_ids_skip_left_padding():
    import torch

    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert ppo.position_ids_for(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_rate": -1}, "learning_rate must be > 0, got -1"),
        (
            {"batch_size": 6, "mini_batch_size": 4},
            "batch_size must be a multiple of mini_batch_size, got 6 and 4",
        ),
        ({"lam": 1.5}, "lam must be in [0, 1], got 1.5"),
        ({"score_norm_batches": -1}, "score_norm_batches must be >= 0, got -1"),
        (
            {"reward_ensemble_paths": [f"/rm{i}" for i in range(8)]},
            "reward_ensemble_paths holds 8 reward models; an ensemble has at most 8",
        ),
        ({"reward_ensemble_paths": [""]}, "reward_ensemble_paths must be folder paths"),
        ({"kl_coeff": 0.1}, "unknown PPOConfig option(s) ['kl_coeff']"),
    ],
)
def test_ppo_config_rejects_bad_values_with_a_message_naming_them(options, message):
    with pytest.raises(ValueError) as error:
        ppo.PPOConfig.from_dict({"base_path": "x", **options})
    assert message in str(error.value)


@pytest.mark.slow
def test_ppo_raises_the_reward_model_score_by_at_least_one_point(
    tiny_model_dir, tmp_path
):
    from tests.training.ml_data import preference_records
    from training import reward, sft

    # An SFT policy that names a random food; a reward model that prefers fish
    # (+1.5 for fish, -1.5 otherwise on this seed).
    sft_run = Reporter(tmp_path / "sft")
    sft.train(
        sft.SFTConfig(base_path=str(tiny_model_dir), max_steps=150, learning_rate=3e-3),
        data_path=write_jsonl(tmp_path / "demos.jsonl", demonstration_records(256)),
        output_dir=sft_run.output_dir,
        reporter=sft_run,
    )
    rm_run = Reporter(tmp_path / "rm")
    reward.train(
        reward.RewardConfig(
            base_path=str(tiny_model_dir), num_train_epochs=3, learning_rate=2e-3
        ),
        data_path=write_jsonl(tmp_path / "pairs.jsonl", preference_records(200)),
        output_dir=rm_run.output_dir,
        reporter=rm_run,
    )

    config = ppo.PPOConfig(
        base_path=str(sft_run.output_dir),
        reward_model_path=str(rm_run.output_dir),
        max_steps=15,
        batch_size=32,
        mini_batch_size=16,
        max_new_tokens=20,
    )
    run(tmp_path, "ppo", config)

    scores = [
        json.loads(x)["score"]
        for x in (tmp_path / "ppo" / "progress.jsonl").read_text().splitlines()
    ]
    start, end = scores[0], sum(scores[-3:]) / 3
    # Measured: -0.34 -> about +1.4 on this seed (fish in 41% -> 97-100% of responses).
    assert end - start >= 1.0, scores


def test_rollout_samples_match_the_recomputed_log_probabilities(tiny_model_dir):
    # A real model ships sampling defaults in generation_config.json; a rollout that
    # let them in would sample from another distribution than the one PPO's
    # log-probabilities are recomputed from.
    import torch
    from transformers import GenerationConfig

    from inference.loading import load_for_generation

    model, tokenizer = load_for_generation(str(tiny_model_dir), device="cpu")
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.3, top_k=5, top_p=0.5, repetition_penalty=3.0
    )
    torch.manual_seed(0)
    query = torch.tensor([tokenizer("The red cat has")["input_ids"]] * 2)
    mask = torch.ones_like(query)
    out = ppo.sample_responses(
        model,
        query,
        mask,
        temperature=0.7,
        max_new_tokens=6,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=-1,  # never stop early: every step is compared
        output_scores=True,
    )
    responses = out.sequences[:, query.shape[1] :]  # (batch, resp)
    sampled = (
        torch.stack(
            [torch.log_softmax(step.float(), dim=-1) for step in out.scores], dim=1
        )
        .gather(-1, responses.unsqueeze(-1))
        .squeeze(-1)
    )
    recomputed, _ = ppo.response_logprobs(
        model, out.sequences, torch.ones_like(out.sequences), query.shape[1], 0.7
    )
    assert torch.allclose(sampled, recomputed, atol=1e-4)


def test_rollout_samples_are_generates_own_while_ended_rows_stop(tiny_model_dir):
    # Rollouts drop rows that have ended (inference.generation.drop_finished_rows):
    # the samples must still be the ones plain generate draws from the same seed.
    import torch

    from inference.generation import _RowDropper
    from inference.loading import load_for_generation

    model, tokenizer = load_for_generation(str(tiny_model_dir), device="cpu")
    query = torch.tensor([tokenizer("The red cat has")["input_ids"]] * 16)
    mask = torch.ones_like(query)
    sampling = dict(temperature=1.0, max_new_tokens=12, pad_token_id=0)

    def draw(eos, seed):
        torch.manual_seed(seed)
        return ppo.sample_responses(model, query, mask, eos_token_id=eos, **sampling)

    # The end token: the one most often sampled, so that rows end at many steps.
    plain = draw(-1, 0).sequences[:, query.shape[1] :]
    eos = int(plain[:, 1:].flatten().mode().values)

    rows = []
    forward = type(model).forward

    def counting(self, *args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return forward(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(model), "forward", counting)
        dropped = draw(eos, 1).sequences
        assert min(rows) < 16, rows  # rows ended and stopped running
        assert not isinstance(model.forward, _RowDropper)  # put back after the call
        with patch.context() as plain_only:
            plain_only.setattr(
                ppo, "drop_finished_rows", lambda *_: contextlib.nullcontext()
            )
            rows.clear()
            every = draw(eos, 1).sequences
            assert set(rows) == {16}
    assert torch.equal(dropped, every)


class _Planted:
    """A pickled object that writes a file when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_checkpoint_cannot_run_code_when_a_stage_resumes(tmp_path):
    import pickle

    import torch

    marker = tmp_path / "ran.txt"
    (tmp_path / ppo.STATE_FILE).write_bytes(pickle.dumps({"step": _Planted(marker)}))
    with pytest.raises(pickle.UnpicklingError):
        ppo.load_state(tmp_path)
    assert marker.exists() is False
    # A state of tensors, numbers and RNG states still loads.
    import random

    torch.save(
        {"step": 3, "python_rng": random.Random(0).getstate(), "t": torch.ones(2)},
        tmp_path / ppo.STATE_FILE,
    )
    assert ppo.load_state(tmp_path)["step"] == 3
