"""The tiny demo models: folders that load back, a build that trains, registers and skips."""

import json
import math
import shutil

from django.core.management import call_command
from transformers import AutoModelForCausalLM, AutoTokenizer

from demo.policies import (
    build_demo_models,
    read_build_info,
    register_demo_models,
)
from inference.models import Policy


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


def test_pretraining_lowers_the_loss_and_records_it(demo_models):
    metrics = read_build_info(demo_models["base"])["metrics"]
    assert math.isfinite(metrics["pretrain_loss"])
    assert metrics["pretrain_loss"] < metrics["pretrain_initial_loss"]
    assert read_build_info(demo_models["base"])["config"]["preset"] == "micro"


def test_the_demo_corpus_is_curated_and_pretrained_with_the_platform_stage(
    demo_models,
):
    from annotation.curation import CORPUS_FILTERS
    from training.pretrain import PretrainConfig

    metrics = read_build_info(demo_models["base"])["metrics"]
    curation = metrics["curation"]
    assert curation["total"] == 200
    assert curation["kept"] == metrics["pretrain_documents"]
    assert curation["kept"] + curation["dropped"] == 200
    assert curation["filters"] == CORPUS_FILTERS.to_dict()
    assert metrics["pretrain_perplexity"] < metrics["pretrain_perplexity_before"]
    # The stage's own record of its config sits beside the weights.
    stage_config = json.loads(
        (demo_models["base"] / "training_config.json").read_text()
    )
    assert PretrainConfig.from_dict(stage_config).max_length == 64


def test_the_sft_model_is_fine_tuned_from_the_base_and_keeps_the_chat_template(
    demo_models,
):
    import torch

    base = AutoModelForCausalLM.from_pretrained(demo_models["base"])
    sft = AutoModelForCausalLM.from_pretrained(demo_models["sft"])
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            base.state_dict().values(), sft.state_dict().values(), strict=False
        )
    ]
    assert all(changed)
    tokenizer = AutoTokenizer.from_pretrained(demo_models["sft"])
    assert (
        tokenizer.chat_template
        == AutoTokenizer.from_pretrained(demo_models["base"]).chat_template
    )
    samples = read_build_info(demo_models["sft"])["metrics"]["samples"]
    assert samples["n"] == 16


def test_a_second_build_keeps_the_finished_folders(demo_models):
    before = {
        k: (p / "model.safetensors").stat().st_mtime_ns for k, p in demo_models.items()
    }
    again = build_demo_models(
        demo_models["base"].parent, "micro", seed=0, progress=False
    )
    assert again == demo_models
    assert {
        k: (p / "model.safetensors").stat().st_mtime_ns for k, p in again.items()
    } == before


def test_registering_records_lineage_and_is_idempotent(db, demo_models):
    rows = register_demo_models(demo_models)
    assert (rows["base"].name, rows["sft"].name) == ("demo-base", "demo-sft")
    assert rows["sft"].parent == rows["base"]
    assert rows["sft"].base_path == str(demo_models["sft"])
    assert rows["sft"].metrics["samples"]["n"] == 16
    register_demo_models(demo_models)
    assert Policy.objects.count() == 2


def test_the_command_registers_models_already_built_without_rebuilding(
    db, demo_models, tmp_path, capsys
):
    for _key, path in demo_models.items():
        shutil.copytree(path, tmp_path / path.name)
    call_command("build_demo_models", "--preset", "micro", "--out", str(tmp_path))
    assert Policy.objects.get(name="demo-sft").base_path == str(tmp_path / "demo-sft")
    assert Policy.objects.get(name="demo-sft").parent.name == "demo-base"
    assert "demo-sft: " + str(tmp_path / "demo-sft") in capsys.readouterr().out
