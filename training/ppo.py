"""Proximal policy optimisation of a policy against a reward model: the classic RLHF step.

TRL removed its PPO trainer, so this file is ours, on torch, transformers, PEFT
and accelerate. It follows Huang et al. 2024, "The N+ Implementation Details of
RLHF with PPO: A Case Study on TL;DR Summarization"; each choice below says
which detail it implements and why.

One update ("step") is:
  1. Rollout: sample `batch_size` distinct prompts, generate one response each
     with pure sampling (temperature only, no top-k/top-p: the sampled
     distribution must be the policy's own, or the log-probabilities used in the
     ratio are wrong).
  2. Score: truncate each response after its first end token, decode it, and let
     the reward model score prompt + response (it may have its own tokenizer).
     A response cut off without an end token has `missing_eos_penalty`
     subtracted from its score (Huang et al. replace the score by -1; the scale
     of our reward models is not known in advance, so we subtract instead).
     With `score_norm_batches`, scores are first normalised on the starting
     policy's samples (mean 0, std 1 there, as Ziegler et al. 2019 normalise
     their reward model), so the penalty and `kl_coef` mean the same whatever
     the reward model's scale. With `reward_ensemble_paths`, several reward
     models score each response and the score is their mean, each normalised
     on its own first (Coste et al. 2023 average an ensemble against
     over-optimisation of any one reward model).
  3. Per-token reward: -kl_coef * (log pi - log pi_ref) on every response token
     (the k1 estimator), plus the score on the last token.
  4. Advantages with GAE (gamma=1, lambda=0.95), returns = advantages + values,
     advantages whitened over the batch's response tokens.
  5. `ppo_epochs` passes over the batch in shuffled minibatches: clipped policy
     loss, clipped value loss, one Adam step per minibatch.
  6. Adaptive KL coefficient (Ziegler et al. 2019) when `target_kl` is set.

Other details taken from the paper:
- Logits are divided by the sampling temperature whenever log-probabilities are
  computed, so that they are those of the distribution that sampled.
- Left-padded prompts get explicit position ids (cumulative attention mask), so
  that a padded prompt sees the same positions as an unpadded one.
- Dropout is off in policy, reference and value model: otherwise the "old"
  log-probabilities of the ratio come from a different network than the new ones.
- The value model is a separate network initialised from the reward model (its
  backbone and scalar head, applied at every position). When the reward model
  cannot serve (an encoder, or another vocabulary), it starts from the policy's
  base with a new head.
- Adam with eps 1e-5, gradient norm clipped, learning rate decayed linearly to 0.
- All weights train by default. Measured on the micro model (SFT'd to answer
  "The red cat likes {apples|fish|seeds}.", reward model preferring fish, 32
  prompts per update): full fine-tuning took the share of "fish" from 41% to
  97-100% within 14 updates; LoRA (r=16, all linear layers, lr 3e-4..5e-3) left
  it at 30-50% after 20, because the choice of a word sits mostly in the
  (tied) embeddings, which LoRA does not train. LoRA is for models large
  enough that a full copy hurts.
- The reference is the starting policy: the base with the LoRA adapter disabled
  (LoRA on), or a frozen copy (LoRA off). A parent's own adapter is merged into
  the base first, so the reference is exactly the parent.

The artifact is the LoRA adapter (parent without adapter) or the full merged
model (LoRA off, or a parent that had an adapter: the new adapter sits on the
merged parent, which exists nowhere else), plus tokenizer and training_config.json.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.generation import drop_finished_rows
from inference.loading import load_policy, load_tokenizer
from training.artifacts import (
    Precision,
    StageConfig,
    bf16_field,
    check_bf16,
    check_range,
    lora_config,
    read_jsonl,
    resolve_bf16,
    resume_checkpoint,
    save_artifact,
)
from training.progress import Reporter
from training.reward import check_ensemble_paths, ensemble_paths_field

logger = logging.getLogger(__name__)

STATE_FILE = "ppo_state.pt"


@dataclass
class PPOConfig(StageConfig):
    """What a PPO stage needs: policy, reward model, rollout, and the PPO update."""

    base_path: str = field(
        default="",
        metadata={"help": "Folder or hub id of the starting policy's base model."},
    )
    adapter_path: str = field(
        default="",
        metadata={
            "help": "The starting policy's LoRA adapter; merged into the base first."
        },
    )
    reward_model_path: str = field(
        default="",
        metadata={"help": "Folder of the reward model (a reward stage's output)."},
    )
    reward_ensemble_paths: list[str] = ensemble_paths_field()
    use_lora: bool = field(
        default=False,
        metadata={
            "help": "Train a LoRA adapter (reference = adapter disabled) instead of all weights."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    max_steps: int = field(
        default=50,
        metadata={"help": "PPO updates, each one rollout batch and its optimisation."},
    )
    batch_size: int = field(
        default=16, metadata={"help": "Prompts (one response each) per rollout."}
    )
    mini_batch_size: int = field(
        default=8, metadata={"help": "Responses per optimiser step."}
    )
    ppo_epochs: int = field(
        default=4, metadata={"help": "Passes over each rollout batch."}
    )
    learning_rate: float = field(
        default=1e-3,
        metadata={
            "help": "Adam learning rate of policy and value model (1e-3 fits ~1M params)."
        },
    )
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Clip the gradient norm to this."}
    )
    max_prompt_length: int = field(
        default=128, metadata={"help": "Keep only the last this-many prompt tokens."}
    )
    max_new_tokens: int = field(
        default=32, metadata={"help": "Longest response sampled."}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature of rollouts."}
    )
    kl_coef: float = field(
        default=0.05,
        metadata={
            "help": "Initial weight of the per-token KL penalty to the reference."
        },
    )
    target_kl: float | None = field(
        default=None,
        metadata={
            "help": "Adapt kl_coef towards this KL per response (None: fixed kl_coef)."
        },
    )
    kl_horizon: int = field(
        default=10000, metadata={"help": "Horizon of the adaptive KL controller."}
    )
    gamma: float = field(default=1.0, metadata={"help": "GAE discount."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip."})
    cliprange_value: float = field(
        default=0.2, metadata={"help": "Value prediction clip."}
    )
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    missing_eos_penalty: float = field(
        default=1.0,
        metadata={"help": "Subtracted from the score of a response with no end token."},
    )
    score_norm_batches: int = field(
        default=0,
        metadata={
            "help": "Before the first update, score this many rollout batches of the "
            "starting policy and give every later score as (score - their mean) / their "
            "std (0: raw scores)."
        },
    )
    save_steps: int = field(
        default=10, metadata={"help": "Checkpoint every this many updates."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of prompt order, sampling and new heads."}
    )
    bf16: Precision = bf16_field()

    def __post_init__(self) -> None:
        check_range("lora_r", self.lora_r, 1, None)
        check_range("lora_alpha", self.lora_alpha, 1, None)
        check_bf16(self.bf16)
        check_range("max_steps", self.max_steps, 1, None)
        check_range("batch_size", self.batch_size, 1, None)
        check_range("mini_batch_size", self.mini_batch_size, 1, None)
        if self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"batch_size must be a multiple of mini_batch_size, got {self.batch_size} "
                f"and {self.mini_batch_size}"
            )
        check_range("ppo_epochs", self.ppo_epochs, 1, None)
        check_range("learning_rate", self.learning_rate, 0, None, low_open=True)
        check_range("max_grad_norm", self.max_grad_norm, 0, None, low_open=True)
        check_range("max_prompt_length", self.max_prompt_length, 1, None)
        check_range("max_new_tokens", self.max_new_tokens, 1, None)
        check_range("temperature", self.temperature, 0, None, low_open=True)
        check_range("kl_coef", self.kl_coef, 0, None)
        if self.target_kl is not None:
            check_range("target_kl", self.target_kl, 0, None, low_open=True)
        check_range("kl_horizon", self.kl_horizon, 1, None)
        check_range("gamma", self.gamma, 0, 1)
        check_range("lam", self.lam, 0, 1)
        check_range("cliprange", self.cliprange, 0, None, low_open=True)
        check_range("cliprange_value", self.cliprange_value, 0, None, low_open=True)
        check_range("vf_coef", self.vf_coef, 0, None)
        check_range("missing_eos_penalty", self.missing_eos_penalty, 0, None)
        check_range("score_norm_batches", self.score_norm_batches, 0, None)
        check_ensemble_paths(self.reward_ensemble_paths)
        check_range("save_steps", self.save_steps, 1, None)


# ---------------------------------------------------------------- data


def prompt_rows(path: Path) -> list[list[dict[str, str]]]:
    """Return each distinct prompt of a JSONL once, as a message list, in first-seen order.

    A snapshot export repeats a prompt once per pair; PPO wants each prompt once.
    A plain-string prompt becomes one user message.
    """
    seen: set[str] = set()
    prompts = []
    for row in read_jsonl(path, required=("prompt",)):
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
    return prompts


# ---------------------------------------------------------------- tensor helpers


def masked_mean(values, mask):
    """Return the mean of `values` where `mask` is true."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values, mask):
    """Return `values` shifted to mean 0 and scaled to variance 1 over the masked entries."""
    import torch

    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + 1e-8)


