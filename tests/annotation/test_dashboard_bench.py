"""bench/dashboard.py runs its whole path on 60 tasks (`--tiny`): both pages, both
ways, then the worker's figures as a user gets them, ending with one JSON line whose
ratios are its figures'."""

from __future__ import annotations

import os

import pytest

from tests.conftest import run_tiny_bench


def test_the_dashboard_bench_times_both_pages_both_ways():
    # Its own SQLite database under a temporary folder, never the tests' one.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    figures, _ = run_tiny_bench("dashboard.py", env=env)
    assert figures["rankings"] == 60 * 3
    for page in ("dashboard", "overview"):
        assert figures["ours"][page] > 0 and figures["baseline"][page] > 0
        assert figures["ratio"][page] == pytest.approx(
            figures["ours"][page] / figures["baseline"][page], abs=0.001
        )
        kept = figures["kept"][page]
        assert kept["first_visit_seconds"] > 0 and kept["worker_seconds"] > 0
        assert kept["later_visit_seconds"] > 0
