"""Load a policy: any Hugging Face causal-LM folder or hub id, plus a LoRA adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def default_device() -> str:
    """Return "cuda" when a GPU is visible, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def gpu_dtype() -> Any:
    """Return the dtype models load in on this machine's GPU.

    bfloat16 where the GPU computes it natively (compute capability 8.0 and later, and
    ROCm); float16 on older cards (a T4 or V100), where PyTorch serves bfloat16 only by
    emulation: `torch.cuda.is_bf16_supported()` counts emulation unless told not to.
    """
    import torch

    if torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float16


def load_tokenizer(path: str, padding_side: str = "right") -> Any:
    """Load a tokenizer and set its padding side (it is saved with the tokenizer).

    A tokenizer without a pad token pads with its eos token.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    base_path: str,
    adapter_path: str = "",
    *,
    trainable: bool = False,
    merge: bool = False,
    device: str | None = None,
) -> Any:
    """Load a causal LM from `base_path`, with the LoRA adapter at `adapter_path` if any.

    With `merge`, fold the adapter into the base weights and return a plain model;
    otherwise return a `PeftModel` whose adapter trains when `trainable`.
    Without `device` the weights load in float32 and stay on the CPU, for a
    trainer to place; with one they load in the GPU's half precision (`gpu_dtype`;
    float32 on the CPU), move there and switch to eval mode, ready for generation.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if not base_path:
        raise ValueError(
            "base_path is empty; give a model folder or a Hugging Face hub id"
        )
    on_gpu = device is not None and device.startswith("cuda")
    dtype = gpu_dtype() if on_gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            model, adapter_path, is_trainable=trainable and not merge
        )
        if merge:
            # A plain model again: loading the adapter for inference froze the base.
            model = model.merge_and_unload()
            model.requires_grad_(True)
    if device is not None:
        model.to(device)
        model.eval()
    return model


def load_for_generation(
    base_path: str, adapter_path: str = "", device: str | None = None
) -> tuple[Any, Any]:
    """Return (model, tokenizer) ready for batched generation, in eval mode.

    The adapter, if given, is a PEFT folder applied on top of the base; its own
    tokenizer is used when it has one, else the base's. The tokenizer pads on the
    left (saved tokenizers remember their padding side, so it is set after every
    load). `device` defaults to the GPU when one is visible.
    """
    if not base_path:
        raise ValueError(
            "base_path is empty; give a model folder or a Hugging Face hub id"
        )
    # A trained adapter folder usually carries its tokenizer (chat template included).
    has_own = (
        bool(adapter_path) and (Path(adapter_path) / "tokenizer_config.json").exists()
    )
    tokenizer = load_tokenizer(
        adapter_path if has_own else base_path, padding_side="left"
    )
    model = load_policy(base_path, adapter_path, device=device or default_device())
    return model, tokenizer
