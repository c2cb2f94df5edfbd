"""Training batches without their padding, on the CPU: rows of like length run together.

A trainer pads each batch to its longest row. On a GPU the padded positions ride along
in the same kernels; on a CPU every one costs what a real token costs, in each layer,
forward and backward. A DPO batch on SmolLM2 stacks 16 rows (8 pairs, chosen and
rejected) whose prompts and answers vary in length, so a good share of its positions
are padding.

`trim_padding(model)` wraps the forward of a causal LM's decoder body (what TRL's fused LM
head calls, and what the model's own forward calls): on the CPU, a right-padded batch
(every row's real tokens first, as TRL's DPO and SFT collators pad) is split into groups
of rows of like length (`length_groups`), each group trimmed to its own longest row
and run without a mask, and the hidden states put back in the batch's shape, zeros at
the padded positions. With causal attention a real token never sees the padding after
it, so every real position's hidden state is what the padded batch computes, to float
rounding (tests/training/test_padding.py); the padded positions carry no label.

Anything else runs the original forward as it is: left padding, a cache, embeddings
passed in, attention or hidden-state outputs asked for, a GPU, or a batch that grouping
would not make cheaper by at least `MIN_SAVING`. A group costs `group_cost` tokens on
top of its rows (the calls of every layer, and matrix products too small to run at full
speed), which for a small model is many tokens: the cost model counts it in tokens of
the model at hand.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from typing import Any

logger = logging.getLogger(__name__)

# A group's fixed cost in seconds of one core (the calls of every layer, forward and
# backward, and matrix products of fewer rows running below full speed), set against
# the model's cost per token (6 flops a parameter, at CPU_FLOPS) to give it in tokens:
# about 30 on SmolLM2-135M, where 16 to 64 beat both 0 and 200 on a DPO batch of 16
# rows (/bench/cpu_padding.py); thousands on the demo's small models, which so stay
# one call a batch.
GROUP_SECONDS = 0.5
CPU_FLOPS = 50e9
# Group only where that makes the batch at least this much cheaper.
MIN_SAVING = 0.05
# Batches with more rows than this are left as they are (the grouping is quadratic).
MAX_ROWS = 512

_WRAPPED = "_trim_padding_original_forward"
# This process's wrapped forward passes: "passes", "grouped", and the batches'
# positions ("positions") against those computed ("computed"); see `summary`.
TOTALS: Counter = Counter()
# Arguments under which the wrapper steps aside (their value other than None or False).
_STEP_ASIDE = (
    "inputs_embeds",
    "past_key_values",
    "position_ids",
    "cache_position",
    "output_attentions",
    "output_hidden_states",
    "output_router_logits",
    "use_cache",
)


def group_cost_tokens(parameters: int) -> int:
    """Return a group's fixed cost in tokens of a model of `parameters` parameters."""
    per_token = 6 * max(parameters, 1) / CPU_FLOPS
    return max(1, round(GROUP_SECONDS / per_token))


