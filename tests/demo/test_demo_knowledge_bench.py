"""bench/demo_knowledge.py counts each answer's verdict, and splits out the misnamed ones."""

from __future__ import annotations

from demo import world
from tests.conftest import load_bench


def test_extraction_counts_misnamed_answers_inside_the_wrong_ones(monkeypatch):
    prompts = world.eval_prompts("dev")
    legs = next(p for p in prompts if world.parse_prompt(p).kind == "legs")
    question = world.parse_prompt(legs)
    twin = next(  # another creature with as many legs
        c
        for c, (_, n, _, _) in world.CREATURES.items()
        if str(n) == question.answer and c != question.subject
    )
    other = str(int(question.answer) + 2)
    answers = {
        "right": f"A {question.subject} has {question.answer} legs.",
        "misnamed": f"The {twin} has {question.answer} legs.",
        "wrong": f"A {question.subject} has {other} legs.",
        "evasive": "I am not sure about that.",
    }
    calls = []

    def fake_generate(base, adapter, asked, sampling, **kwargs):
        calls.append((base, adapter, sampling.temperature))
        return [
            list(answers.values()) if p == legs else ["I am not sure about that."] * 4
            for p in asked
        ]

    monkeypatch.setattr(
        "inference.generation.generate_for_policy", fake_generate, raising=True
    )

    verdicts = load_bench("demo_knowledge", monkeypatch).extraction(
        ("BASE", "ADAPTER"), "dev", 1.0
    )

    assert calls == [("BASE", "ADAPTER", 1.0)]
    counts = verdicts["legs"]
    per_prompt = sum(1 for p in prompts if world.parse_prompt(p).kind == "legs")
    # The legs prompt's four answers, and four evasions for each other legs prompt.
    assert counts["correct"] == 1
    assert counts["wrong"] == 2  # the misnamed answer is wrong, and counted as such
    assert counts["misnamed"] == 1
    assert counts["evasive"] == 1 + 4 * (per_prompt - 1)
