"""The baseline of bench/train_overhead.py: DPO or a reward model with TRL, nothing else.

A script a researcher would write by hand: load the model and the exported JSONL,
train with TRL, save. No platform import. Its settings mirror the platform's stage
defaults (training/dpo.py, training/reward.py) so both runs do the same work.

    python bench/bare_trl.py dpo MODEL_DIR DATA.jsonl OUT_DIR --steps 30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("method", choices=["dpo", "reward"])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "right"
    dataset = Dataset.from_list(rows(Path(args.data)))
    common = dict(
        output_dir=str(Path(args.out) / "checkpoints"),
        report_to="none",
        save_strategy="steps",
        save_steps=50,
        save_total_limit=2,
        logging_steps=1,
        bf16=False,
        gradient_checkpointing=False,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        seed=args.seed,
        data_seed=args.seed,
        max_length=256,
    )
    if args.method == "dpo":
        from transformers import AutoModelForCausalLM
        from trl import DPOConfig, DPOTrainer

        model = AutoModelForCausalLM.from_pretrained(args.model, dtype="float32")
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(
                learning_rate=5e-4, loss_type=["sigmoid", "sft"], beta=0.1, **common
            ),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=16,
                lora_alpha=32,
                lora_dropout=0.0,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
        trainer.train()
        trainer.model.save_pretrained(
            Path(args.out) / "output", selected_adapters=["default"]
        )
    else:
        from transformers import AutoModelForSequenceClassification
        from trl import RewardConfig, RewardTrainer

        torch.manual_seed(args.seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            args.model, num_labels=1, dtype="float32"
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(learning_rate=5e-4, **common),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        trainer.train()
        trainer.model.save_pretrained(Path(args.out) / "output")
    tokenizer.save_pretrained(Path(args.out) / "output")
    runtime = [
        e["train_runtime"] for e in trainer.state.log_history if "train_runtime" in e
    ]
    print(json.dumps({"train_runtime": runtime[-1] if runtime else None}))


if __name__ == "__main__":
    main()
