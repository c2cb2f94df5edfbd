#!/usr/bin/env bash
# GPU generation throughput of the transformers backend: plain `generate` (dynamic KV
# cache, eager) vs a static KV cache whose decode step transformers compiles with
# torch.compile (mode "reduce-overhead", i.e. CUDA graphs). A randomly initialised
# ~0.46B Llama-like model in bf16, batch 64, 128 new tokens (min = max, so both do the
# same work), sampling at temperature 1 with top-k off. Prints tokens/s of each and
# the ratio; the target is >= 3x. Needs a CUDA GPU; run from the repository root:
#   bash bench/gpu_generate.sh            (BENCH_TINY=1 for a CPU smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" - <<'PYEOF'
import os
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

tiny = os.environ.get("BENCH_TINY") == "1"
device = "cpu" if tiny else "cuda"
if not tiny and not torch.cuda.is_available():
    raise SystemExit("bench/gpu_generate.sh needs a CUDA GPU (BENCH_TINY=1 runs a CPU smoke test)")
batch, prompt_len, new = (4, 8, 8) if tiny else (64, 32, 128)
config = LlamaConfig(
    vocab_size=32000,
    hidden_size=64 if tiny else 1024,
    intermediate_size=128 if tiny else 4096,
    num_hidden_layers=2 if tiny else 24,
    num_attention_heads=4 if tiny else 16,
    num_key_value_heads=4 if tiny else 16,
    max_position_embeddings=256,
    bos_token_id=1, eos_token_id=2, pad_token_id=0,
)
torch.manual_seed(0)
dtype = torch.float32 if tiny else torch.bfloat16
model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
params = sum(p.numel() for p in model.parameters())
ids = torch.randint(3, config.vocab_size, (batch, prompt_len), device=device)
mask = torch.ones_like(ids)
common = dict(
    input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
    max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
)


def run(label: str, repeats: int, **extra) -> float:
    """Return generated tokens per second over `repeats` timed calls after one warm-up."""
    with torch.inference_mode():
        model.generate(**common, **extra)  # warm-up: compilation, CUDA graph capture
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            out = model.generate(**common, **extra)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    tokens = (out.shape[1] - prompt_len) * batch * repeats
    rate = tokens / elapsed
    print(f"{label:<32} {rate:>10.0f} tokens/s  ({tokens} tokens in {elapsed:.2f} s)", flush=True)
    return rate


print(f"model: {params / 1e9:.2f}B parameters, {dtype}, {device}; batch {batch}, {new} new tokens")
plain = run("plain generate (dynamic cache)", 2)
static = run("static cache + torch.compile", 3, cache_implementation="static")
print(f"ratio: {static / plain:.2f}x (target >= 3x)")
PYEOF
