"""The tiny demo models: a BPE tokenizer with a chat template, a Llama, and their build.

Everything here builds locally from text the project generates; nothing is downloaded.
`build_demo_models` curates the demo domain's corpus with the platform's curation
(`annotation.curation`, the corpus filters an upload gets), pre-trains `demo-base`
from a random initialisation with the platform's pretrain stage code
(`training.pretrain`), then fine-tunes `demo-sft` from it with TRL's `SFTTrainer`
on the domain's demonstrations (see `demo.world`). Plain Python, no Django.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from demo.world import check_share

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
    "micro": ModelSize(
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=400
    ),
    # The demo: ~1M parameters, learns the demo domain in a few CPU minutes.
    "demo": ModelSize(
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        intermediate_size=256,
        vocab_size=1000,
    ),
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


BUILD_INFO_FILE = "build_info.json"
SFT_MAX_LENGTH = 256  # tokens; no demo prompt + response comes near it


@dataclass(frozen=True)
class BuildPlan:
    """How much data and how many steps a preset's build uses."""

    corpus_docs: int
    pretrain_steps: int
    pretrain_batch: int
    block_size: int
    pretrain_lr: float
    sft_examples: int
    sft_steps: int
    sft_batch: int
    sft_lr: float
    eval_prompts: int
    # The share of train questions SFT demonstrates; the rest reach the policy only
    # through labelling rounds (`demo.world.demonstrated`).
    sft_question_share: float = 1.0

    def __post_init__(self) -> None:
        check_share(self.sft_question_share)


PLANS = {
    # Tests: well under 30 s on 2 quiet cores; the model learns little beyond the format.
    "micro": BuildPlan(
        corpus_docs=200,
        pretrain_steps=20,
        pretrain_batch=8,
        block_size=64,
        pretrain_lr=3e-3,
        sft_examples=200,
        sft_steps=20,
        sft_batch=8,
        sft_lr=3e-3,
        eval_prompts=4,
    ),
    # The demo: a few CPU minutes; learns the format, the style mix and most facts.
    # Pre-training reads 12,000 documents for 2,000 steps: four times the 24-creature
    # world's, as the zoo has four times the creatures (the base completes every
    # split's statements; SFT answers 78% of the test questions greedily).
    # SFT runs 1,200 steps on 19,200 demonstrations: on the 24-creature world, at 400
    # steps the model had not learnt to copy the name or creature asked about (it
    # greeted one fixed person whoever was named), so it answered held-out questions
    # from memory of the training ones (greedy test accuracy 0.30; 0.46 at 1,200).
    "demo": BuildPlan(
        corpus_docs=12000,
        pretrain_steps=2000,
        pretrain_batch=16,
        block_size=64,
        pretrain_lr=2e-3,
        sft_examples=19200,
        sft_steps=1200,
        sft_batch=16,
        sft_lr=1e-3,
        eval_prompts=32,
    ),
}


def build_demo_models(
    out_dir: Path, preset: str, seed: int, progress: bool, force: bool = False
) -> dict[str, Path]:
    """Build `demo-base` and `demo-sft` under out_dir; return {"base": path, "sft": path}.

    A model folder that already exists is complete (folders are renamed into place
    only when finished) and is kept, unless `force` rebuilds both. Each folder holds
    the weights, the tokenizer and build_info.json (the plan, seed and metrics).
    """
    from demo.world import sft_examples
    from inference.artifacts import atomic_dir

    if preset not in PLANS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PLANS)}")
    plan, size = PLANS[preset], SIZES[preset]
    out_dir = Path(out_dir)
    paths = {"base": out_dir / "demo-base", "sft": out_dir / "demo-sft"}
    if force:
        for path in paths.values():
            shutil.rmtree(path, ignore_errors=True)
    config = {
        "preset": preset,
        "seed": seed,
        "plan": asdict(plan),
        "size": asdict(size),
    }
    if not paths["base"].exists():
        corpus, curation = curated_corpus(plan.corpus_docs, seed)
        examples = sft_examples(plan.sft_examples, seed + 1, plan.sft_question_share)
        tokenizer = train_tokenizer(
            corpus + [_chat_text(e) for e in examples], size.vocab_size
        )
        model = init_model(tokenizer, size, seed=seed)
        with atomic_dir(paths["base"]) as tmp:
            metrics = pretrain(model, tokenizer, corpus, plan, seed, tmp)
            metrics["curation"] = curation
            _write_info(tmp, config, metrics)
    if not paths["sft"].exists():
        examples = sft_examples(plan.sft_examples, seed + 1, plan.sft_question_share)
        with atomic_dir(paths["sft"]) as tmp:
            metrics = fine_tune(paths["base"], tmp, examples, plan, seed, progress)
            metrics["samples"] = sample_judge_stats(tmp, plan.eval_prompts, seed)
            _write_info(tmp, config, metrics)
    return paths


