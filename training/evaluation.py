"""Evaluation of a trained policy: win rate against its parent, KL to a reference, diversity.

Plain functions on plain values; models are loaded only by `evaluate_policy`.
The diversity measures exist because next-token training tends to collapse onto
one phrasing, and RLHF should not make that worse unnoticed:
- distinct-n: distinct n-grams / all n-grams over a set of responses (higher is
  more diverse);
- self-BLEU: mean BLEU-4 of each response against all the others as references
  (higher is more alike; 1.0 when all are identical).
Words are whitespace tokens, so the figures do not depend on a tokenizer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

Judge = Callable[[Any, str, str], float]
"""judge(prompt, response_a, response_b) -> probability that A is better (0.5: tie)."""

Scorer = Callable[[list[Any], list[Any]], list[float]]
"""scorer(prompts, responses) -> one reward per response (a reward model)."""


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Return the n-grams of a word list, in order."""
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Return distinct n-grams / all n-grams over the texts (0.0 when there are none)."""
    grams = [g for text in texts for g in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_distinct_n(groups: Sequence[Sequence[str]], n: int) -> float:
    """Return distinct-n of each group's texts (one prompt's samples), averaged over groups.

    Per prompt, so that it measures whether a policy still says different things
    to the same question (collapse onto one phrasing lowers it).
    """
    if not groups:
        raise ValueError("mean_distinct_n needs at least one group of texts, got none")
    return sum(distinct_n(texts, n) for texts in groups) / len(groups)


def bleu(
    hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4
) -> float:
    """Return sentence BLEU; a zero n-gram match counts as 0.1 (Chen & Cherry 2014, method 1)."""
    if not hypothesis:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        counts = Counter(ngrams(hypothesis, n))
        best: Counter = Counter()
        for ref in references:
            for gram, c in Counter(ngrams(ref, n)).items():
                best[gram] = max(best[gram], c)
        clipped = sum(min(c, best[g]) for g, c in counts.items())
        total = len(hypothesis) - n + 1
        if total <= 0:  # shorter than n words: no n-grams to match
            total, clipped = 1, 0
        log_precision += math.log((clipped or 0.1) / total) / max_n
    closest = min((abs(len(r) - len(hypothesis)), len(r)) for r in references)[1]
    brevity = (
        1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
    )
    return brevity * math.exp(log_precision)


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Return the mean BLEU of each text against all the others (needs two texts or more)."""
    if len(texts) < 2:
        raise ValueError(f"self-BLEU needs at least 2 texts, got {len(texts)}")
    words = [t.split() for t in texts]
    return sum(
        bleu(words[i], words[:i] + words[i + 1 :], max_n) for i in range(len(words))
    ) / len(words)


def mean_length(texts: Sequence[str], tokenizer: Any = None) -> float:
    """Return the mean response length, in tokens with a tokenizer, else in words."""
    if not texts:
        return 0.0
    if tokenizer is None:
        return sum(len(t.split()) for t in texts) / len(texts)
    return sum(
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts
    ) / len(texts)


def win_rate_from_scores(
    scores_a: Sequence[float], scores_b: Sequence[float]
) -> dict[str, float]:
    """Return wins, losses, ties of A over B and the win rate (a tie counts half)."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError(
            f"need as many scores for A as for B, and some: got {len(scores_a)} and {len(scores_b)}"
        )
    wins = sum(a > b for a, b in zip(scores_a, scores_b, strict=False))
    losses = sum(a < b for a, b in zip(scores_a, scores_b, strict=False))
    ties = len(scores_a) - wins - losses
    return {
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "win_rate": (wins + 0.5 * ties) / len(scores_a),
    }


def reward_win_rate(
    scorer: Scorer,
    prompts: Sequence[Any],
    responses_a: Sequence[str],
    responses_b: Sequence[str],
) -> dict[str, float]:
    """Return A's win rate over B by the reward model's scores, and both mean rewards.

    The i-th responses of A and B answer the i-th prompt; equal scores count half.
    Keys: win_rate, reward_mean (A), parent_reward_mean (B).
    """
    as_messages = [
        [{"role": "assistant", "content": t}] for t in [*responses_a, *responses_b]
    ]
    scores = scorer(list(prompts) * 2, as_messages)
    ours, theirs = scores[: len(responses_a)], scores[len(responses_a) :]
    return {
        "win_rate": win_rate_from_scores(ours, theirs)["win_rate"],
        "reward_mean": sum(ours) / len(ours),
        "parent_reward_mean": sum(theirs) / len(theirs),
    }


def win_rate_by_judge(
    prompts: Sequence[Any],
    responses_a: Sequence[str],
    responses_b: Sequence[str],
    judge: Judge,
) -> float:
    """Return A's mean preference probability over B by the judge, asked in both orders.

    Asking (A, B) and (B, A) and averaging cancels a judge's position bias.
    """
    if not (len(prompts) == len(responses_a) == len(responses_b)) or not prompts:
        raise ValueError(
            "prompts, responses_a and responses_b must be equally long and non-empty"
        )
    total = 0.0
    for prompt, a, b in zip(prompts, responses_a, responses_b, strict=False):
        total += 0.5 * (judge(prompt, a, b) + (1.0 - judge(prompt, b, a)))
    return total / len(prompts)


def bootstrap_interval(
    values: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Return the percentile bootstrap interval of the mean of `values`.

    Pass one value per prompt (a prompt's samples averaged first): resampling
    prompts, not samples, because a prompt's samples are not independent.
    """
    import random

    if not values:
        raise ValueError("bootstrap_interval needs at least one value, got none")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(
            f"level must be in (0, 1) and resamples >= 1, got {level} and {resamples}"
        )
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    low = means[int(tail * resamples)]
    high = means[min(resamples - 1, int((1 - tail) * resamples))]
    return low, high


