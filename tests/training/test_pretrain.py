"""Tests for training/pretrain.py: continued pre-training on a curated corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from annotation.curation import CORPUS_FILTERS, curate
from tests.training.ml_data import write_jsonl
from training import pretrain
from training.progress import Reporter

pytestmark = pytest.mark.usefixtures("one_thread")

JUNK = [
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "1234 5678 9012 3456 7890 1234 5678 9012",
    "Too short.",
]


def corpus(n: int, seed: int = 0) -> list[str]:
    """Return `n` documents of facts about the tiny model's animals, plus junk and copies."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        facts = [
            f"The {rng.choice(('red', 'blue', 'green', 'small', 'big'))} "
            f"{rng.choice(('cat', 'dog', 'bird', 'fox'))} has {rng.randint(2, 8)} legs "
            f"and likes {rng.choice(('apples', 'fish', 'seeds'))}."
            for _ in range(rng.randint(3, 5))
        ]
        docs.append(" ".join(facts))
    return docs + JUNK + docs[:5]


def curated_corpus(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """Curate the corpus as a project's upload is curated; write the kept documents."""
    docs = corpus(n)
    curated = curate(docs, CORPUS_FILTERS)
    kept = [docs[i] for i in curated.kept]
    return write_jsonl(tmp_path / "corpus.jsonl", [{"text": d} for d in kept]), kept


def run(tmp_path: Path, name: str, config, data: Path) -> dict:
    reporter = Reporter(tmp_path / name)
    return pretrain.train(
        config, data_path=data, output_dir=reporter.output_dir, reporter=reporter
    )


def test_the_curated_corpus_lost_its_junk_and_copies(tmp_path):
    _, kept = curated_corpus(tmp_path, 60)
    assert len(kept) == 60
    assert not set(JUNK) & set(kept)


@pytest.mark.slow
def test_pretraining_lowers_held_out_perplexity_of_a_tiny_model(
    tiny_model_dir, tmp_path
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data, kept = curated_corpus(tmp_path, 120)
    config = pretrain.PretrainConfig(
        base_path=str(tiny_model_dir),
        max_steps=30,
        per_device_train_batch_size=8,
        max_length=64,
        learning_rate=3e-3,
        eval_fraction=0.2,
        save_steps=100,
    )
    metrics = run(tmp_path, "full", config, data)

    _, held_out = pretrain.split_held_out(kept, 0.2, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    before = pretrain.perplexity(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, held_out, 64
    )
    after = pretrain.perplexity(
        AutoModelForCausalLM.from_pretrained(tmp_path / "full" / "output"),
        tokenizer,
        held_out,
        64,
    )
    assert metrics["steps"] == 30.0
    assert metrics["eval_documents"] == 24.0
    assert metrics["eval_perplexity_before"] == pytest.approx(before, rel=1e-4)
    assert metrics["eval_perplexity"] == pytest.approx(after, rel=1e-4)
    assert after < 0.5 * before
    output = tmp_path / "full" / "output"
    assert json.loads((output / "training_config.json").read_text()) == config.to_dict()


def test_pretraining_with_lora_saves_an_adapter_on_the_base(tiny_model_dir, tmp_path):
    data, _ = curated_corpus(tmp_path, 30)
    config = pretrain.PretrainConfig(
        base_path=str(tiny_model_dir),
        use_lora=True,
        max_steps=2,
        per_device_train_batch_size=4,
        max_length=32,
    )
    metrics = run(tmp_path, "lora", config, data)

    adapter = json.loads(
        (tmp_path / "lora" / "output" / "adapter_config.json").read_text()
    )
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)
    assert metrics["eval_perplexity"] > 0


def test_perplexity_is_the_same_in_batches_as_block_by_block(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    docs = corpus(20)
    one = pretrain.perplexity(model, tokenizer, docs, 32, batch_size=1)
    many = pretrain.perplexity(model, tokenizer, docs, 32, batch_size=8)
    assert many == pytest.approx(one, rel=1e-5)
    assert 50 < one < 2000  # a random model: about the vocabulary's size


def test_held_out_split_is_seeded_and_disjoint():
    docs = [f"document {i}" for i in range(40)]
    train, held = pretrain.split_held_out(docs, 0.1, seed=3)
    assert len(held) == 4
    assert sorted(train + held) == sorted(docs)
    assert pretrain.split_held_out(docs, 0.1, seed=3) == (train, held)
    assert pretrain.split_held_out(docs, 0.0, seed=3) == (docs, [])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"eval_fraction": 0.9}, "eval_fraction must be in [0, 0.5], got 0.9"),
        ({"max_length": 4}, "max_length must be"),
        ({"trl_args": {"push_to_hub": True}}, "trl_args field(s) ['push_to_hub']"),
    ],
)
def test_bad_config_values_are_refused(values, message):
    with pytest.raises(ValueError) as error:
        pretrain.PretrainConfig(**values)
    assert str(error.value).startswith(message)
