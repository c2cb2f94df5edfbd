"""Batched, seeded candidate generation and policy loading on a tiny local model."""

import pytest

from inference.generation import generate_candidates, generate_for_policy
from inference.loading import gpu_dtype, load_for_generation, load_policy
from inference.sampling import SamplingConfig

PROMPTS = [
    [{"role": "user", "content": "The red cat has"}],
    [
        {
            "role": "user",
            "content": "A blue bird likes seeds and has many legs, how many?",
        }
    ],
    [{"role": "user", "content": "hi"}],
]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_for_generation(str(tiny_model_dir), device="cpu")


def test_loaded_tokenizer_pads_on_the_left_and_the_model_is_in_eval_mode(policy):
    model, tokenizer = policy
    assert tokenizer.padding_side == "left"
    assert model.training is False


def test_each_prompt_gets_k_candidates(policy):
    model, tokenizer = policy
    sampling = SamplingConfig(num_candidates=3, max_new_tokens=6, seed=1)
    out = generate_candidates(model, tokenizer, PROMPTS, sampling, batch_size=2)
    assert [len(c) for c in out] == [3, 3, 3]
    assert all(isinstance(text, str) and "<|" not in text for c in out for text in c)


def test_the_same_seed_gives_the_same_candidates_and_another_seed_differs(policy):
    model, tokenizer = policy
    first = generate_candidates(
        model, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=8, seed=5)
    )
    again = generate_candidates(
        model, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=8, seed=5)
    )
    other = generate_candidates(
        model, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=8, seed=6)
    )
    assert first == again
    assert first != other


def test_generation_leaves_the_global_random_state_alone(policy):
    import torch

    model, tokenizer = policy
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate_candidates(
        model,
        tokenizer,
        PROMPTS[:1],
        SamplingConfig(max_new_tokens=4, num_candidates=1),
    )
    assert torch.equal(torch.rand(3), expected)


def test_a_mix_returns_its_groups_in_order_and_greedy_candidates_agree(policy):
    model, tokenizer = policy
    sampling = SamplingConfig(
        num_candidates=4,
        max_new_tokens=6,
        mix=[{"count": 2, "temperature": 0}, {"count": 2, "temperature": 1.0}],
    )
    out = generate_candidates(model, tokenizer, PROMPTS, sampling)
    assert [len(c) for c in out] == [4, 4, 4]
    assert all(c[0] == c[1] for c in out)


def test_progress_is_reported_per_prompt(policy):
    model, tokenizer = policy
    seen = []
    generate_candidates(
        model,
        tokenizer,
        PROMPTS,
        SamplingConfig(max_new_tokens=2, num_candidates=1),
        batch_size=2,
        progress=seen.append,
    )
    assert seen == [2, 1]


def test_a_lora_adapter_loads_on_top_of_its_base(tiny_model_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(
        base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    model, tokenizer = load_for_generation(
        str(tiny_model_dir), str(tmp_path / "adapter"), device="cpu"
    )
    assert isinstance(model, PeftModel)
    assert tokenizer.padding_side == "left"
    out = generate_for_policy(
        str(tiny_model_dir),
        str(tmp_path / "adapter"),
        PROMPTS[:1],
        SamplingConfig(max_new_tokens=3, num_candidates=2),
        backend="transformers",
    )
    assert len(out[0]) == 2


@pytest.mark.parametrize(
    ("emulation_only", "dtype"), [(True, "float16"), (False, "bfloat16")]
)
def test_models_load_on_a_gpu_in_float16_where_bf16_would_be_emulated(
    monkeypatch, emulation_only, dtype
):
    import torch

    def is_bf16_supported(including_emulation=True):
        return including_emulation or not emulation_only

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert gpu_dtype() is getattr(torch, dtype)


def test_an_empty_base_path_is_refused():
    with pytest.raises(ValueError, match="base_path is empty"):
        load_policy("")


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(
        base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    path = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("trainable", "adapter_trains"), [(True, True), (False, False)]
)
def test_the_adapter_trains_only_when_asked(
    tiny_model_dir, adapter_dir, trainable, adapter_trains
):
    model = load_policy(str(tiny_model_dir), str(adapter_dir), trainable=trainable)
    lora = [p for name, p in model.named_parameters() if "lora_" in name]
    assert lora
    assert all(p.requires_grad is adapter_trains for p in lora)


def test_merge_folds_the_adapter_into_a_plain_float32_model(
    tiny_model_dir, adapter_dir
):
    import torch
    from peft import PeftModel

    model = load_policy(str(tiny_model_dir), str(adapter_dir), merge=True)
    assert not isinstance(model, PeftModel)
    assert next(model.parameters()).dtype == torch.float32
    # A plain model trains whole, as one loaded without an adapter does (full
    # pre-training, SFT or DPO from a LoRA policy found no gradient).
    assert all(p.requires_grad for p in model.parameters())


def test_candidates_never_carry_a_nul_character(policy):
    # A model can emit the byte 0 (PostgreSQL text cannot store it: a round's
    # publication failed on it); push the tiny model to emit it at every step.
    model, tokenizer = policy
    (nul,) = tokenizer.encode("\x00", add_special_tokens=False)

    def favour_nul(module, inputs, logits):
        logits[..., nul] += 100.0
        return logits

    hook = model.get_output_embeddings().register_forward_hook(favour_nul)
    try:
        out = generate_candidates(
            model, tokenizer, PROMPTS[:1], SamplingConfig(num_candidates=2, seed=3)
        )
    finally:
        hook.remove()
    assert [len(c) for c in out] == [2]
    assert all("\x00" not in text for text in out[0])
