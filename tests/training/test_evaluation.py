"""Tests for training/evaluation.py: diversity, win rate, KL and the whole policy evaluation."""

from __future__ import annotations

import math

import pytest

from tests.training.ml_data import make_reward_model, prompt_records
from training import evaluation

pytestmark = pytest.mark.usefixtures("one_thread")


def test_distinct_n_counts_unique_ngrams_over_all_ngrams():
    texts = ["a b a b", "a b c"]
    # bigrams: (a b) (b a) (a b) | (a b) (b c) -> 3 distinct of 5
    assert evaluation.distinct_n(texts, 2) == 0.6
    assert evaluation.distinct_n(texts, 1) == 3 / 7


def test_self_bleu_is_one_for_identical_texts_and_lower_for_different_ones():
    same = evaluation.self_bleu(["the cat likes fish"] * 3)
    different = evaluation.self_bleu(
        ["the cat likes fish", "a dog eats seeds", "birds fly high"]
    )
    assert same == pytest.approx(1.0)
    assert different < 0.05


def test_self_bleu_needs_two_texts():
    with pytest.raises(ValueError) as error:
        evaluation.self_bleu(["alone"])
    assert str(error.value) == "self-BLEU needs at least 2 texts, got 1"


def test_win_rate_from_scores_counts_a_tie_as_half():
    result = evaluation.win_rate_from_scores([1.0, 0.0, 2.0, 5.0], [0.0, 1.0, 2.0, 4.0])
    assert result == {"wins": 2, "losses": 1, "ties": 1, "win_rate": 0.625}


def test_distinct_n_is_taken_per_prompt_and_averaged():
    groups = [["a b c", "a b d"], ["x y", "x y"]]
    assert evaluation.mean_distinct_n(groups, 2) == (3 / 4 + 1 / 2) / 2
    with pytest.raises(ValueError, match="at least one group"):
        evaluation.mean_distinct_n([], 2)


def test_reward_win_rate_scores_both_sides_on_the_same_prompts():
    seen = []

    def length_scorer(prompts, responses):
        seen.append(prompts)
        return [float(len(r[0]["content"])) for r in responses]

    result = evaluation.reward_win_rate(
        length_scorer, ["p", "q"], ["long answer", "ab"], ["short", "ab"]
    )
    assert result == {
        "win_rate": 0.75,
        "reward_mean": (11 + 2) / 2,
        "parent_reward_mean": (5 + 2) / 2,
    }
    assert seen == [["p", "q", "p", "q"]]


def test_win_rate_by_judge_cancels_a_judge_that_always_prefers_the_first_answer():
    def first_is_better(prompt, a, b):
        return 1.0

    rate = evaluation.win_rate_by_judge(
        ["p", "q"], ["a1", "a2"], ["b1", "b2"], first_is_better
    )
    assert rate == 0.5


def test_kl_of_a_model_to_itself_is_zero(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from inference.loading import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="left")
    prompts = [row["prompt"] for row in prompt_records(4)]
    kl = evaluation.kl_to_reference(model, model, tokenizer, prompts, max_new_tokens=8)
    assert kl == 0.0


def test_sequence_logprobs_scores_only_the_response_positions(tiny_model_dir):
    """The sum over response tokens, up to the first end token, as a full forward pass
    gives it; the LM head sees only the positions that predict a response token."""
    import torch
    from transformers import AutoModelForCausalLM

    from inference.loading import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="left")
    prompts = [row["prompt"] for row in prompt_records(4)]
    _, ids, width = evaluation.sample(model, tokenizer, prompts, max_new_tokens=8)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    ids[0, width + 2] = eos  # one response ends early: its later tokens do not count
    ids[0, width + 3 :] = pad
    head_rows = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: head_rows.append(args[0].shape[1])
    )
    try:
        got = evaluation.sequence_logprobs(model, ids, width, pad, eos)
    finally:
        hook.remove()
    assert head_rows == [ids.shape[1] - width]

    expected = []
    for row in ids:
        keep = row[:width] != pad
        prompt = row[:width][keep]
        response = row[width:].tolist()
        if eos in response:
            response = response[: response.index(eos) + 1]
        response = [t for t in response if t != pad]
        full = torch.cat([prompt, torch.tensor(response, dtype=row.dtype)])
        with torch.no_grad():
            logits = model(input_ids=full[None]).logits[0].float()
        logps = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
        expected.append(float(logps.gather(-1, full[len(prompt) :, None]).sum()))
    assert got.tolist() == pytest.approx(expected, abs=1e-4)


