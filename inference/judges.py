"""The judges the platform can ask to compare and rank responses, registered by name.

A judge is any importable object with two methods:

- `compare(prompt_messages, a, b) -> float` in [-1, 1]: 1 when response `a` is
  better, -1 when `b` is, 0 for a tie;
- `rank(prompt_messages, responses) -> list[list[int]]`: the responses' indices
  as tie groups, best first.

A judge may also offer (the demo's does; `judge_offers` tells):

- `weights` ({aspect: weight}) and `aspects(prompt_messages, response) -> {aspect:
  score}`: the aspects its verdict weighs, so simulated annotators can be personas
  that weigh them their own way (`annotation.simulated.personas`);
- `correct(prompt_messages, response) -> bool`: whether a reference confirms the
  answer, for the factual accuracy the loop reports beside the win rate;
- `correct_loosely(prompt_messages, response) -> bool`: the same under a lenient
  reading (the instructions judge: IFEval's loose accuracy), reported beside it;
- `correct_substantively(prompt_messages, response) -> bool`: correct and also an
  answer that says something on the request's subject (the instructions judge: a
  floor of words and a topic word), so a policy that follows the form by saying
  nothing shows as such;
- `repair(prompt_messages, response) -> str | None`: the response edited until the
  judge accepts it as correct (None when it cannot), so a simulated annotator can
  write the rewrite a person writes on the ranking page (`RewritingAnnotator`);
- `reward(prompt_messages, response) -> float`: one response's score on the scale
  its verdicts use, ordering a prompt's responses as `rank` does, so that GRPO and
  RLOO can take the judge itself as their reward (a verifiable reward:
  `inference.scoring.judge_reward_function`).

An app registers its judge under a name in its `AppConfig.ready`, as a dotted
path "module:attribute" (`register_judge("demo", "demo.world:JUDGE")`). Product
code asks for a judge by name; a training child process has no Django app
registry, so the platform resolves the name to its path on the Django side
(`judge_path`) and the child loads the object from the path (`load_judge`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

_JUDGES: dict[str, str] = {}
# Judges the platform ships for its own task families (such as "instructions"):
# always asked for by name, never the default judge.
_NAMED_ONLY: set[str] = set()


class Judge(Protocol):
    """What the platform needs from a judge."""

    def compare(self, prompt_messages: list[dict], a: str, b: str) -> float:
        """Return 1 if `a` is the better response, -1 if `b` is, 0 for a tie (or between)."""

    def rank(
        self, prompt_messages: list[dict], responses: list[str]
    ) -> list[list[int]]:
        """Return the indices of `responses` as tie groups, best first."""


def judge_offers(judge: Judge, feature: str) -> bool:
    """Return whether the judge offers an optional feature: "aspects", "correct",
    "correct_loosely", "correct_substantively", "repair" or "reward"."""
    if feature == "aspects":
        return callable(getattr(judge, "aspects", None)) and isinstance(
            getattr(judge, "weights", None), dict
        )
    if feature in (
        "correct",
        "correct_loosely",
        "correct_substantively",
        "repair",
        "reward",
    ):
        return callable(getattr(judge, feature, None))
    raise ValueError(
        "feature must be 'aspects', 'correct', 'correct_loosely', "
        f"'correct_substantively', 'repair' or 'reward', got {feature!r}"
    )


def register_judge(name: str, path: str, *, named_only: bool = False) -> None:
    """Register the judge at `path` ("module:attribute") under `name`.

    Registering the same name and path again changes nothing (an app's `ready`
    may run more than once); another path under a taken name is refused. A
    `named_only` judge is used only where asked for by name: it never becomes the
    default (`default_judge_name`).
    """
    if not name:
        raise ValueError("a judge needs a name, got ''; pass e.g. 'demo'")
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError(
            f"judge path must be 'module:attribute', got {path!r}; "
            "e.g. 'demo.world:JUDGE'"
        )
    taken = _JUDGES.get(name)
    if taken is not None and taken != path:
        raise ValueError(
            f"judge {name!r} is already registered as {taken!r}, not {path!r}; "
            "register this one under another name"
        )
    _JUDGES[name] = path
    if named_only:
        _NAMED_ONLY.add(name)


def registered_judges() -> dict[str, str]:
    """Return {name: path} of every registered judge."""
    return dict(_JUDGES)


def judge_path(name: str) -> str:
    """Return the path of the judge registered as `name`.

    Raise ValueError naming the registered judges when there is none by that name.
    """
    path = _JUDGES.get(name)
    if path is None:
        raise ValueError(
            f"no judge named {name!r}; registered judges: {sorted(_JUDGES) or 'none'} "
            "(an installed app registers one with inference.judges.register_judge)"
        )
    return path


def check_judge_path(judge: str, path: str) -> None:
    """Refuse a stage config that names a judge without its path (a config written by
    hand; the platform sets the path from its registry when it launches a round)."""
    if judge and not path:
        raise ValueError(
            f"judge {judge!r} has no judge_path; launch the round through the "
            "platform, which looks the judge up in its registry"
        )


def default_judge_name() -> str | None:
    """Return the name of the only registered judge that is not `named_only`; None
    when there are none or several."""
    names = [name for name in _JUDGES if name not in _NAMED_ONLY]
    return names[0] if len(names) == 1 else None


def load_judge(path: str) -> Judge:
    """Import and return the judge object at `path` ("module:attribute")."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"judge path must be 'module:attribute', got {path!r}; "
            "e.g. 'demo.world:JUDGE'"
        )
    module = importlib.import_module(module_name)
    judge = getattr(module, attribute, None)
    if judge is None:
        raise ValueError(
            f"module {module_name} has no attribute {attribute!r}; fix the judge path "
            f"{path!r}"
        )
    missing = [m for m in ("compare", "rank") if not callable(getattr(judge, m, None))]
    if missing:
        raise ValueError(
            f"{path} is not a judge: it lacks {missing}; give it "
            "compare(prompt_messages, a, b) and rank(prompt_messages, responses)"
        )
    return judge


def get_judge(name: str = "") -> Judge:
    """Return the judge registered as `name`; '' means the only registered judge.

    Raise ValueError naming the registered judges when `name` is unknown, or is ''
    while none or several are registered.
    """
    if not name:
        name = default_judge_name() or ""
        if not name:
            raise ValueError(
                f"name a judge: {len(_JUDGES)} are registered "
                f"({sorted(_JUDGES) or 'none'}), so there is no default one"
            )
    return load_judge(judge_path(name))


def win_probability(judge: Judge) -> Callable[[list[dict], str, str], float]:
    """Return `f(prompt_messages, a, b)`: the probability that `a` is better (0.5: a tie).

    This is the form `training.evaluation.win_rate_by_judge` takes.
    """

    def probability(prompt_messages: list[dict], a: str, b: str) -> float:
        return (judge.compare(prompt_messages, a, b) + 1) / 2

    return probability
