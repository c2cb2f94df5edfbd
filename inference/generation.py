"""Batched candidate generation: K sampled responses per chat prompt, on either backend.

The transformers backend (default) renders each prompt with the tokenizer's chat
template, left-pads a batch, samples with the KV cache and stops at eos; the vLLM
backend (`inference.vllm_backend`) is used where vLLM and a GPU exist. Both take the
same `SamplingConfig`, translated by `inference.sampling.backend_kwargs`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from inference.sampling import SamplingConfig, backend_kwargs


def model_text(text: str) -> str:
    """Return a generated text as it is stored: stripped, without NUL characters.

    A model can emit the byte 0, which PostgreSQL's text type cannot hold (the
    round's whole publication would fail on one candidate).
    """
    return text.replace("\x00", "").strip()


def generate_candidates(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict]],
    sampling: SamplingConfig,
    *,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Return, for each prompt, its K candidate responses in the mix's group order.

    Prompts are generated `batch_size` at a time, each repeated for its group's count
    (so a batch holds batch_size x count sequences). Every batch is seeded from
    (seed, group, batch), so the same seed and batch size give the same candidates;
    the global torch RNG is left untouched. `progress(n)` is called with the number
    of prompts finished in each batch of the last group.
    """
    import torch

    texts = [
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        for messages in prompts
    ]
    results: list[list[str]] = [[] for _ in prompts]
    groups = sampling.groups()
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    for g, group in enumerate(groups):
        kwargs = backend_kwargs(group, sampling.max_new_tokens, "transformers")
        count = group["count"]
        # Greedy candidates are identical: decode once and repeat (generate refuses n > 1).
        n_return = count if kwargs["do_sample"] else 1
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            batch = tokenizer(
                chunk, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model.device)
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(_batch_seed(sampling.seed, g, start))
                output = _generate(
                    model,
                    batch,
                    n_return,
                    **kwargs,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            # (len(chunk) * count, prompt_len + new) -> new tokens only
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i in range(len(chunk)):
                texts_i = [
                    model_text(t) for t in decoded[i * n_return : (i + 1) * n_return]
                ]
                results[start + i].extend(texts_i * (count // n_return))
            if progress is not None and g == len(groups) - 1:
                progress(len(chunk))
    return results


def _generate(model: Any, batch: Any, n_return: int, **kwargs: Any) -> Any:
    """Return `model.generate`'s sequences, `n_return` per prompt, prompts read once.

    `generate` repeats each prompt `n_return` times before its first forward pass,
    so the prompt's keys and values are computed once per candidate: with four
    candidates and prompts as long as the answers, that is about a third of the
    work. Here the prompts but their last token go through the model once, the
    cache is repeated per candidate, and `generate` goes on from the last token
    with the same positions, masks and random draws. The logits agree with the
    repeated prompts' to float rounding (the last token reads the cache instead of
    its own pass; 7e-8 on the tests' model), so the candidates are the same but
    for a rare draw within rounding of a boundary: SmolLM2-135M gave the same 128
    of 128, at 0.73x the CPU time (32 prompts, 4 candidates, 64 new tokens).
    """
    from transformers import DynamicCache

    ids, mask = batch["input_ids"], batch["attention_mask"]
    if n_return == 1 or ids.shape[1] < 2 or not _shares_prompts(model):
        with drop_finished_rows(model, kwargs.get("eos_token_id")):
            return model.generate(
                **batch, **kwargs, num_return_sequences=n_return, use_cache=True
            )
    head, head_mask = ids[:, :-1], mask[:, :-1]
    # generate's own positions under left padding: pads sit at 1, tokens count from 0.
    positions = (head_mask.long().cumsum(-1) - 1).masked_fill(head_mask == 0, 1)
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    model(
        input_ids=head,
        attention_mask=head_mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    cache.batch_repeat_interleave(n_return)
    with drop_finished_rows(model, kwargs.get("eos_token_id")):
        return model.generate(
            input_ids=ids.repeat_interleave(n_return, dim=0),
            attention_mask=mask.repeat_interleave(n_return, dim=0),
            cache=cache,
            use_cache=True,
            **kwargs,
        )


# What generate's decoding steps hand the model's forward; anything else (embeddings,
# token types, output flags) and a call is passed through untouched.
_STEP_KEYS = frozenset(
    {"input_ids", "attention_mask", "position_ids", "cache", "cache_position"}
    | {"use_cache", "return_dict", "logits_to_keep"}
)


@contextmanager
def drop_finished_rows(model: Any, eos_token_id: Any) -> Iterator[None]:
    """Within one `generate` call, run the model only on the rows still generating.

    `generate` runs every row of a batch until its longest answer ends: a row that
    has sampled its end token goes on through every layer, each step, and its
    token is then replaced by padding. Here `model`'s forward (the causal LM under
    a PEFT wrapper) is wrapped for the call: from the first decoding step on, rows
    whose last token was an end token are dropped from the KV cache and the step
    runs on the others; their logits go back in the batch's rows, zeros in a
    finished row's (whose token generate discards). generate itself still draws
    every row's random numbers (its multinomial draws for the whole batch, in the
    same order), so each live row's token is the one it would have drawn: the
    candidates are generate's own, but for a draw within float rounding of a
    boundary (a row's logits computed beside fewer rows may round differently).

    Steps aside, for the whole call, where a decoding step is not the plain kind
    (one new token per row, a 2-D mask, transformers' dynamic cache of attention
    layers, nothing else batch-shaped), and where no end token is set.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if eos_token_id is None:
        eos_token_id = getattr(base.generation_config, "eos_token_id", None)
    if eos_token_id is None:
        yield
        return
    own = base.__dict__.get("forward")
    base.forward = _RowDropper(base.forward, eos_token_id)
    try:
        yield
    finally:
        if own is None:
            del base.forward
        else:
            base.forward = own


class _RowDropper:
    """The forward `drop_finished_rows` installs for one generate call (its state:
    which of the batch's rows the cache still holds)."""

    def __init__(self, forward: Callable, eos_token_id: Any) -> None:
        functools.update_wrapper(self, forward)
        self.forward = forward
        self.eos = eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]
        self.calls = 0
        self.rows: Any = None  # the batch rows the cache holds, once engaged
        self.finished: Any = None
        self.passed_through = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        self.calls += 1
        if self.calls == 1 or self.passed_through:  # the prefill: nothing finished
            return self.forward(*args, **kwargs)
        ids = kwargs.get("input_ids")
        if self.rows is None:
            if args or not _plain_step(kwargs):
                self.passed_through = True
                return self.forward(*args, **kwargs)
            self.rows = torch.arange(ids.shape[0], device=ids.device)
            self.finished = torch.zeros(
                ids.shape[0], dtype=torch.bool, device=ids.device
            )
            self.eos = torch.tensor(self.eos, device=ids.device)
        elif args or not _plain_step(kwargs):
            raise RuntimeError(
                "generate changed the shape of its decoding steps after rows were "
                "dropped from the cache; call it outside drop_finished_rows"
            )
        self.finished |= torch.isin(ids[:, -1], self.eos)
        live = ~self.finished[self.rows]
        if not bool(live.all()):
            kwargs["cache"].batch_select_indices(live.nonzero().squeeze(1))
            self.rows = self.rows[live]
        batch = ids.shape[0]
        if len(self.rows) == batch:
            return self.forward(**kwargs)
        for key in ("input_ids", "attention_mask", "position_ids"):
            if kwargs.get(key) is not None:
                kwargs[key] = kwargs[key][self.rows]
        output = self.forward(**kwargs)
        logits = output.logits
        full = logits.new_zeros((batch, *logits.shape[1:]))
        full[self.rows] = logits
        output.logits = full
        return output


def _plain_step(kwargs: dict) -> bool:
    """Whether a forward call is a decoding step `_RowDropper` can run on fewer rows."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    if not set(kwargs) <= _STEP_KEYS:
        return False
    ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    positions, cache = kwargs.get("position_ids"), kwargs.get("cache")
    if ids is None or ids.dim() != 2 or ids.shape[1] != 1:
        return False
    rows = ids.shape[0]
    if mask is not None and (mask.dim() != 2 or mask.shape[0] != rows):
        return False
    if positions is not None and (positions.dim() != 2 or positions.shape[0] != rows):
        return False
    return type(cache) is DynamicCache and all(
        type(layer) in (DynamicLayer, DynamicSlidingWindowLayer)
        for layer in cache.layers
    )


def _shares_prompts(model: Any) -> bool:
    """Whether `_generate` may hand `generate` a prefilled cache: a model that keeps
    transformers' dynamic cache and names no cache of its own (a model whose
    generation_config asks for a static or sliding cache gets generate's own)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    supports = getattr(base, "_supports_default_dynamic_cache", None)
    return (
        callable(supports)
        and bool(supports())
        and getattr(base.generation_config, "cache_implementation", None) is None
        and takes_logits_to_keep(base)
    )


def takes_logits_to_keep(model: Any) -> bool:
    """Whether `model`'s forward takes `logits_to_keep` (transformers' own check; most
    causal LMs do, a few such as xLSTM's do not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    supports = getattr(base, "_supports_logits_to_keep", None)
    return callable(supports) and bool(supports())


def generate_for_policy(
    base_path: str,
    adapter_path: str,
    prompts: list[list[dict]],
    sampling: SamplingConfig,
    *,
    backend: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Load a policy and return K candidates per prompt from the chosen backend.

    backend "auto" picks vLLM when it is installed and a GPU is present, else
    transformers.
    """
    from inference import vllm_backend

    if backend == "auto":
        backend = "vllm" if vllm_backend.is_available() else "transformers"
    if backend == "vllm":
        results = vllm_backend.generate(base_path, adapter_path, prompts, sampling)
        if progress is not None:
            progress(len(prompts))
        return results
    if backend != "transformers":
        raise ValueError(
            f"unknown backend {backend!r}; expected auto, transformers or vllm"
        )
    from inference.loading import load_for_generation

    model, tokenizer = load_for_generation(base_path, adapter_path)
    return generate_candidates(model, tokenizer, prompts, sampling, progress=progress)


def _batch_seed(seed: int, group: int, start: int) -> int:
    """Return a distinct, reproducible seed for one (group, batch) of a run."""
    return (seed * 1_000_003 + group * 10_007 + start) % (2**63)
