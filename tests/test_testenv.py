"""The suite's own plugin (testenv.py): a SIGTERM to pytest unwinds like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

HOLDING_TEST = textwrap.dedent(
    """
    import os, signal, subprocess, time

    def test_holds_a_process_group():
        child = subprocess.Popen(["sleep", "300"], process_group=0)
        with open(os.environ["PIDFILE"], "w") as fh:
            fh.write(str(child.pid))
        try:
            time.sleep(120)
        finally:
            os.killpg(child.pid, signal.SIGKILL)
    """
)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigterm_runs_the_running_tests_cleanup_before_pytest_exits(tmp_path):
    # A `timeout` around `make test` once left a test's whole `make run` stack
    # serving for half an hour: SIGTERM ended pytest before the test's `finally`.
    (tmp_path / "test_holding.py").write_text(HOLDING_TEST)
    pidfile = tmp_path / "child.pid"
    pytest = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "testenv", "-p", "no:django"]
        + ["-p", "no:cacheprovider", "test_holding.py"],
        cwd=tmp_path,
        env={**os.environ, "PIDFILE": str(pidfile), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    child = 0
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text()):
            assert pytest.poll() is None, pytest.communicate()[0]
            assert time.monotonic() < deadline, "the inner test never started"
            time.sleep(0.1)
        child = int(pidfile.read_text())
        assert alive(child)

        pytest.send_signal(signal.SIGTERM)
        output = pytest.communicate(timeout=60)[0]

        assert pytest.returncode == 2, output  # pytest's "interrupted"
        assert "KeyboardInterrupt" in output
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the test's cleanup did not run"
    finally:
        if pytest.poll() is None:
            pytest.kill()
        if child and alive(child):
            os.kill(child, signal.SIGKILL)
