"""training/lm_head.py: the lean CPU fold equals TRL's own, and scores only labelled positions."""

from __future__ import annotations

import pytest
import torch

chunked = pytest.importorskip("trl.kernels.chunked_logprob")
trainer_utils = pytest.importorskip("trl.trainer.utils")

from training import lm_head  # noqa: E402

OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
TRL_FORWARD, TRL_BACKWARD = chunked._forward_tile, chunked._backward_tile


def head(hidden, weight, targets, *, lean, monkeypatch, **options):
    """Run TRL's ChunkedLogProbFunction with TRL's fold or ours; return outputs and grads."""
    monkeypatch.setattr(
        chunked, "_forward_tile", lm_head.forward_tile if lean else TRL_FORWARD
    )
    monkeypatch.setattr(
        chunked, "_backward_tile", lm_head.backward_tile if lean else TRL_BACKWARD
    )
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    log_probs, entropy, log_sum_sq, mean_logits, is_top1 = (
        chunked.ChunkedLogProbFunction.apply(
            h,
            w,
            None,
            targets,
            options.get("temperature", 1.0),
            options.get("chunk_size", 512),
            options.get("softcap"),
            options.get("logit_scale", 1.0),
            OUTPUTS,
        )
    )
    weights = torch.linspace(-1.0, 1.0, len(targets))
    loss = (log_probs.float() * weights).sum()
    if options.get("entropy_grad"):
        loss = loss + 0.1 * entropy.float().sum()
    loss.backward()
    return {
        "log_probs": log_probs.detach(),
        "entropy": entropy.detach(),
        "log_sum_sq": log_sum_sq,
        "mean_logits": mean_logits,
        "is_top1": is_top1,
        "grad_hidden": h.grad,
        "grad_weight": w.grad,
    }


def problem(rows=150, hidden=16, vocab=1300, dtype=torch.float32):
    """Random hidden states and head; a third of the targets are the argmax, a few tied."""
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(rows, hidden, generator=generator)
    w = torch.randn(vocab, hidden, generator=generator) * 0.5
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    targets[: rows // 3] = (h @ w.T)[: rows // 3].argmax(-1)
    # Tied rows: every logit 0, so the target is top-1 only when it is column 0.
    h[-4:] = 0.0
    targets[-4:] = torch.tensor([0, 1, vocab // 2, vocab - 1])
    return h.to(dtype), w.to(dtype), targets


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"entropy_grad": True},
        {"temperature": 0.7, "logit_scale": 1.3},
        {"softcap": 5.0, "entropy_grad": True},
    ],
    ids=["plain", "entropy-grad", "temperature-scale", "softcap"],
)
def test_lean_fold_equals_trls_own(options, monkeypatch):
    hidden, weight, targets = problem()
    theirs = head(
        hidden, weight, targets, lean=False, monkeypatch=monkeypatch, **options
    )
    ours = head(hidden, weight, targets, lean=True, monkeypatch=monkeypatch, **options)
    assert torch.equal(ours["is_top1"], theirs["is_top1"])
    assert 40 <= int(theirs["is_top1"].sum()) < len(targets)  # the check has teeth
    assert ours["is_top1"][-4:].tolist() == [True, False, False, False]
    for name in ("log_probs", "entropy", "log_sum_sq", "mean_logits"):
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-5)
    for name in ("grad_hidden", "grad_weight"):
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-5)


def test_lean_fold_equals_trls_own_in_bfloat16(monkeypatch):
    hidden, weight, targets = problem(rows=40, vocab=700, dtype=torch.bfloat16)
    theirs = head(hidden, weight, targets, lean=False, monkeypatch=monkeypatch)
    ours = head(hidden, weight, targets, lean=True, monkeypatch=monkeypatch)
    assert torch.equal(ours["is_top1"], theirs["is_top1"])
    torch.testing.assert_close(ours["log_probs"], theirs["log_probs"])
    torch.testing.assert_close(ours["grad_hidden"], theirs["grad_hidden"])
    torch.testing.assert_close(ours["grad_weight"], theirs["grad_weight"])


def test_lean_fold_is_the_log_softmax(monkeypatch):
    """Against float64 log_softmax, not only against TRL: both could be wrong the same way."""
    hidden, weight, targets = problem()
    ours = head(hidden, weight, targets, lean=True, monkeypatch=monkeypatch)
    log_softmax = (hidden.double() @ weight.double().T).log_softmax(-1)
    expected = log_softmax.gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(ours["log_probs"].double(), expected, rtol=0, atol=1e-4)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    torch.testing.assert_close(ours["entropy"].double(), entropy, rtol=0, atol=1e-4)


@pytest.fixture
def restore_trl(monkeypatch):
    """Let a test install the lean head; put TRL's own functions back afterwards."""
    for name in ("_forward_tile", "_backward_tile"):
        monkeypatch.setattr(chunked, name, getattr(chunked, name))
    monkeypatch.setattr(trainer_utils, "_use_triton", trainer_utils._use_triton)
    return monkeypatch


def test_installed_head_scores_only_labelled_positions(tiny_model_dir, restore_trl):
    """TRL scores every position on the CPU; installed, only those with a label."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    input_ids = torch.randint(3, model.config.vocab_size, (4, 12))
    labels = input_ids.clone()
    labels[:, :7] = -100  # a prompt of 7 tokens: 5 of the 11 shifted positions score
    rows_folded: list[int] = []
    fold = chunked._forward_tile

    def counting(tile, *args, **kwargs):
        rows_folded.append(tile.shape[0])
        return fold(tile, *args, **kwargs)

    restore_trl.setattr(chunked, "_forward_tile", counting)
    with torch.no_grad():
        before = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    assert rows_folded[0] == 4 * 11
    restore_trl.setattr(chunked, "_forward_tile", fold)
    assert lm_head.use_lean_cpu_head()
    assert lm_head.use_lean_cpu_head()  # idempotent
    fold = chunked._forward_tile
    rows_folded.clear()
    restore_trl.setattr(chunked, "_forward_tile", counting)
    with torch.no_grad():
        after = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    assert rows_folded[0] == 4 * 5
    mask = labels[:, 1:] != -100
    torch.testing.assert_close(after.log_probs, before.log_probs)
    assert torch.equal(after.is_top1[mask], before.is_top1[mask])
    torch.testing.assert_close(after.entropy[mask], before.entropy[mask])
    torch.testing.assert_close(after.loss, before.loss)


def test_another_trl_is_left_alone(restore_trl, caplog):
    def other_fold(tile, targets):  # a signature this module was not written for
        return None

    restore_trl.setattr(chunked, "_forward_tile", other_fold)
    assert not lm_head.use_lean_cpu_head()
    assert chunked._forward_tile is other_fold
    assert not getattr(trainer_utils._use_triton, "lean_cpu_head", False)
    assert "left as it is" in caplog.text


def test_training_child_installs_the_lean_head(tmp_path, restore_trl):
    """`training.stage.run` installs it before the stage's trainer runs."""
    import json

    from training import stage

    seen = {}

    def fake_train(config, **kwargs):
        seen["lean"] = getattr(trainer_utils._use_triton, "lean_cpu_head", False)
        return {"stopped": 0.0}

    restore_trl.setattr(stage, "load_trainer", lambda envelope: (Config, fake_train))
    (tmp_path / "config.json").write_text(json.dumps({"stage": "x", "config": {}}))
    assert stage.run(tmp_path) == 0
    assert seen == {"lean": True}


class Config:
    @classmethod
    def from_dict(cls, data):
        return cls()
