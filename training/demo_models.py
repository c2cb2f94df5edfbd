"""The tiny demo models: a byte-level BPE tokenizer with a chat template, a Llama config.

Everything here builds locally from text the project generates; nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

BOS = "<|bos|>"
EOS = "<|end|>"
PAD = "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, BOS, EOS, *ROLE_TOKENS]

# Each turn is <|role|>content<|end|>; generation starts after <|assistant|> and stops
# at <|end|>, the tokenizer's eos token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@dataclass(frozen=True)
class ModelSize:
    """Shape of a tiny Llama-architecture model."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int = 256


SIZES = {
    # Unit tests: builds and trains in a second or two.
    "micro": ModelSize(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=400),
    # The demo: ~1M parameters, learns the demo domain in a few CPU minutes.
    "demo": ModelSize(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=256, vocab_size=1000),
}


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Return a byte-level BPE `PreTrainedTokenizerFast` trained on the texts, with chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def init_model(tokenizer, size: ModelSize, seed: int = 0):
    """Return a randomly initialised `LlamaForCausalLM` sized for the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_heads,
        max_position_embeddings=size.max_positions,
        rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)
