"""With DEBUG off the site speaks HTTPS only; logins are throttled; passwords are checked."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client

from tests.conftest import make_user

ROOT = Path(__file__).resolve().parent.parent
SECRET = "t3st-Only_" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ"
SHOW = (
    "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, "
    "s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, "
    "s.SECURE_PROXY_SSL_HEADER)"
)


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        # The browser tests' conftest allows async-unsafe calls for this process.
        if k
        not in {"DEBUG", "INSECURE_HTTP", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    clean.update(env, SECRET_KEY=SECRET)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_debug_off_passes_djangos_https_deployment_checks():
    result = _manage("check", "--deploy", DEBUG="0")
    assert result.returncode == 0, result.stderr
    for check in ("W004", "W008", "W012", "W016"):  # HSTS, redirect, both cookies
        assert f"security.{check}" not in result.stderr, result.stderr


def test_debug_off_trusts_the_proxys_forwarded_scheme_and_sends_secure_cookies():
    result = _manage("shell", "-c", SHOW, DEBUG="0")
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == "True True True True ('HTTP_X_FORWARDED_PROTO', 'https')"


def test_insecure_http_is_the_one_switch_for_plain_http_local_use():
    result = _manage("shell", "-c", SHOW, DEBUG="0", INSECURE_HTTP="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False False False None"


def test_make_run_serves_plain_http_with_the_switch():
    run = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "INSECURE_HTTP=1" in run


def test_compose_publishes_only_the_tls_proxy():
    compose = (ROOT / "platform" / "compose.yaml").read_text()
    web = compose.split("\n  web:\n", 1)[1].split("\n\n", 1)[0]
    assert "ports:" not in web
    caddyfile = (ROOT / "platform" / "Caddyfile").read_text()
    assert "reverse_proxy web:8000" in caddyfile
    assert "max_size" in caddyfile


def test_every_variable_compose_gives_the_app_is_read_by_the_platform():
    """A variable the platform never reads (REDIS_URL was one) promises a part that
    does nothing; those for compose itself (the proxy, the database) are not the app's."""
    import yaml

    compose = yaml.safe_load((ROOT / "platform" / "compose.yaml").read_text())
    names = set(compose["x-app"]["environment"])
    broker = yaml.safe_load((ROOT / "platform" / "compose.rq.yaml").read_text())
    names |= set(broker["x-rq"])
    for service in (
        "web",
        "worker",
        "gpu-worker",
    ):  # the override's services are the app's
        assert broker["services"][service]["environment"] == broker["x-rq"]
    example = (ROOT / "platform" / ".env.example").read_text().splitlines()
    names |= {
        line.split("=", 1)[0] for line in example if "=" in line and line[0] != "#"
    }
    names -= {"SITE_ADDRESS", "CADDY_TLS", "POSTGRES_PASSWORD"}  # compose's own
    sources = "\n".join(
        path.read_text()
        for path in ROOT.rglob("*.py")
        if not {".venv", "tests", "bench", "node_modules"} & set(path.parts)
    )
    unread = sorted(n for n in names if f'"{n}"' not in sources)
    assert not unread, f"compose sets variables nothing reads: {unread}"
    assert names >= {"DATABASE_URL", "SECRET_KEY", "MODEL_DIR"}


def _attempt(client: Client, password: str):
    return client.post(
        "/login/",
        {"username": "annotator1", "password": password},
        REMOTE_ADDR="203.0.113.7",
    )


@pytest.mark.django_db
def test_repeated_wrong_passwords_lock_the_login_even_for_the_right_one():
    make_user("annotator1", "annotator")
    client = Client()
    for _ in range(4):
        assert _attempt(client, "wrong-guess").status_code == 200  # form error
    assert _attempt(client, "wrong-guess").status_code == 429  # the fifth locks
    response = _attempt(client, "annotator1-pw-123")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_a_right_password_after_a_few_wrong_ones_still_signs_in():
    make_user("annotator1", "annotator")
    client = Client()
    for _ in range(2):
        _attempt(client, "wrong-guess")
    assert _attempt(client, "annotator1-pw-123").status_code == 302
    assert "_auth_user_id" in client.session


@pytest.mark.parametrize("password", ["password", "12345678901", "annotator1-x"])
def test_common_numeric_and_similar_passwords_are_refused(password):
    user = User(username="annotator1")
    with pytest.raises(ValidationError):
        validate_password(password, user)


def test_a_long_unusual_password_is_accepted():
    validate_password("violet-harbour-teapot-93")


@pytest.mark.parametrize(
    "behind_proxy, expected", [(False, "10.0.0.2"), (True, "198.51.100.9")]
)
def test_the_throttled_address_is_the_proxys_report_only_behind_the_proxy(
    settings, rf, behind_proxy, expected
):
    from config.proxy import client_ip

    settings.FORWARDED_CLIENT_IP = behind_proxy
    request = rf.get(
        "/login/",
        HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.9",
        REMOTE_ADDR="10.0.0.2",
    )
    assert client_ip(request) == expected
