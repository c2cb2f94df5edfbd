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


SHARED_PROMPTS = PROMPTS + [
    [{"role": "user", "content": f"Name {n} things a {c} creature can do."}]
    for n, c in ((2, "red"), (3, "blue"), (4, "small"), (5, "tall"), (6, "old"))
]


def _both_ways(model, tokenizer, n_return=3):
    """Return (shared, repeated): generate's outputs with the prompt read once per
    prompt (`_generate`) and with generate repeating it, from the same seed."""
    import torch

    from inference.generation import _generate

    texts = [
        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for m in SHARED_PROMPTS
    ]
    batch = tokenizer(
        texts, return_tensors="pt", padding=True, add_special_tokens=False
    )
    assert (batch["attention_mask"] == 0).any()  # some prompts are left-padded
    controls = dict(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=8,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        output_scores=True,
        return_dict_in_generate=True,
    )
    outputs = []
    for shared in (True, False):
        with torch.inference_mode():
            torch.manual_seed(0)
            if shared:
                outputs.append(_generate(model, batch, n_return, **controls))
            else:
                outputs.append(
                    model.generate(
                        **batch,
                        **controls,
                        num_return_sequences=n_return,
                        use_cache=True,
                    )
                )
    return outputs


def _assert_the_same(shared, repeated, eos_token_id):
    import torch

    # Every step's logits agree to float rounding (measured 7e-8; positions off by a
    # prompt's padding move them by 2e-3), and so do the draws. A row that has ended
    # is not run any more (drop_finished_rows): its scores are not compared.
    assert len(shared.scores) == len(repeated.scores)
    steps = len(shared.scores)
    new = repeated.sequences[:, -steps:]
    ended = (new == eos_token_id).int().cumsum(1) - (new == eos_token_id).int()
    for step, (a, b) in enumerate(zip(shared.scores, repeated.scores, strict=True)):
        live = ended[:, step] == 0
        torch.testing.assert_close(a[live], b[live], atol=1e-5, rtol=1e-5)
    assert torch.equal(shared.sequences, repeated.sequences)


def test_sharing_the_prompt_gives_what_repeating_it_gives(policy):
    model, tokenizer = policy
    _assert_the_same(*_both_ways(model, tokenizer), tokenizer.eos_token_id)


