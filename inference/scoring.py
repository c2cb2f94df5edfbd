"""Scoring (prompt, response) pairs with a registered reward model.

A reward model is a sequence classifier with one output (the reward), saved by
`training/reward.py` as a full model folder, optionally with a LoRA adapter
trained on it. It scores a prompt and a response exactly as it was trained to:
conversational records (message lists) go through the tokenizer's chat template,
plain strings are joined and end with the eos token, and the reward is
`logits[:, 0]` at the last non-pad token (a causal LM's head) or the first,
`[CLS]`, token (an encoder's). Torch and transformers are imported inside the
functions, never by the web process.
"""

from __future__ import annotations

from collections.abc import Callable
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
    path: str, *, batch_size: int = 32, max_length: int = 512
) -> Callable[..., list[float]]:
    """Return `f(prompts, completions, **columns) -> list[float]` scoring with the reward model at `path`.

    This is the form TRL's GRPO and RLOO trainers take; it formats prompt and
    completion exactly as training did, so the online trainers see the rewards the
    reward model was trained to give (a graded signal, as they need).
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else None
    model, tokenizer = load_reward_model(path, device=device)

    def reward_model(
        prompts: list[Any], completions: list[Any], **columns: Any
    ) -> list[float]:
        return score(
            model,
            tokenizer,
            prompts,
            completions,
            batch_size=batch_size,
            max_length=max_length,
        )

    reward_model.__name__ = "reward_model"  # TRL logs rewards/<name>/mean
    return reward_model


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
