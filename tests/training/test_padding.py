"""training/padding.py: right-padded CPU batches run in groups of like length, to the same numbers."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
import torch

from training import padding


def brute_force(lengths: list[int], group_cost: int) -> int:
    """The least cost over every split of the length-sorted rows into runs."""
    ordered = sorted(lengths)
    n = len(ordered)
    best = None
    for cuts in itertools.product((False, True), repeat=n - 1):
        groups, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                groups.append(ordered[start:i])
                start = i
        groups.append(ordered[start:])
        cost = sum(len(g) * max(g) + group_cost for g in groups)
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("group_cost", [0, 5, 40, 1000])
def test_length_groups_are_the_cheapest_split(group_cost):
    rng = random.Random(group_cost)
    for _ in range(30):
        lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 9))]
        groups = padding.length_groups(lengths, group_cost)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert padding.padded_cost(lengths, groups, group_cost) == brute_force(
            lengths, group_cost
        )


def test_length_groups_extremes():
    lengths = [5, 9, 5, 7]
    assert padding.length_groups(lengths, 10_000) == [[0, 2, 3, 1]]
    assert padding.length_groups(lengths, 0) == [[0, 2], [3], [1]]
    assert padding.length_groups([], 3) == []


def test_right_padded_lengths():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    assert padding.right_padded_lengths(mask) == [3, 1, 4]
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert padding.right_padded_lengths(left) is None
    holed = torch.tensor([[1, 0, 1], [1, 1, 1]])
    assert padding.right_padded_lengths(holed) is None
    empty_row = torch.tensor([[0, 0, 0], [1, 1, 1]])
    assert padding.right_padded_lengths(empty_row) is None
    assert padding.right_padded_lengths(None) is None


def test_group_cost_is_counted_in_the_models_tokens():
    # SmolLM2-135M groups at about 30 tokens a group; the demo's ~1M model never does.
    assert 20 <= padding.group_cost_tokens(139_000_000) <= 40
    assert padding.group_cost_tokens(1_000_000) > 2_000


def batch(vocab: int, lengths: list[int]):
    """Right-padded rows of the given lengths; labels on each row's second half."""
    generator = torch.Generator().manual_seed(0)
    width = max(lengths)
    input_ids = torch.randint(3, vocab, (len(lengths), width), generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    labels = torch.full_like(input_ids, -100)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        input_ids[row, n:] = 0
        labels[row, n // 2 : n] = input_ids[row, n // 2 : n]
    return input_ids, mask, labels


def lora_model(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    add_fused_lm_head(model)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, config)
    # A trained adapter, not a zero one: LoRA's B starts at zero.
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.05)
    return model


def log_probs_and_grads(model, input_ids, mask, labels):
    model.zero_grad()
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        labels=labels,
        fused_lm_head=True,
        use_cache=False,
    )
    out.log_probs.sum().backward()
    grads = {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }
    return out.log_probs.detach(), grads


def count_calls(model) -> list[tuple[int, int]]:
    """Record the shape of every batch the wrapped decoder body runs (its original
    forward, which the wrapper looks up on each call)."""
    body = model.get_base_model().base_model
    original = getattr(body, padding._WRAPPED)
    calls: list[tuple[int, int]] = []

    def counted(*args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    setattr(body, padding._WRAPPED, counted)
    return calls


def test_trimmed_batch_gives_the_padded_batchs_numbers(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(padding, "TOTALS", Counter())
    model = lora_model(tiny_model_dir)
    lengths = [12, 30, 13, 29, 6, 31, 12, 20]
    input_ids, mask, labels = batch(model.config.vocab_size, lengths)
    padded, padded_grads = log_probs_and_grads(model, input_ids, mask, labels)

    assert padding.trim_padding(model, group_cost=8) is True
    assert padding.trim_padding(model, group_cost=8) is False  # already wrapped
    calls = count_calls(model)
    trimmed, trimmed_grads = log_probs_and_grads(model, input_ids, mask, labels)

    # Grouped: rows of like length together, each group only as wide as its longest row.
    groups = padding.length_groups(lengths, 8)
    assert sorted(calls) == sorted((len(g), max(lengths[i] for i in g)) for g in groups)
    assert len(calls) > 1
    assert sum(r * w for r, w in calls) < 0.8 * len(lengths) * max(lengths)
    torch.testing.assert_close(trimmed, padded, rtol=1e-5, atol=1e-5)
    assert trimmed_grads.keys() == padded_grads.keys() and padded_grads
    for name, grad in padded_grads.items():
        torch.testing.assert_close(trimmed_grads[name], grad, rtol=1e-4, atol=1e-6)
    computed = sum(r * w for r, w in calls)
    assert padding.summary() == (
        f"padding: 1 of 1 forward passes ran in groups of like length; "
        f"{computed} of {len(lengths) * max(lengths)} batch positions computed "
        f"({computed / (len(lengths) * max(lengths)):.0%})"
    )


def test_what_grouping_cannot_serve_runs_as_it_is(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(padding, "TOTALS", Counter())
    model = lora_model(tiny_model_dir)
    padding.trim_padding(model, group_cost=8)
    calls = count_calls(model)
    vocab = model.config.vocab_size
    # Left padding (as generation pads): one call, the whole batch.
    input_ids, mask, labels = batch(vocab, [12, 30, 6, 31])
    left = mask.flip(1)
    with torch.no_grad():
        model(input_ids=input_ids.flip(1), attention_mask=left, use_cache=False)
    # Rows of one length: nothing to trim.
    input_ids, mask, labels = batch(vocab, [20, 20, 20])
    log_probs_and_grads(model, input_ids, mask, labels)
    assert calls == [(4, 31), (3, 20)]
    assert padding.summary().startswith("padding: 0 of 2 forward passes")


def test_a_batch_rerun_whole_is_not_counted_as_grouped(tiny_model_dir, monkeypatch):
    # A body that returns more than its last hidden states (here made to return every
    # layer's) has the batch run whole by the wrapper, and its line says so.
    monkeypatch.setattr(padding, "TOTALS", Counter())
    model = lora_model(tiny_model_dir)
    padding.trim_padding(model, group_cost=8)
    body = model.get_base_model().base_model
    original = getattr(body, padding._WRAPPED)
    calls = []

    def every_layer(**kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return original(**{**kwargs, "output_hidden_states": True})

    setattr(body, padding._WRAPPED, every_layer)
    lengths = [12, 30, 13, 29, 6, 31, 12, 20]
    input_ids, mask, _ = batch(model.config.vocab_size, lengths)
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=mask, use_cache=False)
    whole = len(lengths) * max(lengths)
    assert calls[-1] == (len(lengths), max(lengths)) and len(calls) == 2
    assert padding.summary() == (
        f"padding: 0 of 1 forward passes ran in groups of like length; "
        f"{whole} of {whole} batch positions computed (100%)"
    )


def test_the_demo_sized_model_keeps_one_call_a_batch(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    assert padding.trim_padding(model) is True  # the default cost: the model's size
    calls = count_calls(model)
    input_ids, mask, labels = batch(model.config.vocab_size, [12, 30, 6, 31])
    log_probs_and_grads(model, input_ids, mask, labels)
    assert calls == [(4, 31)]


def test_an_encoder_is_left_as_it_is():
    """A group's shorter rows keep padding after their tokens: only causal attention
    never reads it, so a bidirectional encoder is not wrapped."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    model = BertForSequenceClassification(config)
    assert padding.trim_padding(model, group_cost=1) is False
    assert not hasattr(model.base_model, padding._WRAPPED)