@pytest.fixture(scope="module")
def lora_policy(tiny_model_dir):
    """The tiny model under a LoRA adapter that moves its logits, as (model, tokenizer):
    the rounds' policies are PEFT models with their adapters unmerged."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_for_generation(str(tiny_model_dir), device="cpu")
    torch.manual_seed(0)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return peft_model.eval(), tokenizer


def test_a_lora_policy_shares_the_prompt_too(lora_policy):
    model, tokenizer = lora_policy
    _assert_the_same(*_both_ways(model, tokenizer), tokenizer.eos_token_id)


def test_each_prompt_is_read_once_not_once_per_candidate(policy):
    model, tokenizer = policy
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda module, inputs, output: seen.append(tuple(inputs[0].shape))
    )
    try:
        generate_candidates(
            model,
            tokenizer,
            PROMPTS,
            SamplingConfig(num_candidates=4, max_new_tokens=5, seed=1),
            batch_size=3,
        )
    finally:
        hook.remove()
    width = seen[0][1]
    # The prompts but their last token, once each; then one token per candidate a step.
    assert seen[0] == (3, width) and width > 1
    assert all(shape == (12, 1) for shape in seen[1:])
    assert 1 < len(seen) <= 6


def test_a_model_that_names_its_own_cache_is_left_to_generate(policy):
    # generate refuses a prefilled cache beside a generation_config's
    # cache_implementation (real models ship "static" or "hybrid" there).
    from inference.generation import _shares_prompts

    model, _ = policy
    assert _shares_prompts(model)
    model.generation_config.cache_implementation = "static"
    try:
        assert not _shares_prompts(model)
    finally:
        model.generation_config.cache_implementation = None


def test_a_model_without_logits_to_keep_is_left_to_generate(policy, monkeypatch):
    # The shared prefill keeps one logit row; a forward without logits_to_keep (xLSTM's,
    # in transformers 5) would refuse the keyword.
    from inference.generation import _shares_prompts, takes_logits_to_keep

    model, _ = policy
    assert takes_logits_to_keep(model) and _shares_prompts(model)
    monkeypatch.setattr(model, "_supports_logits_to_keep", lambda: False)
    assert not takes_logits_to_keep(model)
    assert not _shares_prompts(model)


# A tenth of the tiny model's vocabulary as end tokens: its near-uniform draws then end
# the rows at many different steps.
END_TOKENS = list(range(40, 72))


def _shared_batch(tokenizer):
    """Return the shared prompts as one left-padded batch."""
    texts = [
        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for m in SHARED_PROMPTS
    ]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _rows_a_step(model):
    """Start recording the rows of each forward pass; return (rows, hook)."""
    rows = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda module, inputs, output: rows.append(inputs[0].shape[0])
    )
    return rows, hook


def _generate_twice(model, tokenizer, **extra):
    """Return [(sequences, rows a step)] from plain generate and from generate
    within drop_finished_rows, from the same seed, with rows ending early."""
    import torch

    from inference.generation import drop_finished_rows

    batch, eos = _shared_batch(tokenizer), END_TOKENS
    runs = []
    for drop in (False, True):
        rows, hook = _rows_a_step(model)
        try:
            with torch.inference_mode():
                torch.manual_seed(0)
                call = lambda: model.generate(  # noqa: E731
                    **batch,
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=12,
                    eos_token_id=eos,
                    pad_token_id=tokenizer.pad_token_id,
                    **extra,
                )
                if drop:
                    with drop_finished_rows(model, eos):
                        output = call()
                else:
                    output = call()
        finally:
            hook.remove()
        runs.append((output, rows))
    return runs, eos


def _assert_fewer_rows_and_the_same_tokens(model, tokenizer):
    (plain, plain_rows), (dropped, dropped_rows) = _generate_twice(model, tokenizer)[0]
    width = len(SHARED_PROMPTS)
    assert all(r == width for r in plain_rows)
    # Rows ended at different steps and the later steps ran only the rest...
    assert dropped_rows[0] == width and dropped_rows == sorted(
        dropped_rows, reverse=True
    )
    assert len(set(dropped_rows)) > 2 and sum(dropped_rows) < sum(plain_rows)
    # ...and every row's tokens are generate's own, padding after the end included.
    assert torch_equal(plain, dropped)


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def test_finished_rows_stop_running_and_the_candidates_stay_generates(policy):
    model, tokenizer = policy
    _assert_fewer_rows_and_the_same_tokens(model, tokenizer)
    assert "forward" not in vars(model)  # the wrapper is gone after the call


def test_a_lora_policy_drops_its_finished_rows_too(lora_policy):
    _assert_fewer_rows_and_the_same_tokens(*lora_policy)


def test_a_step_that_is_not_plain_runs_every_row(policy):
    # Asked for hidden states, a step's forward carries an output flag: the whole
    # call is left to generate as it is.
    model, tokenizer = policy
    runs, _ = _generate_twice(
        model, tokenizer, output_hidden_states=True, return_dict_in_generate=True
    )
    (plain, plain_rows), (dropped, dropped_rows) = runs
    assert dropped_rows == plain_rows
    assert torch_equal(plain.sequences, dropped.sequences)


def test_the_forward_is_put_back_when_generate_fails(policy):
    from inference.generation import drop_finished_rows

    model, _ = policy
    with pytest.raises(RuntimeError, match="boom"):
        with drop_finished_rows(model, model.generation_config.eos_token_id or 0):
            assert "forward" in vars(model)
            raise RuntimeError("boom")
    assert "forward" not in vars(model)


class _EndingTokenizer:
    """The tiny tokenizer with END_TOKENS as its end tokens."""

    eos_token_id = END_TOKENS

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_the_candidates_path_drops_finished_rows(policy, monkeypatch):
    # generate_candidates (rounds' candidates, the loop's evaluation samples) runs
    # within drop_finished_rows: the same candidates as with every row run.
    import contextlib

    import inference.generation as generation

    model, tokenizer = policy
    tokenizer = _EndingTokenizer(tokenizer)
    sampling = SamplingConfig(num_candidates=3, max_new_tokens=12, seed=2)
    runs = []
    for drop in (True, False):
        if not drop:
            monkeypatch.setattr(
                generation,
                "drop_finished_rows",
                lambda model, eos: contextlib.nullcontext(),
            )
        rows, hook = _rows_a_step(model)
        try:
            candidates = generate_candidates(
                model, tokenizer, SHARED_PROMPTS, sampling, batch_size=8
            )
        finally:
            hook.remove()
        runs.append((candidates, rows))
    (dropped, dropped_rows), (plain, plain_rows) = runs
    assert dropped == plain
    assert sum(dropped_rows) < sum(plain_rows)
