"""bench/demo_knowledge.py counts each answer's verdict, splits out the misnamed ones,
and runs whole on a built demo."""

from __future__ import annotations

import re
import sys

import pytest

from demo import world
from tests.conftest import load_bench

KNOWN = re.compile(r"^  (?P<split>train|dev|test)\s+(?P<known>\d+)/(?P<asked>\d+) \(")
ANSWERS = re.compile(
    r"^  (?P<split>train|dev|test)\s+(?P<label>greedy|T=1)\s+(?P<cells>.*)$"
)
CELL = re.compile(r"[a-z_]+ [\d.]+(?:/[\d.]+){2,3}")


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


@pytest.mark.slow
def test_the_bench_runs_whole_on_a_built_demo(demo_models, monkeypatch, capsys):
    """End to end on the micro build: both measurements, every split, each cell a share."""
    bench = load_bench("demo_knowledge", monkeypatch)
    monkeypatch.setattr(
        sys, "argv", ["demo_knowledge.py", "--models", str(demo_models["base"].parent)]
    )

    bench.main()

    lines = capsys.readouterr().out.splitlines()
    known = {
        m["split"]: (int(m["known"]), int(m["asked"]))
        for m in map(KNOWN.match, lines)
        if m
    }
    # Every creature's 4 attributes and 2 sums at each of the 4 counts, once.
    assert sum(asked for _, asked in known.values()) == len(world.CREATURES) * 12
    assert set(known) == {"train", "dev", "test"}
    rows = [m for m in map(ANSWERS.match, lines) if m]
    assert [(m["split"], m["label"]) for m in rows] == [
        (split, label)
        for split in ("train", "dev", "test")
        for label in ("greedy", "T=1")
    ]
    for row in rows:
        cells = dict(cell.split(" ", 1) for cell in CELL.findall(row["cells"]))
        assert "all" in cells and "legs" in cells
        shares = [float(x) for x in cells["all"].split("/")]
        assert len(shares) == 4  # correct / wrong / evasive / misnamed
        assert all(0 <= s <= 1 for s in shares)
        assert sum(shares[:3]) <= 1 + 1e-9
        assert shares[3] <= shares[1] + 0.005  # misnamed answers are wrong ones
