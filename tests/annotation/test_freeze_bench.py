"""bench/freeze.py runs its whole path on 60 tasks (`--tiny`): the three freezes, the
two first downloads and the two first comparisons, ending with one JSON line whose
figures agree."""

from __future__ import annotations

import os

from tests.conftest import run_tiny_bench


def test_the_freeze_bench_runs_every_arm_and_ends_with_its_json_line():
    # Its own SQLite database under a temporary folder, never the tests' one.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    figures, _ = run_tiny_bench("freeze.py", env=env)
    assert figures["database"] == "sqlite"
    assert figures["pairs"] == 60 * 3 * 6
    for arm in ("baseline", "ours", "api"):
        assert figures[arm]["pairs"] == figures["pairs"]
    export = figures["export"]
    assert export["rows"] == figures["pairs"] and export["bytes"] > 0
    assert export["queued_request_seconds"] > 0 and export["worker_seconds"] > 0
    comparison = figures["comparison"]
    assert comparison["pairs"] == figures["pairs"]
    assert comparison["queued_request_seconds"] > 0
    assert comparison["baseline_peak_mib"] > 0 and comparison["worker_peak_mib"] > 0