def per_prompt_win_rates(
    prompts: Sequence[Any],
    ours: Sequence[Sequence[str]],
    theirs: Sequence[Sequence[str]],
    judge: Judge,
) -> list[float]:
    """Return, per prompt, the share of its paired samples the judge gives to ours.

    The i-th sample of each side meet on the same prompt; a tie counts half
    (`win_rate_by_judge` asks in both orders).
    """
    rates = []
    for prompt, a, b in zip(prompts, ours, theirs, strict=True):
        if len(a) != len(b) or not a:
            raise ValueError(
                f"each prompt needs as many samples of ours as of theirs, and some: "
                f"got {len(a)} and {len(b)}"
            )
        rates.append(win_rate_by_judge([prompt] * len(a), a, b, judge))
    return rates


def per_prompt_accuracy(
    prompts: Sequence[Any],
    samples: Sequence[Sequence[str]],
    correct: Callable[[Any, str], bool],
) -> list[float]:
    """Return, per prompt, the share of its samples whose answer `correct` confirms."""
    return [
        sum(bool(correct(prompt, s)) for s in texts) / len(texts)
        for prompt, texts in zip(prompts, samples, strict=True)
    ]


def sample(
    model,
    tokenizer,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
) -> tuple[list[str], Any, int]:
    """Sample one response per prompt (pure sampling at `temperature`).

    Return (texts, token ids of prompt + response, prompt width); responses are
    cut after the first end token and padded. A row that has ended is not run on
    (`inference.generation.drop_finished_rows`).
    """
    import torch

    from inference.generation import drop_finished_rows

    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    batch = tokenizer(
        texts, return_tensors="pt", padding=True, add_special_tokens=False
    )
    batch = batch.to(next(model.parameters()).device)
    with (
        torch.random.fork_rng(devices=[]),
        torch.no_grad(),
        drop_finished_rows(model, tokenizer.eos_token_id),
    ):
        torch.manual_seed(seed)
        output = model.generate(
            **batch,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    width = batch["input_ids"].shape[1]
    responses = output[:, width:]
    is_eos = responses == tokenizer.eos_token_id
    cut = torch.where(is_eos.any(1), is_eos.int().argmax(1), responses.shape[1] - 1)
    keep = (
        torch.arange(responses.shape[1], device=responses.device)[None, :]
        <= cut[:, None]
    )
    output[:, width:] = responses.masked_fill(~keep, tokenizer.pad_token_id)
    decoded = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return [t.strip() for t in decoded], output, width


def sequence_logprobs(
    model, input_ids, width: int, pad_token_id: int, eos_token_id: int
):
    """Return log p(response | prompt) per sequence, summed over response tokens: (batch,)."""
    import torch

    from inference.generation import takes_logits_to_keep

    attention = (input_ids != pad_token_id).long()
    attention[:, width:] = 0
    response = input_ids[:, width:]
    # A response token counts up to and including its end token.
    after_eos = (response == eos_token_id).int().cumsum(1) - (
        response == eos_token_id
    ).int()
    response_mask = (response != pad_token_id) & (after_eos == 0)
    attention[:, width:] = response_mask.long()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    # The LM head runs only where a response token is predicted (positions width-1
    # to the second last): over the prompt it would be a vocabulary-wide product
    # per position, thrown away. A model without `logits_to_keep` scores them all.
    scored = torch.arange(width - 1, input_ids.shape[1] - 1, device=input_ids.device)
    keep = {"logits_to_keep": scored} if takes_logits_to_keep(model) else {}
    with torch.no_grad():
        logits = model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            **keep,
        ).logits
    if not keep:
        logits = logits[:, scored]
    logps = torch.log_softmax(logits.float(), dim=-1)  # (batch, resp, vocab)
    token = logps.gather(-1, response.unsqueeze(-1)).squeeze(-1)  # (batch, resp)
    return (token * response_mask).sum(1)


