"""bench/hh_reward_accuracy.py through the platform's path with a micro model: an
`--eval-file` is evaluated, none of its prompts is trained on, and the script ends
with one JSON line."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_bench

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ANIMALS = ("cat", "dog", "bird", "fox", "cow", "hen")
COLOURS = ("red", "blue", "green", "small", "big")


def hh_pair(colour: str, animal: str) -> dict:
    prompt = f"\n\nHuman: What does the {colour} {animal} like?\n\nAssistant:"
    return {
        "chosen": f"{prompt} The {colour} {animal} likes fish.",
        "rejected": f"{prompt} The {colour} {animal} likes seeds.",
    }


def write_hh(path: Path, pairs: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in pairs)
    return path


def test_the_bench_trains_a_reward_round_and_ends_with_the_eval_files_json_line(
    tiny_model_dir, tmp_path
):
    data = tmp_path / "data"
    data.mkdir()
    write_hh(
        data / "toy.test.jsonl.gz",
        [hh_pair(c, a) for c in COLOURS for a in ANIMALS[:4]],
    )
    from training.reward import split_by_prompt

    def prompt(colour: str, animal: str) -> list[dict]:
        return [{"role": "user", "content": f"What does the {colour} {animal} like?"}]

    train, _ = split_by_prompt(
        [{"prompt": prompt(c, a)} for c in COLOURS for a in ANIMALS[:4]], 0.2, 0
    )
    shared = train[0]["prompt"][0]["content"].split()[3:5]  # a training prompt's words
    # Five new prompts and one of the training part: that one must leave it.
    eval_file = write_hh(
        tmp_path / "eval.jsonl.gz",
        [hh_pair(c, a) for c in COLOURS for a in ANIMALS[4:5]] + [hh_pair(*shared)],
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hh_reward_accuracy.py")]
        + ["--base", str(tiny_model_dir), "--data", str(data)]
        + ["--eval-file", str(eval_file), "--max-steps", "2", "--batch-size", "4"]
        + ["--max-length", "64", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)},
    )

    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    last = json.loads(lines[-1])
    assert sorted(last) == ["accuracy", "mean_margin", "pairs"]
    assert last["pairs"] == 6
    assert 0.0 <= last["accuracy"] <= 1.0
    assert f"20 pairs in the sample: {len(train) - 1} train; evaluated: 6" in lines[0]
    assert "checked: none of the 6 evaluated pairs' prompts was imported" in lines


@pytest.mark.parametrize(
    "argv, stage_bf16",
    [
        ([], False),
        (["--bf16"], True),  # as the docstring's runs typed it
        (["--bf16", "auto"], "auto"),
        (["--bf16", "false"], False),
    ],
)
def test_bf16_reaches_the_stage_as_true_auto_or_false(monkeypatch, argv, stage_bf16):
    # "auto" lets the same command run on a CPU without native bfloat16, where the
    # stage refuses true.
    bench = load_bench("hh_reward_accuracy", monkeypatch)
    monkeypatch.setattr(sys, "argv", ["hh_reward_accuracy.py", *argv])

    options = bench.stage_options(bench.parse_args())

    assert options["bf16"] == stage_bf16
    assert type(options["bf16"]) is type(stage_bf16)