def read_build_info(path: Path) -> dict[str, Any]:
    """Return the build_info.json of a built demo model folder."""
    return json.loads((Path(path) / BUILD_INFO_FILE).read_text())


def curated_corpus(n_docs: int, seed: int) -> tuple[list[str], dict[str, Any]]:
    """Return the demo corpus after the platform's corpus curation, and its report."""
    from annotation.curation import CORPUS_FILTERS, curate
    from demo.world import pretraining_corpus

    docs = pretraining_corpus(n_docs, seed)
    curated = curate(docs, CORPUS_FILTERS)
    report = curated.report(len(docs))
    report["filters"] = CORPUS_FILTERS.to_dict()
    return [docs[i] for i in curated.kept], report


def pretrain(
    model,
    tokenizer,
    corpus: list[str],
    plan: BuildPlan,
    seed: int,
    out_dir: Path,
) -> dict:
    """Pre-train the model by next-token prediction with the platform's pretrain stage.

    The freshly initialised model is saved as the stage's base, the corpus written
    as the JSONL a corpus upload stores, and `training.pretrain.train` runs on
    them (packed blocks of `block_size` tokens, cosine decay after a 5% warm-up,
    2% of the documents held out for perplexity), saving into `out_dir`. Return
    the first and last logged loss, the held-out perplexity before and after, and
    the stage's other figures.
    """
    import tempfile

    from training.pretrain import PretrainConfig, train
    from training.progress import Reporter, read_progress

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="demo-pretrain-") as work:
        work = Path(work)
        model.save_pretrained(work / "init")
        tokenizer.save_pretrained(work / "init")
        data = work / "corpus.jsonl"
        data.write_text("".join(json.dumps({"text": d}) + "\n" for d in corpus))
        config = PretrainConfig(
            base_path=str(work / "init"),
            max_steps=plan.pretrain_steps,
            per_device_train_batch_size=plan.pretrain_batch,
            max_length=plan.block_size,
            learning_rate=plan.pretrain_lr,
            warmup_steps=0.05,
            eval_fraction=0.02,
            save_steps=plan.pretrain_steps + 1,  # no checkpoint: the build is short
            logging_steps=max(1, plan.pretrain_steps // 20),
            seed=seed,
            trl_args={"lr_scheduler_type": "cosine", "weight_decay": 0.01},
        )
        reporter = Reporter(work / "run")
        metrics = train(config, data_path=data, output_dir=out_dir, reporter=reporter)
        losses = [
            line["loss"] for line in read_progress(work / "run")[0] if "loss" in line
        ]
    return {
        "pretrain_initial_loss": round(losses[0], 4),
        "pretrain_loss": round(losses[-1], 4),
        "pretrain_perplexity_before": round(metrics["eval_perplexity_before"], 3),
        "pretrain_perplexity": round(metrics["eval_perplexity"], 3),
        "pretrain_documents": len(corpus),
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_s": round(time.monotonic() - start, 1),
    }


def fine_tune(
    base_dir: Path,
    out_dir: Path,
    examples: list[dict],
    plan: BuildPlan,
    seed: int,
    progress: bool,
) -> dict:
    """Fine-tune the base with TRL's SFTTrainer on prompt/completion chat examples.

    The loss covers the completion only (TRL's default for prompt/completion data).
    bf16 and gradient checkpointing are off and the learning rate suits a tiny model
    (TRL's defaults are for large ones). Save model and tokenizer to out_dir.
    """
    import tempfile

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="demo-sft-run-") as run_dir:
        args = SFTConfig(
            output_dir=run_dir,
            max_steps=plan.sft_steps,
            per_device_train_batch_size=plan.sft_batch,
            learning_rate=plan.sft_lr,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            weight_decay=0.01,
            logging_steps=max(1, plan.sft_steps // 10),
            save_strategy="no",
            report_to="none",
            bf16=False,  # TRL's default is True: far slower on the CPU
            activation_checkpointing=False,  # TRL turns it on by default: 10x slower here
            dataloader_pin_memory=False,
            max_length=SFT_MAX_LENGTH,
            seed=seed,
            disable_tqdm=not progress,
            dataloader_num_workers=0,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(examples),
            processing_class=tokenizer,
        )
        result = trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(out_dir)
    return {
        "sft_loss": round(losses[-1], 4) if losses else None,
        "sft_train_loss": round(result.training_loss, 4),
        "sft_steps": plan.sft_steps,
        "wall_s": round(time.monotonic() - start, 1),
    }


def sample_judge_stats(model_dir: Path, n_prompts: int, seed: int) -> dict[str, Any]:
    """Return how the judge sees the model's samples (temperature 1, 4 per prompt).

    Reports the mean and spread of the judge's total and the share of each answer
    kind, politeness sign and rambling, so one can check the samples really vary.
    """
    import statistics

    from demo.world import judge_score, make_prompts
    from inference.generation import generate_candidates
    from inference.loading import load_for_generation
    from inference.sampling import SamplingConfig

    model, tokenizer = load_for_generation(str(model_dir), device="cpu")
    # Dev questions: the SFT demonstrations never asked them.
    prompts = make_prompts(n_prompts, seed + 7, split="dev")
    sampling = SamplingConfig(
        temperature=1.0, num_candidates=4, seed=seed, max_new_tokens=64
    )
    candidates = generate_candidates(model, tokenizer, prompts, sampling)
    scores = [
        judge_score(p, c)
        for p, cs in zip(prompts, candidates, strict=False)
        for c in cs
    ]
    n = len(scores)
    totals = [s.total for s in scores]

    def share(pred) -> float:
        return round(sum(1 for s in scores if pred(s)) / n, 3)

    return {
        "n": n,
        "judge_mean": round(statistics.fmean(totals), 3),
        "judge_std": round(statistics.pstdev(totals), 3),
        "judge_min": min(totals),
        "judge_max": max(totals),
        "correct": share(lambda s: s.answer == "correct"),
        "wrong": share(lambda s: s.answer == "wrong"),
        "evasive": share(lambda s: s.answer == "evasive"),
        "no_answer": share(lambda s: s.answer == "none"),
        "polite": share(lambda s: s.politeness > 0),
        "curt": share(lambda s: s.politeness < 0),
        "rambling": share(lambda s: s.concision < 0),
        "distinct_responses": round(len({c for cs in candidates for c in cs}) / n, 3),
    }


def _chat_text(example: dict) -> str:
    """Return an SFT example as the chat-formatted text the tokenizer will see."""
    messages = example["prompt"] + example["completion"]
    return "".join(f"<|{m['role']}|>{m['content']}{EOS}" for m in messages)


def _write_info(folder: Path, config: dict, metrics: dict) -> None:
    (Path(folder) / BUILD_INFO_FILE).write_text(
        json.dumps({"config": config, "metrics": metrics}, indent=2)
    )


def register_demo_models(paths: dict[str, Path]) -> dict[str, Any]:
    """Register (or refresh) `demo-base` and `demo-sft` for built folders; return the rows.

    Idempotent: a row that exists is pointed at the folder and its build info, so a
    rebuild (--force, another --out) never leaves the registry naming stale weights.
    Django is imported here so that the build itself stays plain Python.
    """
    from django.db import transaction

    from inference.models import Policy
    from inference.registry import register_policy

    rows: dict[str, Any] = {}
    with transaction.atomic():
        for key, name, parent_key in (
            ("base", "demo-base", None),
            ("sft", "demo-sft", "base"),
        ):
            info = read_build_info(paths[key])
            parent = rows[parent_key] if parent_key else None
            row = Policy.objects.filter(name=name).first()
            if row is None:
                row = register_policy(
                    name,
                    base_path=str(paths[key]),
                    parent=parent,
                    config=info["config"],
                    metrics=info["metrics"],
                )
            elif (row.base_path, row.config, row.metrics) != (
                str(paths[key]),
                info["config"],
                info["metrics"],
            ):
                row.base_path, row.config, row.metrics = (
                    str(paths[key]),
                    info["config"],
                    info["metrics"],
                )
                row.parent = parent
                row.save(update_fields=["base_path", "config", "metrics", "parent"])
            rows[key] = row
    return rows
