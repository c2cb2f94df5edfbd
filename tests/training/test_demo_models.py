"""The tiny model and tokenizer load back as ordinary Hugging Face folders."""
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_model_folder_loads_and_formats_chat(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>hi<|end|><|assistant|>"
    assert tokenizer.eos_token == "<|end|>"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    ids = tokenizer("The red cat has 4 legs.", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tokenizer)
