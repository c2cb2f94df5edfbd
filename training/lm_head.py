"""TRL's fused LM head, made lean where it has no Triton (the CPU).

TRL (1.16) computes every trainer's per-token log-probabilities with a chunked LM
head (`trl.kernels.chunked_logprob`). On a GPU a Triton kernel folds each
`[tokens, 32768]` tile of logits in one pass, and only the positions with a label
are scored. Without Triton, which on our machines means on the CPU, two things make it
the larger half of a DPO step (measured on SmolLM2-135M, one AVX2 core: 28 of 56 s):

- every position is scored, prompt and padding included (TRL keeps the tile shapes
  fixed for compilers such as Neuron's); a DPO batch's labels are about half of it;
- the torch fallback folds a whole tile at once, a dozen passes that each write a
  new tile-sized tensor (hundreds of MB), such as multiplying by a scale of 1.0.

`use_lean_cpu_head()` keeps TRL's autograd function, its tiling and its matrix
products, and replaces only those two: on the CPU it scores the labelled positions
(TRL's own "compact" path on Triton devices), and folds each tile in row blocks that
stay in cache, in place. The results equal TRL's own to float32 rounding
(tests/training/test_lm_head.py); a DPO step on that core goes from 52 to 30 s.

The training child (`training.stage.run`) installs it before every stage. It
patches TRL's module attributes only where their signatures are the ones written
for (trl 1.16); with another TRL it logs and leaves TRL as it is.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

logger = logging.getLogger(__name__)

# Rows of a logits tile folded at a time: 64 x 32768 float32 is 8 MiB, within L3.
ROW_BLOCK = 64

_FORWARD_ARGS = (
    "tile, tile_stride, targets, running_max, sum_exp, x_sum_exp, sq_sum_exp, z_sum, "
    "max_before_target, target_logit, vocab_start, n_cols, logit_scale, softcap, inv_t, "
    "HAS_SOFTCAP, HAS_ENTROPY, HAS_LOG_SUM_SQ_PROBS, HAS_MEAN_LOGITS, HAS_IS_TOP1, "
    "BLOCK_SIZE"
)
_BACKWARD_ARGS = (
    "tile, tile_stride, targets, log_z, entropy, grad_logprobs, grad_entropy, "
    "vocab_start, n_cols, logit_scale, softcap, inv_t, HAS_SOFTCAP, HAS_LOGPROB_GRAD, "
    "HAS_ENTROPY_GRAD, BLOCK_SIZE"
)


def _argument_names(function: Any) -> str:
    return ", ".join(inspect.signature(function).parameters)


def _is_plain(tile, logit_scale: float, inv_t: float, has_softcap: bool) -> bool:
    """Whether the tile's values are the logits as they are (float32, no scaling)."""
    import torch

    return (
        tile.dtype == torch.float32
        and logit_scale == 1.0
        and inv_t == 1.0
        and not has_softcap
    )


def _logits(block, logit_scale: float, softcap: float, inv_t: float, has_softcap: bool):
    """Return a float32 block of logits as TRL's `_torch_transform` makes them."""
    import torch

    z = block.float() * logit_scale
    if has_softcap:
        z = softcap * torch.tanh(z / softcap)
    return z * inv_t


def forward_tile(
    tile,
    tile_stride,
    targets,
    running_max,
    sum_exp,
    x_sum_exp,
    sq_sum_exp,
    z_sum,
    max_before_target,
    target_logit,
    vocab_start,
    n_cols,
    logit_scale,
    softcap,
    inv_t,
    HAS_SOFTCAP,
    HAS_ENTROPY,
    HAS_LOG_SUM_SQ_PROBS,
    HAS_MEAN_LOGITS,
    HAS_IS_TOP1,
    BLOCK_SIZE,
):
    """Fold one tile of logits into the running log-sum-exp statistics (TRL's `_forward_tile`).

    The tile is read, never written; each row block gets one scratch buffer.
    """
    import torch

    plain = _is_plain(tile, logit_scale, inv_t, HAS_SOFTCAP)
    local = targets - vocab_start
    rows = tile.shape[0]
    for r0 in range(0, rows, ROW_BLOCK):
        r1 = min(r0 + ROW_BLOCK, rows)
        z = (
            tile[r0:r1]
            if plain
            else _logits(tile[r0:r1], logit_scale, softcap, inv_t, HAS_SOFTCAP)
        )
        if HAS_MEAN_LOGITS:
            z_sum[r0:r1] += z.sum(-1)
        if HAS_IS_TOP1:
            # The largest logit before the target's column: the whole block where the
            # target lies in a later tile, the columns left of it where it lies in this one.
            # One masked max covers both (a later target leaves every column left).
            block_local = local[r0:r1]
            best = max_before_target[r0:r1]
            ahead = block_local > 0
            if bool(ahead.any()):
                columns = torch.arange(z.shape[-1], device=z.device)
                left = columns.unsqueeze(0) < block_local.unsqueeze(-1)
                left_max = z.masked_fill(~left, float("-inf")).amax(-1)
                best[ahead] = torch.maximum(best[ahead], left_max[ahead])
        old_max = running_max[r0:r1]
        new_max = torch.maximum(old_max, z.amax(-1))
        rescale = torch.exp(old_max - new_max)
        e = torch.sub(z, new_max.unsqueeze(-1)).exp_()
        sum_exp[r0:r1].mul_(rescale).add_(e.sum(-1))
        if HAS_ENTROPY:
            x_sum_exp[r0:r1].mul_(rescale).add_(torch.mul(e, z).sum(-1))
        if HAS_LOG_SUM_SQ_PROBS:
            sq_sum_exp[r0:r1].mul_(rescale * rescale).add_(torch.mul(e, e).sum(-1))
        old_max.copy_(new_max)
        in_tile = (local[r0:r1] >= 0) & (local[r0:r1] < n_cols)
        column = local[r0:r1].clamp(0, n_cols - 1).unsqueeze(-1)
        target_z = z.gather(-1, column).squeeze(-1)
        target_logit[r0:r1] = torch.where(in_tile, target_z, target_logit[r0:r1])