def position_ids_for(attention_mask):
    """Return position ids that skip left padding: (batch, seq)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def response_logprobs(
    model, input_ids, attention_mask, context_length: int, temperature: float
):
    """Return log-probabilities of the response tokens and the entropy at each: (batch, resp) each."""
    import torch

    logits = (
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_for(attention_mask),
            use_cache=False,
        )
        .logits[:, context_length - 1 : -1]
        .float()
    )  # (batch, resp, vocab)
    logits = logits / temperature
    logps = torch.log_softmax(logits, dim=-1)
    tokens = input_ids[:, context_length:]
    token_logps = logps.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (batch, resp)
    entropy = -(logps.exp() * logps).sum(-1)  # (batch, resp)
    return token_logps, entropy


def sample_responses(
    model,
    query_ids,
    query_mask,
    *,
    temperature: float,
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_id: int,
    output_scores: bool = False,
):
    """Sample continuations of left-padded queries at `temperature`, nothing else.

    Return generate's output (sequences and, with `output_scores`, the processed
    scores of each step). PPO recomputes the log-probabilities of these samples
    with `response_logprobs` (logits over `temperature`), so the sampling must be
    pure temperature sampling: no top-k, top-p, repetition penalty or other
    processor that a model's own generation_config.json may ship. Rows that have
    sampled their end token stop running (`drop_finished_rows`; the samples are
    generate's own, and a finished row's later scores are zeros).
    """
    from transformers import GenerationConfig

    generation_config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        return_dict_in_generate=True,
        output_scores=output_scores,
    )
    # generate() fills every field left unset from the model's own
    # generation_config, then from the library's neutral defaults. Hide the
    # model's for this call so that only the neutral defaults fill the gaps.
    shipped = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        with drop_finished_rows(model, eos_token_id):
            return model.generate(
                input_ids=query_ids,
                attention_mask=query_mask,
                generation_config=generation_config,
            )
    finally:
        model.generation_config = shipped


@dataclass
class Rollout:
    """One batch of sampled responses, cut after their first end token.

    `input_ids` and `attention_mask` are the left-padded queries (`width` tokens)
    followed by the responses; `response_mask` marks the response tokens up to
    and including the first end token (`first_eos`; the last position where
    `has_eos` is false); `texts` are the decoded responses.
    """

    width: int
    responses: Any
    input_ids: Any
    attention_mask: Any
    response_mask: Any
    first_eos: Any
    has_eos: Any
    texts: list[str]


def rollout(config: PPOConfig, tokenizer, model, queries: list[list[int]], accelerator):
    """Sample one response per encoded query from `model` (unwrapped) and cut it."""
    import torch

    device = accelerator.device

    width = max(len(q) for q in queries)
    query_ids = torch.full(
        (len(queries), width), tokenizer.pad_token_id, dtype=torch.long
    )
    query_mask = torch.zeros_like(query_ids)
    for i, q in enumerate(queries):  # left padding
        query_ids[i, width - len(q) :] = torch.tensor(q)
        query_mask[i, width - len(q) :] = 1
    query_ids, query_mask = query_ids.to(device), query_mask.to(device)

    model.eval()
    with torch.no_grad(), accelerator.autocast():
        generated = sample_responses(
            model,
            query_ids,
            query_mask,
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ).sequences
    responses = generated[:, width:]  # (batch, resp)

    # Truncate after the first end token.
    is_eos = responses == tokenizer.eos_token_id
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), responses.shape[1] - 1)
    positions = torch.arange(responses.shape[1], device=device)
    response_mask = positions[None, :] <= first_eos[:, None]  # (batch, resp)
    responses = responses.masked_fill(~response_mask, tokenizer.pad_token_id)
    return Rollout(
        width=width,
        responses=responses,
        input_ids=torch.cat([query_ids, responses], dim=1),
        attention_mask=torch.cat([query_mask, response_mask.long()], dim=1),
        response_mask=response_mask,
        first_eos=first_eos,
        has_eos=has_eos,
        texts=tokenizer.batch_decode(responses, skip_special_tokens=True),
    )


def score_statistics(
    config: PPOConfig,
    prompts: list[list[dict[str, str]]],
    encoded: list[list[int]],
    tokenizer,
    model,
    score_fn: Callable[[list[Any], list[str]], list[Any]],
    accelerator,
) -> tuple[Any, Any]:
    """Return the mean and std of the reward model's scores on the starting policy's samples
    (for an ensemble, whose `score_fn` gives one list of scores per response, a list
    of means and one of stds, a member each).

    `score_norm_batches` rollout batches of `batch_size` prompts, drawn with their
    own generator so that the training prompts' order is the same with or without
    normalisation. Scoring PPO's rewards relative to these (Ziegler et al. 2019
    normalise the reward model so that the reference's samples have mean 0 and
    std 1) gives `kl_coef` and `missing_eos_penalty` the same meaning whatever
    the reward model's scale, which differs from round to round.
    """
    from inference.scoring import member_statistics

    rng = random.Random(f"score-norm-{config.seed}")
    scores: list[Any] = []
    for _ in range(config.score_norm_batches):
        index = rng.sample(range(len(prompts)), min(config.batch_size, len(prompts)))
        batch = rollout(
            config, tokenizer, model, [encoded[i] for i in index], accelerator
        )
        scores += score_fn([prompts[i] for i in index], batch.texts)
    ensemble = bool(scores) and isinstance(scores[0], list | tuple)
    members = (
        [list(column) for column in zip(*scores, strict=True)] if ensemble else [scores]
    )
    means, spreads = member_statistics(members)
    return (means, spreads) if ensemble else (means[0], spreads[0])


def ensemble_score(raw, shift: Any, scale: Any):
    """Return each response's score from the reward models' raw scores.

    `raw` is (batch,) for one reward model, or (batch, members) for an ensemble:
    each member's scores become (score - its shift) / its scale (floats, or one
    per member from `score_statistics`), and the response's score is their mean,
    so a member of a larger scale does not outvote the others.
    """
    import torch

    shift = torch.as_tensor(shift, dtype=raw.dtype, device=raw.device)
    scale = torch.as_tensor(scale, dtype=raw.dtype, device=raw.device)
    normalised = (raw - shift) / scale
    return normalised.mean(1) if normalised.dim() == 2 else normalised


def load_state(checkpoint: Path) -> dict[str, Any]:
    """Return a checkpoint's training state: tensors, numbers and RNG states only.

    Read with torch's weights-only unpickler, so a file planted in RUN_DIR cannot
    run code when a stage resumes from it.
    """
    import torch

    return torch.load(checkpoint / STATE_FILE, weights_only=True)


class ValueModel:
    """A backbone and a scalar head that predict a value at every position."""

    def __init__(self, classifier) -> None:
        if not hasattr(classifier, "score"):
            raise ValueError(
                f"{type(classifier).__name__} has no `score` head; the value model needs a "
                "causal LM sequence classifier such as LlamaForSequenceClassification"
            )
        self.classifier = classifier
        self.backbone = getattr(classifier, classifier.base_model_prefix)

    def __call__(self, input_ids, attention_mask, context_length: int):
        """Return the value of each response position: (batch, resp)."""
        hidden = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_for(attention_mask),
            use_cache=False,
        ).last_hidden_state  # (batch, seq, hidden)
        values = self.classifier.score(hidden).squeeze(-1).float()  # (batch, seq)
        return values[:, context_length - 1 : -1]


# ---------------------------------------------------------------- models


def build_policy(config: PPOConfig):
    """Return (policy, reference or None, merged_parent) as described in the module docstring."""
    import copy

    from peft import get_peft_model

    merged_parent = bool(config.adapter_path)
    model = load_policy(config.base_path, config.adapter_path, merge=True)
    if config.use_lora:
        policy = get_peft_model(
            model, lora_config(config.lora_r, config.lora_alpha, 0.0)
        )
        reference = None  # the same network with the adapter disabled
    else:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        policy = model
    return policy, reference, merged_parent


def build_value_model(
    config: PPOConfig, policy_tokenizer, reward_tokenizer
) -> ValueModel:
    """Return the value model: from the reward model when it shares the policy's vocabulary."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from inference.scoring import is_encoder

    same_vocab = policy_tokenizer.get_vocab() == reward_tokenizer.get_vocab()
    if same_vocab and not is_encoder(reward_tokenizer):
        source = config.reward_model_path
    else:
        logger.info(
            "value model starts from the policy base: the reward model cannot serve"
        )
        source = config.base_path
    torch.manual_seed(config.seed)
    classifier = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=1, dtype=torch.float32
    )
    classifier.config.pad_token_id = policy_tokenizer.pad_token_id
    return ValueModel(classifier)


