"""A demo set up as `make run` leaves it, in a temporary VAR_DIR, shared by these tests."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def stack_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """Return the environment of a user's shell: no SECRET_KEY, no DATABASE_URL, our VAR_DIR."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "DATABASE_URL", "DEBUG", "MODEL_DIR", "RUN_DIR"}
        and k not in {"EXPORT_DIR", "PORT", "HOST", "INSECURE_HTTP"}
        and not k.startswith("PYTEST")
        and not k.startswith("DJANGO_")
    }
    env.update(VAR_DIR=str(var_dir), **extra)
    return env


def free_port() -> int:
    """Return a TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def set_up_demo(var_dir: Path, preset: str) -> None:
    """Do what `make run` does before it serves: the secret file, then the demo set-up."""
    var_dir.mkdir(parents=True, exist_ok=True)
    (var_dir / "secret_key").write_text(secrets.token_urlsafe(50) + "\n")
    result = subprocess.run(
        [sys.executable, "manage.py", "run_demo", "--setup-only", "--preset", preset],
        cwd=ROOT,
        env=stack_env(var_dir),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="session")
def micro_demo_var_dir(tmp_path_factory) -> Path:
    """A VAR_DIR with the demo set up on the micro models (fast; for serving tests)."""
    var_dir = tmp_path_factory.mktemp("stack-micro")
    set_up_demo(var_dir, "micro")
    return var_dir


def make_token(
    env: dict[str, str], username: str = "researcher", scopes: tuple = ("read",)
) -> str:
    """Return a fresh API token of a demo user with these scopes, as the tokens page does."""
    code = (
        "from django.contrib.auth.models import User; "
        "from annotation.tokens import create_token; "
        f"print(create_token(User.objects.get(username={username!r}), 'test', {list(scopes)!r})[1])"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]
