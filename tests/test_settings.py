"""Settings come only from the environment; a missing secret stops a production start."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _check(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120,
    )


def test_missing_secret_with_debug_off_stops_start_up_with_a_clear_message():
    result = _check({"DEBUG": "0"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set and DEBUG is off" in result.stderr


def test_malformed_boolean_names_the_variable_and_the_value():
    result = _check({"DEBUG": "maybe", "SECRET_KEY": "x" * 50})
    assert result.returncode != 0
    assert "DEBUG must be one of" in result.stderr
    assert "'maybe'" in result.stderr


def test_secret_from_environment_starts_with_debug_off():
    result = _check({"DEBUG": "0", "SECRET_KEY": "x" * 50})
    assert result.returncode == 0, result.stderr
