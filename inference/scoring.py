"""Scoring (prompt, response) pairs with a registered reward model.

A reward model is a sequence classifier with one output (the reward), saved by
`training/reward.py` as a full model folder, optionally with a LoRA adapter
trained on it. It scores a prompt and a response exactly as it was trained to:
conversational records (message lists) go through the tokenizer's chat template,
plain strings are joined and end with the eos token, and the reward is
`logits[:, 0]` at the last non-pad token (a causal LM's head) or the first,
`[CLS]`, token (an encoder's). Torch and transformers are imported inside the
functions, never by the web process. A judge that offers `reward` can stand in for
the reward model (`judge_reward_function`: a verifiable reward).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inference.loading import load_tokenizer


def is_encoder(tokenizer: Any) -> bool:
    """Return whether the tokenizer is BERT-like (a [CLS]/[SEP] encoder without eos)."""
    return tokenizer.eos_token is None and tokenizer.sep_token is not None


def load_reward_model(
    path: str, device: str | None = None, *, adapter_path: str = ""
) -> tuple[Any, Any]:
    """Return (model, tokenizer) of a saved reward model, in eval mode, tokenizer right-padded.

    `adapter_path`: a LoRA adapter trained on the model at `path`, folded into its
    weights (its folder holds the tokenizer).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    if not path:
        raise ValueError(
            "reward model has no base path; give the folder or hub id of the model"
        )
    tokenizer = load_tokenizer(adapter_path or path, padding_side="right")
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.float32
    )
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    if device:
        model.to(device)
    return model, tokenizer