def backward_tile(
    tile,
    tile_stride,
    targets,
    log_z,
    entropy,
    grad_logprobs,
    grad_entropy,
    vocab_start,
    n_cols,
    logit_scale,
    softcap,
    inv_t,
    HAS_SOFTCAP,
    HAS_LOGPROB_GRAD,
    HAS_ENTROPY_GRAD,
    BLOCK_SIZE,
):
    """Overwrite a tile of logits with the loss's gradient with respect to them (TRL's `_backward_tile`).

    d(log p_target)/dz_j = 1[j = target] - p_j and d(entropy)/dz_j = -p_j (log p_j + H),
    so the gradient is -p_j (g + g_H (log p_j + H)) + g 1[j = target].
    """
    import torch

    plain = _is_plain(tile, logit_scale, inv_t, HAS_SOFTCAP)
    local = targets - vocab_start
    rows = tile.shape[0]
    for r0 in range(0, rows, ROW_BLOCK):
        r1 = min(r0 + ROW_BLOCK, rows)
        if plain:
            grad = tile[r0:r1]  # worked on in place
        else:
            y = tile[r0:r1].float() * logit_scale
            if HAS_SOFTCAP:
                squashed = torch.tanh(y / softcap)
                grad = softcap * squashed * inv_t
            else:
                grad = y * inv_t
        grad.sub_(log_z[r0:r1].unsqueeze(-1))  # log p
        if HAS_ENTROPY_GRAD:
            p = torch.exp(grad)
            grad.add_(entropy[r0:r1].unsqueeze(-1)).mul_(
                grad_entropy[r0:r1].unsqueeze(-1)
            )
            if HAS_LOGPROB_GRAD:
                grad.add_(grad_logprobs[r0:r1].unsqueeze(-1))
            grad.mul_(p).neg_()
        elif HAS_LOGPROB_GRAD:
            grad.exp_().mul_(grad_logprobs[r0:r1].unsqueeze(-1).neg())
        else:
            grad.zero_()
        if HAS_LOGPROB_GRAD:
            block_local = local[r0:r1]
            hit = torch.nonzero((block_local >= 0) & (block_local < n_cols)).flatten()
            grad[hit, block_local[hit]] += grad_logprobs[r0:r1][hit]
        if not plain:
            grad.mul_(inv_t)
            if HAS_SOFTCAP:
                grad.mul_(1 - squashed * squashed)
            grad.mul_(logit_scale)
            tile[r0:r1].copy_(grad)


def _compact_on_cpu(use_triton):
    """Wrap TRL's `_use_triton` as its LM head reads it: also compact on the CPU."""

    def use_triton_or_cpu(device) -> bool:
        return use_triton(device) or device.type == "cpu"

    use_triton_or_cpu.lean_cpu_head = True
    return use_triton_or_cpu


def use_lean_cpu_head() -> bool:
    """Install the lean CPU fold and compaction into TRL; return whether it is in place.

    Idempotent. Refuses (logs, returns False) a TRL whose fallback functions have
    other signatures than those written for.
    """
    try:
        import trl.kernels.chunked_logprob as chunked
        import trl.trainer.utils as trainer_utils
    except ImportError:  # pragma: no cover - TRL is a dependency
        return False
    if getattr(trainer_utils._use_triton, "lean_cpu_head", False):
        return True
    if (
        _argument_names(chunked._forward_tile) != _FORWARD_ARGS
        or _argument_names(chunked._backward_tile) != _BACKWARD_ARGS
    ):
        logger.warning(
            "TRL's chunked LM head is not the one training/lm_head.py was written for "
            "(trl 1.16); its CPU fallback is left as it is"
        )
        return False
    chunked._forward_tile = forward_tile
    chunked._backward_tile = backward_tile
    trainer_utils._use_triton = _compact_on_cpu(trainer_utils._use_triton)
    return True