def disable_dropout(model) -> None:
    """Set every dropout probability to 0 (see the module docstring)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


# ---------------------------------------------------------------- the loop


def train(
    config: PPOConfig,
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Optimise the policy with PPO against the reward model on the prompts of `data_path`.

    Report reward, KL, entropy, clip fraction, value loss, approximate KL and
    response length each update; checkpoint every `save_steps`; return the last
    update's metrics plus `score_start`, `score_end`, `steps` and `stopped`.
    """
    import torch

    from inference import scoring

    if data_path is None:
        raise ValueError(
            "PPO needs data_path: a JSONL whose prompt column gives the prompts"
        )
    if not config.reward_model_path:
        raise ValueError(
            "reward_model_path is empty; give the output folder of a reward stage"
        )
    prompts = prompt_rows(Path(data_path))
    tokenizer = load_tokenizer(config.base_path, padding_side="left")
    members = [
        scoring.load_reward_model(path)
        for path in (config.reward_model_path, *config.reward_ensemble_paths)
    ]
    reward_tokenizer = members[0][1]

    def score_fn(batch_prompts: list[Any], texts: list[str]) -> list[Any]:
        """One score per response, or (an ensemble) one list of the members' each."""
        responses = [[{"role": "assistant", "content": t}] for t in texts]
        each = [
            scoring.score(model, member_tokenizer, batch_prompts, responses)
            for model, member_tokenizer in members
        ]
        return (
            each[0]
            if len(each) == 1
            else [list(row) for row in zip(*each, strict=True)]
        )

    torch.manual_seed(config.seed)
    policy, reference, merged_parent = build_policy(config)
    value_model = build_value_model(config, tokenizer, reward_tokenizer)
    metrics = run_ppo(
        config,
        prompts,
        tokenizer,
        policy,
        reference,
        value_model,
        score_fn,
        reporter=reporter,
        resume_from=resume_from,
        reward_models=[model for model, _ in members],
    )
    if metrics["stopped"]:
        return metrics
    if merged_parent and config.use_lora:
        policy = policy.merge_and_unload()
    save_artifact(policy, tokenizer, output_dir, config.to_dict())
    return metrics


