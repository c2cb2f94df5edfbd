"""bench/real_model.py's follow-rate stage runs whole on the real model (a few
candidates), so the figures docs/loop.md quotes from it stay reproducible."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_follow_rates_are_printed_as_asked_and_with_the_guiding_prompt(db, smollm2):
    result = subprocess.run(
        [
            sys.executable,
            "bench/real_model.py",
            "--model",
            str(smollm2["folder"]),
            "--stages",
            "follow",
            "--follow-requests",
            "3",
            "--k",
            "2",
            "--max-new-tokens",
            "8",
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [
        line
        for line in result.stdout.splitlines()
        if re.match(
            r"(as asked|with a guiding system prompt): strict [01]\.\d{3} ", line
        )
    ]
    assert len(lines) == 2, result.stdout
    assert all("over 6 candidates" in line for line in lines), lines