def length_groups(lengths: list[int], group_cost: int) -> list[list[int]]:
    """Return the rows (indices into `lengths`) grouped so that the positions each
    group pads to (its rows times its longest row) plus `group_cost` a group are
    fewest; each group holds rows adjacent in length order, shortest group first.
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    n = len(order)
    # best[j]: least cost of the first j rows in length order; cut[j]: where the
    # last group of that best split starts.
    best = [0] + [0] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        best[j], cut[j] = min(
            (best[i] + (j - i) * longest + group_cost, i) for i in range(j)
        )
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def padded_cost(lengths: list[int], groups: list[list[int]], group_cost: int) -> int:
    """Return the positions `groups` pad to, plus `group_cost` a group."""
    return sum(len(g) * max(lengths[i] for i in g) + group_cost for g in groups)


def right_padded_lengths(attention_mask) -> list[int] | None:
    """Return each row's length if the 2-D `attention_mask` pads on the right only
    (ones, then zeros; every row at least one token), else None."""
    import torch

    if attention_mask is None or attention_mask.dim() != 2:
        return None
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    expected = positions.unsqueeze(0) < lengths.unsqueeze(1)
    if int(lengths.min()) < 1 or not torch.equal(attention_mask.bool(), expected):
        return None
    return [int(x) for x in lengths]


def trim_padding(model: Any, group_cost: int | None = None) -> bool:
    """Wrap the forward of `model`'s decoder body to run right-padded CPU batches
    in groups of like length; return whether it did (a model without a decoder body
    it knows, or one already wrapped, is left as it is).

    `group_cost` is a group's cost in tokens (default: `group_cost_tokens` of the
    model's size). The original forward stays on the body as `_WRAPPED`.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(inner, "base_model", None)
    if body is None or body is inner or not hasattr(body, "forward"):
        logger.info(
            "trim_padding: %s has no decoder body; left as it is", type(model).__name__
        )
        return False
    # Within a group the shorter rows keep padding after their tokens, which only
    # causal attention never reads: a causal LM, one that generates, is what it serves.
    can_generate = getattr(inner, "can_generate", None)
    if not callable(can_generate) or not can_generate():
        logger.info(
            "trim_padding: %s is not a causal LM; left as it is", type(model).__name__
        )
        return False
    if hasattr(body, _WRAPPED):
        return False
    if group_cost is None:
        group_cost = group_cost_tokens(sum(p.numel() for p in model.parameters()))

    @functools.wraps(body.forward)
    def forward(*args: Any, **kwargs: Any) -> Any:
        original = getattr(body, _WRAPPED)
        plan = _plan(args, kwargs, group_cost)
        input_ids = kwargs.get("input_ids")
        positions = input_ids.numel() if input_ids is not None else 0
        TOTALS.update(passes=1, positions=positions)
        if plan is None:
            TOTALS.update(computed=positions)
            return original(*args, **kwargs)
        _, lengths, groups = plan
        output, grouped = _grouped_forward(original, kwargs, *plan)
        if grouped:
            TOTALS.update(grouped=1, computed=padded_cost(lengths, groups, 0))
        else:
            TOTALS.update(computed=positions)
        return output

    setattr(body, _WRAPPED, body.forward)
    body.forward = forward
    return True


def summary() -> str | None:
    """Return a line on this process's wrapped forward passes, or None if none ran."""
    if not TOTALS["passes"]:
        return None
    share = TOTALS["computed"] / max(TOTALS["positions"], 1)
    return (
        f"padding: {TOTALS['grouped']} of {TOTALS['passes']} forward passes ran in "
        f"groups of like length; {TOTALS['computed']:,} of {TOTALS['positions']:,} "
        f"batch positions computed ({share:.0%})"
    )


def _plan(args: tuple, kwargs: dict, group_cost: int):
    """Return (input_ids, lengths, groups) where grouping applies, else None."""
    input_ids = kwargs.get("input_ids")
    if args or input_ids is None or input_ids.device.type != "cpu":
        return None
    if any(kwargs.get(name) not in (None, False) for name in _STEP_ASIDE):
        return None
    if input_ids.dim() != 2 or input_ids.size(0) > MAX_ROWS:
        return None
    lengths = right_padded_lengths(kwargs.get("attention_mask"))
    if lengths is None:
        return None
    whole = len(lengths) * input_ids.size(1) + group_cost
    # Two groups or more cost at least every row's own length and two group costs:
    # where that saves too little (the demo's small models), skip the search.
    if sum(lengths) + 2 * group_cost > (1 - MIN_SAVING) * whole:
        return None
    groups = length_groups(lengths, group_cost)
    if padded_cost(lengths, groups, group_cost) > (1 - MIN_SAVING) * whole:
        return None
    return input_ids, lengths, groups


def _grouped_forward(original, kwargs: dict, input_ids, lengths, groups):
    """Run `original` on each group, trimmed and unmasked; return (the batch's output
    with the hidden states back in the batch's row order and width, True), or (the
    output of the batch run whole, False) where the body returns more than them."""
    import torch
    import torch.nn.functional as F

    width = input_ids.size(1)
    rest = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
    parts, rows, first = [], [], None
    for group in groups:
        longest = max(lengths[i] for i in group)
        index = torch.tensor(group, device=input_ids.device)
        out = original(
            input_ids=input_ids[index, :longest], attention_mask=None, **rest
        )
        if list(out.keys()) != ["last_hidden_state"]:
            # Outputs beside the hidden states (a config asking for them): as it is.
            return original(**kwargs), False
        first = first if first is not None else out
        hidden = out.last_hidden_state
        parts.append(F.pad(hidden, (0, 0, 0, width - longest)))
        rows.extend(group)
    # Back in the batch's row order: the stacked rows' order, inverted.
    inverse = torch.tensor(rows, device=input_ids.device).argsort()
    first.last_hidden_state = torch.cat(parts, dim=0)[inverse]
    return first, True
