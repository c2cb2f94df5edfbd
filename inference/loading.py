"""Load a policy for generation: any Hugging Face causal-LM folder or hub id, plus a LoRA adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def default_device() -> str:
    """Return "cuda" when a GPU is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_policy(
    base_path: str, adapter_path: str = "", device: str | None = None
) -> tuple[Any, Any]:
    """Return (model, tokenizer) ready for batched generation, in eval mode.

    The adapter, if given, is a PEFT folder applied on top of the base; its own
    tokenizer is used when it has one, else the base's. The tokenizer
    pads on the left (saved tokenizers remember their padding side, so it is set
    after every load) and falls back to eos for padding when it has no pad token.
    On a GPU the weights load in bfloat16, on the CPU in float32.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not base_path:
        raise ValueError(
            "base_path is empty; give a model folder or a Hugging Face hub id"
        )
    device = device or default_device()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    # A trained adapter folder usually carries its tokenizer (chat template included).
    has_own = (
        bool(adapter_path) and (Path(adapter_path) / "tokenizer_config.json").exists()
    )
    tokenizer = AutoTokenizer.from_pretrained(adapter_path if has_own else base_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    model.to(device)
    model.eval()
    return model, tokenizer