def test_sequence_logprobs_of_a_model_without_logits_to_keep(tiny_model_dir):
    """A forward that does not take logits_to_keep is scored whole, to the same sums."""
    import torch
    from transformers import AutoModelForCausalLM

    from inference.loading import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="left")

    class Plain(torch.nn.Module):  # a causal LM whose forward knows no logits_to_keep
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, position_ids):
            return self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
            )

    prompts = [row["prompt"] for row in prompt_records(4)]
    _, ids, width = evaluation.sample(model, tokenizer, prompts, max_new_tokens=8)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    got = evaluation.sequence_logprobs(Plain(), ids, width, pad, eos)
    want = evaluation.sequence_logprobs(model, ids, width, pad, eos)
    assert got.tolist() == pytest.approx(want.tolist(), abs=1e-5)


def evaluate_against_itself(tiny_model_dir, reward_dir, **options) -> dict:
    """Evaluate the tiny model against itself on 4 prompts, scored by `reward_dir`."""
    return evaluation.evaluate_policy(
        (str(tiny_model_dir), ""),
        (str(tiny_model_dir), ""),
        [row["prompt"] for row in prompt_records(4)],
        reward_model_path=str(reward_dir),
        max_new_tokens=8,
        diversity_samples=2,
        **options,
    )


def test_evaluate_policy_reports_win_rate_kl_length_and_diversity(
    tiny_model_dir, tmp_path
):
    reward_dir = make_reward_model(tiny_model_dir, tmp_path / "rm", steps=2)
    metrics = evaluate_against_itself(
        tiny_model_dir, reward_dir, judge=lambda p, a, b: 0.5
    )
    assert sorted(metrics) == sorted(
        [
            "prompts",
            "win_rate",
            "reward_mean",
            "parent_reward_mean",
            "judge_win_rate",
            "kl_to_parent",
            "response_length",
            "distinct_1",
            "distinct_2",
            "self_bleu",
            "parent_distinct_1",
            "parent_distinct_2",
            "parent_self_bleu",
        ]
    )
    # The same model with the same seed writes the same responses: all ties.
    assert metrics["win_rate"] == 0.5
    assert metrics["kl_to_parent"] == 0.0
    assert metrics["distinct_2"] == metrics["parent_distinct_2"]
    assert math.isfinite(metrics["self_bleu"]) is True


def test_bootstrap_over_prompts_covers_the_true_win_rate_about_95_percent_of_the_time():
    # Simulated data: prompts from a population whose mean win probability is known
    # (each prompt its own p, four correlated samples each, as the loop evaluates).
    import random

    rng = random.Random(7)
    truth = 0.7  # mean of Beta(7, 3)
    covered = 0
    runs = 200
    for run in range(runs):
        per_prompt = []
        for _ in range(90):
            p = rng.betavariate(7, 3)
            per_prompt.append(sum(rng.random() < p for _ in range(4)) / 4)
        low, high = evaluation.bootstrap_interval(per_prompt, resamples=400, seed=run)
        assert low <= sum(per_prompt) / len(per_prompt) <= high
        covered += low <= truth <= high
    assert 0.90 <= covered / runs <= 0.99


def test_bootstrap_interval_refuses_nothing_to_resample():
    with pytest.raises(ValueError, match="at least one value"):
        evaluation.bootstrap_interval([])


def test_per_prompt_figures_average_each_prompts_samples():
    def judge(prompt, a, b):
        return 1.0 if a > b else 0.0 if a < b else 0.5

    wins = evaluation.per_prompt_win_rates(
        ["p", "q"], [["b", "a"], ["a", "a"]], [["a", "a"], ["a", "b"]], judge
    )
    assert wins == [0.75, 0.25]
    accuracy = evaluation.per_prompt_accuracy(
        ["p", "q"], [["right", "wrong"], ["right", "right"]], lambda p, r: r == "right"
    )
    assert accuracy == [0.5, 1.0]


def test_evaluate_policy_scores_with_a_reward_stages_whole_ensemble(
    tiny_model_dir, tmp_path
):
    from tests.training.ml_data import make_opposite_reward_model

    reward_dir = make_reward_model(tiny_model_dir, tmp_path / "rm", steps=2)
    make_opposite_reward_model(reward_dir, reward_dir / "members" / "1")
    metrics = evaluate_against_itself(tiny_model_dir, reward_dir)
    # Normalised, the opposite member cancels the first on every response; the first
    # member alone would give its raw scores' mean.
    assert metrics["reward_mean"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["parent_reward_mean"] == pytest.approx(0.0, abs=1e-5)
