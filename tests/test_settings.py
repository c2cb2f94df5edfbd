"""Settings come only from the environment; a missing secret stops a production start."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _check(env: dict, var_dir: Path | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    if var_dir is not None:
        clean["VAR_DIR"] = str(var_dir)
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_secret_with_debug_off_stops_start_up_with_a_clear_message(tmp_path):
    result = _check({"DEBUG": "0"}, var_dir=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is not set and DEBUG is off" in result.stderr
    # It names both fixes: the file `make run` writes, and the variable.
    assert str(tmp_path / "secret_key") in result.stderr
    assert "make run" in result.stderr
    assert "set SECRET_KEY" in result.stderr


def _secret(env: dict, var_dir: Path) -> str:
    """Return settings.SECRET_KEY as manage.py sees it with this environment."""
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    clean.update(env, VAR_DIR=str(var_dir))
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # shell may print auto-imports first


def test_secret_read_from_var_dir_file_when_the_variable_is_unset(tmp_path):
    (tmp_path / "secret_key").write_text("k" * 50 + "\n")
    assert _secret({}, tmp_path) == "k" * 50


def test_secret_variable_wins_over_the_file(tmp_path):
    (tmp_path / "secret_key").write_text("k" * 50)
    assert _secret({"SECRET_KEY": "x" * 50}, tmp_path) == "x" * 50


def test_an_empty_secret_file_is_no_secret(tmp_path):
    (tmp_path / "secret_key").write_text("\n")
    result = _check({"DEBUG": "0"}, var_dir=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_malformed_boolean_names_the_variable_and_the_value():
    result = _check({"DEBUG": "maybe", "SECRET_KEY": "x" * 50})
    assert result.returncode != 0
    assert "DEBUG must be one of" in result.stderr
    assert "'maybe'" in result.stderr


def test_secret_from_environment_starts_with_debug_off():
    result = _check({"DEBUG": "0", "SECRET_KEY": "x" * 50})
    assert result.returncode == 0, result.stderr


def _openmp_env(env: dict) -> str:
    """Return OMP_WAIT_POLICY and GOMP_SPINCOUNT as a process started by manage.py sees them."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}
    }
    clean.update(env, SECRET_KEY="x" * 50)
    code = "import os; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # shell may print auto-imports first


def test_manage_py_gives_openmp_a_short_spin_that_workers_and_stages_inherit():
    # Passive waiting halved training speed on a quiet CPU; the default long spin made
    # it many times slower on a busy one (bench/train_overhead.py, manage.py).
    assert _openmp_env({}) == "None 10000"


def test_a_users_own_openmp_wait_policy_wins():
    assert _openmp_env({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE None"


def test_database_connections_persist_with_health_checks_by_default(monkeypatch):
    # One connection per request halved PostgreSQL submissions/s (issue 12, item 10).
    from config.settings import _database

    monkeypatch.delenv("DB_CONN_MAX_AGE", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/feedback")
    db = _database()
    assert db["CONN_MAX_AGE"] == 600
    assert db["CONN_HEALTH_CHECKS"] is True


def test_db_conn_max_age_zero_still_closes_connections_after_each_request(monkeypatch):
    from config.settings import _database

    monkeypatch.setenv("DB_CONN_MAX_AGE", "0")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db:5432/feedback")
    assert _database()["CONN_MAX_AGE"] == 0