def reward_input_ids(tokenizer: Any, prompt: Any, response: Any) -> list[int]:
    """Return the token ids a reward model scores, exactly as TRL's RewardTrainer builds them.

    Conversational records (message lists) go through the chat template; plain
    strings are joined and end with the eos token.
    """
    if isinstance(response, list):
        messages = (prompt if isinstance(prompt, list) else []) + response
        return list(
            tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
    text = (prompt or "") + response
    if not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return list(tokenizer(text=text)["input_ids"])


def score(
    model: Any,
    tokenizer: Any,
    prompts: list[Any],
    responses: list[Any],
    *,
    batch_size: int = 32,
    max_length: int = 512,
) -> list[float]:
    """Return the reward of each (prompt, response); over-long inputs keep their start."""
    import torch

    device = next(model.parameters()).device
    limit = min(
        max_length, getattr(model.config, "max_position_embeddings", max_length)
    )
    ids = [
        reward_input_ids(tokenizer, p, r)[:limit]
        for p, r in zip(prompts, responses, strict=False)
    ]
    pad = tokenizer.pad_token_id
    rewards: list[float] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        width = max(len(x) for x in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, seq in enumerate(chunk):  # right padding, as in training
            input_ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        with torch.no_grad():
            logits = model(
                input_ids=input_ids.to(device), attention_mask=mask.to(device)
            ).logits
        rewards.extend(float(x) for x in logits[:, 0].float().cpu())  # (batch,)
    return rewards


def reward_function(
    path: str,
    *,
    ensemble: Sequence[str] = (),
    norm_file: Path | None = None,
    batch_size: int = 32,
    max_length: int = 512,
) -> Callable[..., list[float]]:
    """Return `f(prompts, completions, **columns) -> list[float]` scoring with the reward model at `path`.

    This is the form TRL's GRPO and RLOO trainers take; it formats prompt and
    completion exactly as training did, so the online trainers see the rewards the
    reward model was trained to give (a graded signal, as they need).

    With `ensemble` (further reward model folders) every member scores each
    completion and the reward is the mean of the members' scores, each first
    normalised (mean 0, std 1) on the first batch the function scores: the starting
    policy's samples, as PPO normalises its ensemble (`training/ppo.py`), so that a
    member of a larger scale does not outvote the others. Those statistics are
    written to `norm_file` (by atomic rename) and read from it when it exists, so a
    resumed stage keeps the ones it started with; `f.statistics` holds them
    (`(shifts, scales)`, a member each; None before the first call or for one model).
    One reward model's scores are returned as they are.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else None
    members = [load_reward_model(p, device=device) for p in (path, *ensemble)]

    def reward_model(
        prompts: list[Any], completions: list[Any], **columns: Any
    ) -> list[float]:
        each = [
            score(
                model,
                tokenizer,
                prompts,
                completions,
                batch_size=batch_size,
                max_length=max_length,
            )
            for model, tokenizer in members
        ]
        if len(each) == 1:
            return each[0]
        if reward_model.statistics is None:
            reward_model.statistics = _norm_statistics(each, norm_file)
        shifts, scales = reward_model.statistics
        return [
            statistics.fmean(
                (s - shift) / scale
                for s, shift, scale in zip(row, shifts, scales, strict=True)
            )
            for row in zip(*each, strict=True)
        ]

    reward_model.__name__ = "reward_model"  # TRL logs rewards/<name>/mean
    reward_model.statistics = None
    return reward_model


def judge_reward_function(judge_path: str) -> Callable[..., list[float]]:
    """Return `f(prompts, completions, **columns) -> list[float]` scoring with the
    judge at `judge_path` ("module:attribute", `inference.judges.judge_path`).

    A verifiable reward (RLVR): the judge's own `reward` of each completion, a
    program's verdict instead of a reward model learnt from rankings, in the form
    TRL's GRPO and RLOO trainers take (as `reward_function`). Raise ValueError when
    the judge offers no `reward`.
    """
    from inference.judges import judge_offers, load_judge

    judge = load_judge(judge_path)
    if not judge_offers(judge, "reward"):
        raise ValueError(
            f"the judge at {judge_path} offers no reward(prompt_messages, response); "
            "add one, or train a reward model on the rankings (a reward stage) instead"
        )

    def judge_reward(
        prompts: list[Any], completions: list[Any], **columns: Any
    ) -> list[float]:
        rewards = []
        for prompt, completion in zip(prompts, completions, strict=True):
            messages = (
                prompt
                if isinstance(prompt, list)
                else [{"role": "user", "content": prompt}]
            )
            text = (
                completion[-1]["content"]
                if isinstance(completion, list)
                else completion
            )
            rewards.append(float(judge.reward(messages, text)))
        return rewards

    judge_reward.__name__ = "judge"  # TRL logs rewards/judge/mean
    judge_reward.statistics = None  # as reward_function's: no normalising
    return judge_reward


def member_statistics(
    scores: Sequence[Sequence[float]],
) -> tuple[list[float], list[float]]:
    """Return each member's mean and std over its scores (a std of 0 counts as 1e-6),
    the shift and scale that normalise an ensemble member."""
    shifts = [statistics.fmean(column) for column in scores]
    scales = [
        max(statistics.pstdev(column) if len(column) > 1 else 0.0, 1e-6)
        for column in scores
    ]
    return shifts, scales


def _norm_statistics(
    scores: list[list[float]], norm_file: Path | None
) -> tuple[list[float], list[float]]:
    """Return the ensemble's saved statistics from `norm_file`, or this batch's (saved there)."""
    if norm_file is not None and norm_file.exists():
        saved = json.loads(norm_file.read_text(encoding="utf-8"))
        if len(saved["shift"]) != len(scores):
            raise ValueError(
                f"{norm_file} holds statistics for {len(saved['shift'])} reward models, "
                f"but {len(scores)} score; delete it to normalise afresh"
            )
        return saved["shift"], saved["scale"]
    shifts, scales = member_statistics(scores)
    if norm_file is not None:
        tmp = norm_file.with_name(norm_file.name + ".tmp")
        tmp.write_text(json.dumps({"shift": shifts, "scale": scales}), encoding="utf-8")
        os.replace(tmp, norm_file)
    return shifts, scales


class RewardScorer:
    """Score (prompt messages, response text) pairs with a reward model folder (plus LoRA adapter).

    The response becomes an assistant turn after the prompt's messages, as in
    the conversational exports reward models are trained on.
    """

    def __init__(
        self, base_path: str, adapter_path: str = "", batch_size: int = 32
    ) -> None:
        self.model, self.tokenizer = load_reward_model(
            base_path, adapter_path=adapter_path
        )
        self.batch_size = batch_size

    def score(self, prompts: list[list[dict]], responses: list[str]) -> list[float]:
        """Return one scalar reward per (prompt, response)."""
        if len(prompts) != len(responses):
            raise ValueError(
                f"{len(prompts)} prompts but {len(responses)} responses; pass one each"
            )
        answers = [
            [{"role": "assistant", "content": response}] for response in responses
        ]
        return score(
            self.model, self.tokenizer, prompts, answers, batch_size=self.batch_size
        )