def kl_to_reference(
    policy,
    reference,
    tokenizer,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> float:
    """Return a sampled estimate of KL(policy || reference) per response, in nats.

    Responses are drawn from the policy at temperature 1; the estimate is the
    mean of log pi(y|x) - log ref(y|x) (unbiased; single samples may be negative).
    """
    _, ids, width = sample(
        policy, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed
    )
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    ref_device = next(reference.parameters()).device
    log_pi = sequence_logprobs(policy, ids, width, pad, eos).cpu()
    log_ref = sequence_logprobs(reference, ids.to(ref_device), width, pad, eos).cpu()
    return float((log_pi - log_ref).mean())


def load_models(
    policy_paths: tuple[str, str], reference_paths: tuple[str, str]
) -> tuple[Any, Any, Any]:
    """Return (tokenizer, policy, reference) for evaluation: merged, in eval mode.

    Each of `policy_paths` and `reference_paths` is (base_path, adapter_path); the
    tokenizer is the policy's (left padding, for generation).
    """
    from inference.loading import load_policy, load_tokenizer

    tokenizer = load_tokenizer(policy_paths[1] or policy_paths[0], padding_side="left")
    policy = load_policy(*policy_paths, merge=True).eval()
    reference = load_policy(*reference_paths, merge=True).eval()
    return tokenizer, policy, reference


def evaluate_policy(
    policy_paths: tuple[str, str],
    parent_paths: tuple[str, str],
    prompts: Sequence[Any],
    *,
    reward_model_path: str = "",
    judge: Judge | None = None,
    max_new_tokens: int = 64,
    diversity_samples: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Return the registry's evaluation of a policy against its parent on held-out prompts.

    `policy_paths` and `parent_paths` are (base_path, adapter_path). Metrics:
    win_rate (by the reward model) and/or judge_win_rate, kl_to_parent,
    response_length (tokens), distinct_1, distinct_2 and self_bleu of
    `diversity_samples` responses per prompt (averaged over prompts), and the
    parent's diversity figures for comparison (parent_distinct_2, parent_self_bleu).
    """
    if not prompts:
        raise ValueError("no held-out prompts to evaluate on; pass a non-empty list")
    tokenizer, policy, parent = load_models(policy_paths, parent_paths)
    ours, _, _ = sample(
        policy, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed
    )
    theirs, _, _ = sample(
        parent, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed
    )
    metrics: dict[str, float] = {"prompts": float(len(prompts))}
    if reward_model_path:
        from inference.scoring import reward_function
        from training.reward import ensemble_members

        # An ensemble (a reward stage's members) scores by its members' mean, each
        # normalised on these samples, ours and the parent's together.
        scorer = reward_function(
            reward_model_path, ensemble=ensemble_members(reward_model_path)
        )
        metrics.update(reward_win_rate(scorer, prompts, ours, theirs))
    if judge is not None:
        metrics["judge_win_rate"] = win_rate_by_judge(prompts, ours, theirs, judge)
    metrics["kl_to_parent"] = kl_to_reference(
        policy, parent, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed + 1
    )
    metrics["response_length"] = mean_length(ours, tokenizer)
    for name, model in (("", policy), ("parent_", parent)):
        groups = [
            sample(
                model,
                tokenizer,
                prompts,
                max_new_tokens=max_new_tokens,
                seed=seed + 2 + k,
            )[0]
            for k in range(max(2, diversity_samples))
        ]
        per_prompt = list(zip(*groups, strict=False))  # (prompts, samples)
        metrics[f"{name}distinct_1"] = mean_distinct_n(per_prompt, 1)
        metrics[f"{name}distinct_2"] = mean_distinct_n(per_prompt, 2)
        metrics[f"{name}self_bleu"] = sum(self_bleu(s) for s in per_prompt) / len(
            per_prompt
        )
    return metrics
