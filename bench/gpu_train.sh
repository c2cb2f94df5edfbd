#!/usr/bin/env bash
# GPU training throughput of the platform's own stages: reward model (TRL
# RewardTrainer), DPO (TRL DPOTrainer, full weights, reference log-probs
# precomputed) and PPO (training/ppo.py), each 30 steps on a randomly
# initialised ~0.4B Llama-like model in bf16 mixed precision, without gradient
# checkpointing. Prints tokens/s and model-FLOPs utilisation against the card's
# bf16 dense peak (790 TFLOP/s for H100/H200 SXM; PEAK_TFLOPS overrides).
#
# Model FLOPs per token: 6N for a trained forward+backward (N = parameters, the
# attention term is left out: it is small at these lengths, so MFU is slightly
# understated). DPO counts 6N per chosen/rejected token (the precomputed
# reference pass is outside the timed loop, as TRL does it before training);
# PPO counts, per rollout token, 2N each for old log-probs, reference, values
# and reward, plus 6N for policy and value per PPO epoch, plus 2N per generated
# token; its wall time includes generation, which is memory-bound, so PPO's MFU
# is by nature far below the trainers'.
#
# Run from the repository root:  bash bench/gpu_train.sh
# (BENCH_TINY=1 runs a seconds-long CPU smoke test of the same code.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" - <<'PYEOF'
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
import torch

from training import dpo, ppo, reward
from training.demo_models import ModelSize, init_model, train_tokenizer
from training.progress import Reporter

tiny = os.environ.get("BENCH_TINY") == "1"
if not tiny and not torch.cuda.is_available():
    raise SystemExit("bench/gpu_train.sh needs a CUDA GPU (BENCH_TINY=1 runs a CPU smoke test)")
peak = float(os.environ.get("PEAK_TFLOPS", "790")) * 1e12
steps = 2 if tiny else 30
size = (ModelSize(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                  vocab_size=500, max_positions=1024) if tiny else
        ModelSize(hidden_size=1024, num_layers=28, num_heads=16, intermediate_size=3072,
                  vocab_size=8000, max_positions=1024))
work = Path(tempfile.mkdtemp(prefix="gpu-train-"))
rng = random.Random(0)
words = [f"w{i}" for i in range(3000)]


def text(n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


# A tokenizer and a random model; the data are random words (throughput only).
tokenizer = train_tokenizer([text(200) for _ in range(2000)], vocab_size=size.vocab_size)
model = init_model(tokenizer, size, seed=0)
params = sum(p.numel() for p in model.parameters())
base = work / "base"
model.save_pretrained(base)
tokenizer.save_pretrained(base)
del model
print(f"device {torch.cuda.get_device_name() if not tiny else 'cpu'}; model {params / 1e6:.0f}M "
      f"parameters; {steps} steps per stage; peak {peak / 1e12:.0f} TFLOP/s")

prompt_words, answer_words = (8, 8) if tiny else (96, 160)
pairs = [{"prompt": [{"role": "user", "content": text(prompt_words)}],
          "chosen": [{"role": "assistant", "content": text(answer_words)}],
          "rejected": [{"role": "assistant", "content": text(answer_words)}]}
         for _ in range(steps * 32)]
data = work / "pairs.jsonl"
data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
results = {}


def report(name: str, tokens: float, seconds: float, flops_per_token: float) -> None:
    rate = tokens / seconds
    mfu = rate * flops_per_token / peak
    results[name] = {"tokens_per_s": round(rate), "mfu": round(mfu, 4), "seconds": round(seconds, 1)}
    print(f"{name:7s} {rate:10.0f} tokens/s  MFU {100 * mfu:5.1f}%  ({tokens:.0f} tokens in {seconds:.1f} s)")


# ---- reward model: 30 steps of 32 pairs, 6N per token
run = Reporter(work / "rm")
m = reward.train(reward.RewardConfig(base_path=str(base), max_steps=steps, per_device_train_batch_size=32,
                                     max_length=1024, learning_rate=1e-5, eval_fraction=0.0, bf16=not tiny,
                                     save_steps=10_000, logging_steps=steps),
                 data_path=data, output_dir=run.output_dir, reporter=run)
report("reward", m["num_tokens"], m["train_runtime"], 6 * params)

# ---- DPO: full weights, reference log-probs computed once before the timed training
run = Reporter(work / "dpo")
m = dpo.train(dpo.DPOConfig(base_path=str(base), use_lora=False, max_steps=steps,
                            per_device_train_batch_size=16, max_length=1024, learning_rate=1e-6,
                            precompute_ref_log_probs=True, bf16=not tiny, save_steps=10_000,
                            logging_steps=steps),
              data_path=data, output_dir=run.output_dir, reporter=run)
report("dpo", m["num_tokens"], m["train_runtime"], 6 * params)

# ---- PPO (ours): value model from the reward model just trained
run = Reporter(work / "ppo")
config = ppo.PPOConfig(base_path=str(base), reward_model_path=str(work / "rm" / "output"),
                       max_steps=steps, batch_size=64, mini_batch_size=16, ppo_epochs=2,
                       max_new_tokens=8 if tiny else 128, learning_rate=1e-6,
                       bf16=not tiny, save_steps=10_000)
start = time.time()
ppo.train(config, data_path=data, output_dir=run.output_dir, reporter=run)
seconds = time.time() - start
lines = [json.loads(x) for x in (run.run_dir / "progress.jsonl").read_text().splitlines()]
tokens = sum(x["tokens"] for x in lines)
generated = sum(x["response_length"] * config.batch_size for x in lines)
flops = tokens * (4 * 2 * params + config.ppo_epochs * 2 * 6 * params) + generated * 2 * params
report("ppo", tokens, seconds, flops / tokens)
print(json.dumps(results))
PYEOF
