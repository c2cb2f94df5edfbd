"""Registering a policy records its lineage and refuses duplicates and missing paths."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from inference.cards import read_card_metadata
from inference.models import Policy
from inference.registry import register_model, register_policy
from inference.sources import SourceError


def test_a_registered_policy_records_parent_config_and_snapshot(db, tmp_path):
    base = register_policy("base", base_path=tmp_path)
    (tmp_path / "adapter").mkdir()
    child = register_policy(
        "child",
        base_path=tmp_path,
        adapter_path=tmp_path / "adapter",
        parent=base,
        config={"lr": 1e-3},
        metrics={"win_rate": 0.6},
        snapshot_name="snap-1",
        snapshot_sha256="ab" * 32,
    )
    row = Policy.objects.get(name="child")
    assert (row.parent, row.adapter_path, row.config, row.metrics) == (
        base,
        str(tmp_path / "adapter"),
        {"lr": 1e-3},
        {"win_rate": 0.6},
    )
    assert (child.snapshot_name, child.kind, child.status) == (
        "snap-1",
        "policy",
        "ready",
    )


def test_a_taken_name_is_refused(db, tmp_path):
    register_policy("p", base_path=tmp_path)
    with pytest.raises(
        ValidationError, match="a policy named 'p' is already registered"
    ):
        register_policy("p", base_path=tmp_path)


def test_a_missing_base_folder_is_refused(db, tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        register_policy("p", base_path=tmp_path / "nope")
    assert Policy.objects.count() == 0


def test_a_missing_adapter_folder_is_refused(db, tmp_path):
    with pytest.raises(ValidationError, match="adapter_path .* does not exist"):
        register_policy("p", base_path=tmp_path, adapter_path=tmp_path / "nope")


def test_a_hub_id_is_accepted_as_base(db):
    assert register_policy("hub", base_path="HuggingFaceTB/SmolLM2-135M").base_path == (
        "HuggingFaceTB/SmolLM2-135M"
    )


# register_model: bringing a model in from a SOURCE.


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _pickle_folder(tiny_model_dir: Path, dest: Path) -> Path:
    """Copy the tiny model with its weights as a pickle (pytorch_model.bin) only."""
    import torch
    from safetensors.torch import load_file

    _copy(tiny_model_dir, dest)
    state = load_file(dest / "model.safetensors")
    (dest / "model.safetensors").unlink()
    torch.save(state, dest / "pytorch_model.bin")
    return dest


def _adapter(tiny_model_dir: Path, dest: Path, base_name: str) -> Path:
    """Save a LoRA adapter of the tiny model naming `base_name` as its base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(dest)
    (dest / "lora_parameters.txt").write_text(
        str(sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n))
    )
    config = json.loads((dest / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_name
    (dest / "adapter_config.json").write_text(json.dumps(config))
    return dest


def test_a_registered_folder_lands_in_model_dir_with_its_facts(
    db, settings, tiny_model_dir
):
    from transformers import AutoConfig, AutoModelForCausalLM

    policy = register_model("tiny", str(tiny_model_dir))
    folder = Path(settings.MODEL_DIR) / "tiny"
    weights = (folder / "model.safetensors").read_bytes()
    config = AutoConfig.from_pretrained(tiny_model_dir)
    parameters = AutoModelForCausalLM.from_pretrained(tiny_model_dir).num_parameters()
    assert (policy.base_path, policy.adapter_path, policy.source) == (
        str(folder),
        "",
        str(tiny_model_dir),
    )
    assert (
        policy.architecture,
        policy.parameter_count,
        policy.dtype,
        policy.context_length,
        policy.has_chat_template,
        policy.quantization,
    ) == (
        "LlamaForCausalLM",
        parameters,
        "float32",
        config.max_position_embeddings,
        True,
        "",
    )
    assert policy.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert policy.size_bytes == sum(
        f.stat().st_size for f in folder.rglob("*") if f.name != "README.md"
    )


def test_a_model_card_names_parent_snapshot_method_and_metrics(db, tiny_model_dir):
    base = register_model("tiny", str(tiny_model_dir))
    child = register_policy(
        "tiny-dpo",
        base_path=base.base_path,
        adapter_path=_copy(tiny_model_dir, Path(base.base_path).parent / "child"),
        parent=base,
        config={"beta": 0.1},
        metrics={"win_rate": 0.75},
        snapshot_name="snap-1",
        snapshot_sha256="cd" * 32,
        method="dpo",
    )
    meta = read_card_metadata(Path(child.adapter_path))
    lineage = meta["feedback_loop"]
    assert (meta["base_model"], meta["library_name"], meta["pipeline_tag"]) == (
        "tiny",
        "peft",
        "text-generation",
    )
    assert (
        lineage["parent"],
        lineage["snapshot"],
        lineage["snapshot_sha256"],
        lineage["method"],
        lineage["metrics"],
        lineage["weights_sha256"],
    ) == ("tiny", "snap-1", "cd" * 32, "dpo", {"win_rate": 0.75}, child.weights_sha256)
    text = (Path(child.adapter_path) / "README.md").read_text()
    assert '"beta": 0.1' in text
    assert read_card_metadata(Path(base.base_path))["feedback_loop"]["parent"] is None


def test_a_pickle_only_folder_is_refused_with_the_reason(
    db, settings, tmp_path, tiny_model_dir
):
    folder = _pickle_folder(tiny_model_dir, tmp_path / "pickled")
    with pytest.raises(ValidationError) as error:
        register_model("pickled", str(folder))
    message = str(error.value)
    assert "pytorch_model.bin" in message
    assert "arbitrary code" in message
    assert "--allow-pickle" in message
    assert not (Path(settings.MODEL_DIR) / "pickled").exists()
    assert Policy.objects.count() == 0


def test_allow_pickle_registers_a_pickle_only_folder(db, tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    folder = _pickle_folder(tiny_model_dir, tmp_path / "pickled")
    policy = register_model("pickled", str(folder), allow_pickle=True)
    parameters = AutoModelForCausalLM.from_pretrained(tiny_model_dir).num_parameters()
    assert (policy.parameter_count, policy.dtype) == (parameters, "float32")


def test_an_adapter_sits_on_the_base_its_config_names(db, tmp_path, tiny_model_dir):
    base = register_model("tiny", str(tiny_model_dir))
    adapter = _adapter(tiny_model_dir, tmp_path / "lora", str(tiny_model_dir))
    policy = register_model("tiny-lora", str(adapter))
    assert (policy.base_path, policy.parent, policy.architecture) == (
        base.base_path,
        base,
        "LlamaForCausalLM",
    )
    assert Path(policy.adapter_path).name == "tiny-lora"
    assert (Path(policy.adapter_path) / "adapter_model.safetensors").is_file()
    lora_parameters = int((adapter / "lora_parameters.txt").read_text())
    assert policy.parameter_count == lora_parameters


def test_base_option_names_the_adapters_base(db, tmp_path, tiny_model_dir):
    base = register_model("tiny", str(tiny_model_dir))
    adapter = _adapter(tiny_model_dir, tmp_path / "lora", "some-org/unregistered")
    policy = register_model("tiny-lora", str(adapter), base="tiny")
    assert (policy.base_path, policy.parent) == (base.base_path, base)


def test_an_adapter_of_an_unregistered_base_names_the_base_and_the_fix(
    db, settings, tmp_path, tiny_model_dir
):
    adapter = _adapter(tiny_model_dir, tmp_path / "lora", "some-org/unregistered")
    with pytest.raises(ValidationError) as error:
        register_model("tiny-lora", str(adapter))
    assert "'some-org/unregistered'" in str(error.value)
    assert "--base NAME" in str(error.value)
    with pytest.raises(
        ValidationError, match="--base 'nope' is not a registered model"
    ):
        register_model("tiny-lora", str(adapter), base="nope")
    assert not (Path(settings.MODEL_DIR) / "tiny-lora").exists()


def test_an_offline_hub_id_gives_an_error_naming_it(db, settings, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError) as error:
        register_model("smol", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "'HuggingFaceTB/SmolLM2-135M-Instruct'" in str(error.value)
    assert "register the folder" in str(error.value)
    assert not (Path(settings.MODEL_DIR) / "smol").exists()


@pytest.mark.parametrize(
    "make_source",
    [
        lambda tmp: tmp / "missing-folder",
        lambda tmp: (tmp / "weights.txt").write_text("x") and tmp / "weights.txt",
        lambda tmp: (tmp / "empty").mkdir() or tmp / "empty",
    ],
    ids=["missing", "not-gguf", "no-config"],
)
def test_a_bad_source_names_the_value_and_what_to_give(db, tmp_path, make_source):
    source = str(make_source(tmp_path))
    with pytest.raises(SourceError) as error:
        register_model("bad", source)
    assert repr(source) in str(error.value)
    assert "give a Hugging Face model folder" in str(error.value)


def test_a_broken_gguf_file_leaves_no_folder_and_no_row(db, settings, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(SourceError, match="broken.gguf"):
        register_model("broken", str(broken))
    assert list(Path(settings.MODEL_DIR).iterdir()) == []
    assert Policy.objects.count() == 0


def test_a_chat_template_file_gives_a_model_its_template(db, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    bare = _copy(tiny_model_dir, tmp_path / "bare")
    for name in ("chat_template.jinja", "chat_template.json"):
        (bare / name).unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    assert register_model("bare", str(bare)).has_chat_template is False
    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}<{{ m['content'] }}>{% endfor %}")
    policy = register_model("templated", str(bare), chat_template=str(template))
    tokenizer = AutoTokenizer.from_pretrained(policy.base_path)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )
    assert (policy.has_chat_template, rendered) == (True, "<hi>")


@pytest.mark.parametrize("name", ["", "../up", ".hidden", "a/b", "sp ace"])
def test_a_name_that_cannot_be_a_folder_is_refused(db, tiny_model_dir, name):
    with pytest.raises(ValidationError, match="model name .* must be"):
        register_model(name, str(tiny_model_dir))


def test_a_taken_name_is_refused_before_anything_is_copied(db, settings, tmp_path):
    register_policy("taken", base_path=tmp_path)
    with pytest.raises(ValidationError, match="'taken' is already registered"):
        register_model("taken", str(tmp_path / "does-not-matter"))
    assert not (Path(settings.MODEL_DIR) / "taken").exists()


def test_a_card_is_written_only_into_the_platforms_own_folders(db, tmp_path):
    (tmp_path / "README.md").write_text("the user's own notes")
    register_policy("outside", base_path=tmp_path)
    assert (tmp_path / "README.md").read_text() == "the user's own notes"
