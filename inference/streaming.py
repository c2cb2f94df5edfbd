"""A chat reply generated token by token: the text pieces arrive as the model makes them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from inference.sampling import SamplingConfig, backend_kwargs


def stream_reply(
    model: Any,
    tokenizer: Any,
    messages: list[dict],
    sampling: SamplingConfig,
    stop: threading.Event | None = None,
    timeout_s: float = 120.0,
) -> Iterator[str]:
    """Yield the reply to `messages` in text pieces, as `generate` produces tokens.

    One candidate, sampled with the first group of `sampling` (temperature, top-k,
    top-p, max new tokens, seed), translated by `backend_kwargs` as for rounds.
    Generation runs in a thread feeding transformers' TextIteratorStreamer; setting
    `stop` (the reader went away, or ran out of time) ends it at the next token.
    """
    import torch
    from transformers import (
        StoppingCriteria,
        StoppingCriteriaList,
        TextIteratorStreamer,
    )

    stop = stop or threading.Event()

    class _StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs) -> bool:
            return stop.is_set()

    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(
        model.device
    )
    streamer = TextIteratorStreamer(
        tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout_s
    )
    kwargs = backend_kwargs(
        sampling.groups()[0], sampling.max_new_tokens, "transformers"
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                # generate samples from the global RNG: seeded per reply (two replies
                # at once share it, so only a lone reply is exactly reproducible).
                torch.manual_seed(sampling.seed)
                model.generate(
                    **inputs,
                    **kwargs,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_StopOnEvent()]),
                    use_cache=True,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                )
        except BaseException as exc:  # reported to the reader below
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, name="stream-reply", daemon=True)
    thread.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:
        stop.set()
        thread.join(timeout=timeout_s)
    if failure:
        raise RuntimeError(f"generation failed: {failure[0]}") from failure[0]
