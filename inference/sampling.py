"""Sampling controls for candidate generation, validated once and translated in one place.

`SamplingConfig` holds temperature, top-k, top-p, max new tokens, candidates per prompt,
seed and an optional mix of temperatures; `backend_kwargs` is the only function that
turns it into a backend's arguments, so transformers and vLLM mean the same thing.
In particular transformers fills an unset `top_k` with 50: we always pass it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

BACKENDS = ("transformers", "vllm")
MIX_KEYS = ("count", "temperature", "top_k", "top_p")


@dataclass
class SamplingConfig:
    """How candidates are sampled for a round.

    temperature: softmax temperature; 0 means greedy decoding.
    top_k: keep only the k most likely tokens; 0 turns the filter off.
    top_p: keep the smallest set of tokens whose probability reaches p; 1 is off.
    max_new_tokens: the most tokens generated per candidate.
    num_candidates: candidates per prompt (K).
    seed: the same seed, model and prompts give the same candidates.
    mix: optional groups that split the K candidates, each overriding temperature,
        top_k or top_p, e.g. [{"count": 2, "temperature": 0.7},
        {"count": 2, "temperature": 1.0}]; their counts must add up to num_candidates.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    num_candidates: int = 4
    seed: int = 0
    mix: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_controls(self.temperature, self.top_k, self.top_p, where="")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(
                f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}"
            )
        if not isinstance(self.num_candidates, int) or self.num_candidates < 1:
            raise ValueError(
                f"num_candidates must be a positive integer, got {self.num_candidates!r}"
            )
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        self.mix = [dict(group) for group in self.mix]
        for i, group in enumerate(self.mix):
            unknown = sorted(set(group) - set(MIX_KEYS))
            if unknown:
                raise ValueError(
                    f"mix group {i} has unknown keys {unknown}; allowed: {list(MIX_KEYS)}"
                )
            count = group.get("count")
            if not isinstance(count, int) or count < 1:
                raise ValueError(
                    f"mix group {i} needs a positive integer 'count', got {count!r}"
                )
            _check_controls(
                group.get("temperature", self.temperature),
                group.get("top_k", self.top_k),
                group.get("top_p", self.top_p),
                where=f"mix group {i}: ",
            )
        if self.mix and sum(g["count"] for g in self.mix) != self.num_candidates:
            total = sum(g["count"] for g in self.mix)
            raise ValueError(
                f"the mix's counts add up to {total} but num_candidates is "
                f"{self.num_candidates}; make them equal"
            )

    def groups(self) -> list[dict[str, Any]]:
        """Return the candidate groups with every control resolved, in candidate order.

        Without a mix there is one group of num_candidates.
        """
        base = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
        }
        if not self.mix:
            return [{"count": self.num_candidates, **base}]
        return [{**base, **group} for group in self.mix]

    def candidate_settings(self) -> list[dict[str, Any]]:
        """Return, for each of the K candidates of a prompt, the settings that sampled it."""
        settings = []
        for group in self.groups():
            one = {k: v for k, v in group.items() if k != "count"}
            one.update(max_new_tokens=self.max_new_tokens, seed=self.seed)
            settings.extend(dict(one) for _ in range(group["count"]))
        return settings

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingConfig:
        """Build a config from `to_dict` output, refusing unknown keys."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown sampling keys {unknown}; allowed: {sorted(names)}"
            )
        return cls(**data)


def backend_kwargs(
    group: dict[str, Any], max_new_tokens: int, backend: str
) -> dict[str, Any]:
    """Return one candidate group's controls as keyword arguments for a backend.

    transformers: arguments of `model.generate` (greedy when temperature is 0, and
    top_k always explicit: an unset top_k becomes 50 there). vllm: arguments of
    `vllm.SamplingParams` (top_k -1 is off there; the group's count becomes n).
    """
    temperature, top_k, top_p = group["temperature"], group["top_k"], group["top_p"]
    if backend == "transformers":
        if temperature == 0:
            return {"do_sample": False, "max_new_tokens": max_new_tokens}
        return {
            "do_sample": True,
            "temperature": float(temperature),
            "top_k": int(top_k),
            "top_p": float(top_p),
            "max_new_tokens": max_new_tokens,
        }
    if backend == "vllm":
        return {
            "n": int(group["count"]),
            "temperature": float(temperature),
            "top_k": int(top_k) if top_k > 0 else -1,
            "top_p": float(top_p),
            "max_tokens": max_new_tokens,
        }
    raise ValueError(
        f"unknown generation backend {backend!r}; expected one of {BACKENDS}"
    )


def _check_controls(temperature: Any, top_k: Any, top_p: Any, *, where: str) -> None:
    """Raise ValueError naming the first control out of range."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or temperature < 0
    ):
        raise ValueError(
            f"{where}temperature must be a number >= 0 (0 is greedy), got {temperature!r}"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(
            f"{where}top_k must be an integer >= 0 (0 turns it off), got {top_k!r}"
        )
    if (
        isinstance(top_p, bool)
        or not isinstance(top_p, (int, float))
        or not 0 < top_p <= 1
    ):
        raise ValueError(f"{where}top_p must be in (0, 1], got {top_p!r}")