def run_ppo(
    config: PPOConfig,
    prompts: list[list[dict[str, str]]],
    tokenizer,
    policy,
    reference,
    value_model: ValueModel,
    score_fn: Callable[[list[Any], list[str]], list[Any]],
    *,
    reporter: Reporter,
    resume_from: Path | None = None,
    reward_models: list | None = None,
) -> dict[str, Any]:
    """Run the PPO updates in place on `policy` and `value_model`; return the final metrics.

    Long on purpose: it reads top to bottom as the numbered steps of one PPO
    iteration (rollout, scoring, log-probs and values, advantages, updates,
    logging and checkpoints), as the classic implementations lay it out.
    """
    import torch
    from accelerate import Accelerator

    # Recorded in the metrics, as the TRL stages record theirs.
    bf16 = float(resolve_bf16(config.bf16))
    accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no")
    device = accelerator.device
    for model in (policy, reference, value_model.classifier):
        if model is not None:
            disable_dropout(model)
    if reference is not None:
        reference.to(device)
    for reward_model in reward_models or []:
        reward_model.to(device)

    params = [p for p in policy.parameters() if p.requires_grad]
    value_params = list(value_model.classifier.parameters())
    optimizer = torch.optim.Adam(
        [{"params": params}, {"params": value_params}],
        lr=config.learning_rate,
        eps=1e-5,
    )
    minibatches = config.batch_size // config.mini_batch_size
    total_updates = config.max_steps * config.ppo_epochs * minibatches
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: max(0.0, 1.0 - i / total_updates)
    )
    policy, value_model.classifier, optimizer = accelerator.prepare(
        policy, value_model.classifier, optimizer
    )
    value_model.backbone = getattr(
        accelerator.unwrap_model(value_model.classifier),
        accelerator.unwrap_model(value_model.classifier).base_model_prefix,
    )

    rng = random.Random(config.seed)
    kl_coef = config.kl_coef
    start_step = 0
    first_score: float | None = None
    checkpoint = resume_checkpoint(resume_from)
    if checkpoint is not None:
        state = load_state(Path(checkpoint))
        _load_trainable(accelerator.unwrap_model(policy), state["policy"])
        accelerator.unwrap_model(value_model.classifier).load_state_dict(state["value"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        kl_coef, start_step, first_score = (
            state["kl_coef"],
            state["step"],
            state["first_score"],
        )
        rng.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])

    encoded = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=False)[
            -config.max_prompt_length :
        ]
        for p in prompts
    ]
    # Raw scores unless asked; a resumed run keeps the statistics it started with.
    score_shift, score_scale = 0.0, 1.0
    if checkpoint is not None:
        score_shift = state.get("score_shift", 0.0)
        score_scale = state.get("score_scale", 1.0)
    elif config.score_norm_batches:
        score_shift, score_scale = score_statistics(
            config,
            prompts,
            encoded,
            tokenizer,
            accelerator.unwrap_model(policy),
            score_fn,
            accelerator,
        )
        logger.info("PPO scores normalised: mean %s, std %s", score_shift, score_scale)
    # The statistics go with the final metrics of a normalised run, stopped or not.
    normalisation = (
        {"score_shift": score_shift, "score_scale": score_scale}
        if config.score_norm_batches
        else {}
    )
    order: list[int] = []
    metrics: dict[str, Any] = {}
    for step in range(start_step + 1, config.max_steps + 1):
        # ---- 1. rollout: a batch of distinct prompts, reshuffled every epoch over the data
        batch_index = []
        while len(batch_index) < config.batch_size:
            if not order:
                order = list(range(len(prompts)))
                rng.shuffle(order)
            batch_index.append(order.pop())
        unwrapped = accelerator.unwrap_model(policy)
        batch = rollout(
            config, tokenizer, unwrapped, [encoded[i] for i in batch_index], accelerator
        )
        width, responses = batch.width, batch.responses
        input_ids, attention_mask = batch.input_ids, batch.attention_mask
        response_mask, first_eos, has_eos = (
            batch.response_mask,
            batch.first_eos,
            batch.has_eos,
        )
        # ---- 2. score the decoded text (normalised on the starting policy's, if asked)
        raw = torch.tensor(
            score_fn([prompts[i] for i in batch_index], batch.texts),
            dtype=torch.float,
            device=device,
        )
        scores = ensemble_score(raw, score_shift, score_scale)
        scores = scores - config.missing_eos_penalty * (~has_eos).float()

        # ---- 3. old log-probs, reference log-probs, values; per-token rewards
        with torch.no_grad(), accelerator.autocast():
            old_logps, _ = response_logprobs(
                policy, input_ids, attention_mask, width, config.temperature
            )
            if reference is None:
                with unwrapped.disable_adapter():
                    ref_logps, _ = response_logprobs(
                        policy, input_ids, attention_mask, width, config.temperature
                    )
            else:
                ref_logps, _ = response_logprobs(
                    reference, input_ids, attention_mask, width, config.temperature
                )
            old_values = value_model(input_ids, attention_mask, width)
        mask = response_mask.float()
        old_logps = old_logps * mask
        ref_logps = ref_logps * mask
        old_values = old_values * mask
        kl = (old_logps - ref_logps) * mask  # (batch, resp), k1 estimator
        rewards = -kl_coef * kl
        last = first_eos
        rewards[torch.arange(len(last), device=device), last] += scores

        # ---- 4. GAE advantages (zero past each response's end), whitened
        advantages_reversed = []
        running = torch.zeros(len(last), device=device)
        steps_in_response = responses.shape[1]
        for t in reversed(range(steps_in_response)):
            next_value = old_values[:, t + 1] if t + 1 < steps_in_response else 0.0
            delta = rewards[:, t] + config.gamma * next_value - old_values[:, t]
            running = delta + config.gamma * config.lam * running
            advantages_reversed.append(running)
        advantages = torch.stack(advantages_reversed[::-1], dim=1) * mask
        returns = advantages + old_values
        advantages = masked_whiten(advantages, mask) * mask

        # ---- 5. several epochs of clipped policy and value updates on minibatches
        policy.train()
        value_model.classifier.train()
        stats: dict[str, list[float]] = {
            k: []
            for k in ("policy_loss", "value_loss", "entropy", "clipfrac", "approx_kl")
        }
        for _ in range(config.ppo_epochs):
            permutation = torch.randperm(config.batch_size, device=device)
            for start in range(0, config.batch_size, config.mini_batch_size):
                idx = permutation[start : start + config.mini_batch_size]
                mb_mask = mask[idx]
                with accelerator.autocast():
                    new_logps, entropy = response_logprobs(
                        policy,
                        input_ids[idx],
                        attention_mask[idx],
                        width,
                        config.temperature,
                    )
                    values = value_model(input_ids[idx], attention_mask[idx], width)
                log_ratio = (new_logps - old_logps[idx]) * mb_mask
                ratio = torch.exp(log_ratio)
                pg_unclipped = -advantages[idx] * ratio
                pg_clipped = -advantages[idx] * torch.clamp(
                    ratio, 1.0 - config.cliprange, 1.0 + config.cliprange
                )
                policy_loss = masked_mean(torch.max(pg_unclipped, pg_clipped), mb_mask)
                values_clipped = old_values[idx] + torch.clamp(
                    values - old_values[idx],
                    -config.cliprange_value,
                    config.cliprange_value,
                )
                value_loss = 0.5 * masked_mean(
                    torch.max(
                        (values - returns[idx]) ** 2,
                        (values_clipped - returns[idx]) ** 2,
                    ),
                    mb_mask,
                )
                loss = policy_loss + config.vf_coef * value_loss
                optimizer.zero_grad()
                accelerator.backward(loss)
                # Clip each network on its own: a joint norm lets the value model's
                # gradients shrink a LoRA policy's to nothing.
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
                accelerator.clip_grad_norm_(value_params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                with torch.no_grad():
                    stats["policy_loss"].append(float(policy_loss))
                    stats["value_loss"].append(float(value_loss))
                    stats["entropy"].append(float(masked_mean(entropy, mb_mask)))
                    stats["clipfrac"].append(
                        float(masked_mean((pg_clipped > pg_unclipped).float(), mb_mask))
                    )
                    stats["approx_kl"].append(
                        float(masked_mean(0.5 * log_ratio**2, mb_mask))
                    )

        # ---- 6. adaptive KL coefficient (Ziegler et al. 2019)
        mean_kl = float(kl.sum(1).mean())
        if config.target_kl is not None:
            error = max(-0.2, min(0.2, mean_kl / config.target_kl - 1.0))
            kl_coef *= 1.0 + error * config.batch_size / config.kl_horizon

        mean_score = float(scores.mean())
        if first_score is None:
            first_score = mean_score
        metrics = {
            "score": mean_score,
            "reward": float((rewards * mask).sum(1).mean()),
            "kl": mean_kl,
            "non_score_reward": float((-kl_coef * kl).sum(1).mean()),
            "response_length": float(mask.sum(1).mean()),
            "tokens": int(
                attention_mask.sum()
            ),  # prompt + response tokens of the rollout
            "eos_fraction": float(has_eos.float().mean()),
            "kl_coef": kl_coef,
            "learning_rate": scheduler.get_last_lr()[0],
            **{k: sum(v) / len(v) for k, v in stats.items()},
        }
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(
                f"PPO diverged at update {step}: {metrics}; lower learning_rate or raise kl_coef"
            )
        reporter.log(step, config.max_steps, **metrics)

        stopping = reporter.should_stop()
        # One writer: under `accelerate launch` every rank holds the same state.
        if (step % config.save_steps == 0 or stopping) and accelerator.is_main_process:
            with reporter.new_checkpoint(step) as folder:
                torch.save(
                    {
                        "policy": _trainable_state(accelerator.unwrap_model(policy)),
                        "value": accelerator.unwrap_model(
                            value_model.classifier
                        ).state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "kl_coef": kl_coef,
                        "step": step,
                        "first_score": first_score,
                        "score_shift": score_shift,
                        "score_scale": score_scale,
                        "python_rng": rng.getstate(),
                        "torch_rng": torch.get_rng_state(),
                    },
                    folder / STATE_FILE,
                )
        if stopping:
            return {
                **metrics,
                **normalisation,
                "bf16": bf16,
                "steps": step,
                "stopped": 1.0,
                "score_start": first_score,
                "score_end": mean_score,
            }

    policy.eval()
    return {
        **metrics,
        **normalisation,
        "bf16": bf16,
        "steps": config.max_steps,
        "stopped": 0.0,
        "score_start": first_score,
        "score_end": metrics.get("score", first_score),
    }


def _trainable_state(model) -> dict[str, Any]:
    """Return the trained parameters only (the adapter under LoRA), detached on the CPU."""
    return {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, state: dict[str, Any]) -> None:
    """Load parameters saved by `_trainable_state`, failing if any is missing."""
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and n not in state
    ]
    if missing:
        raise ValueError(
            f"checkpoint lacks trained parameters {missing[:3]}...; it was made with other "
            "LoRA settings: resume with the same config or start from zero"
        )
    named = dict(model.named_parameters())
    import torch

    with torch.no_grad():
        for name, value in state.items():
            named[name].copy_(value)
