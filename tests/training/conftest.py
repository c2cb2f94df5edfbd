"""Fixtures for the training tests: a real `manage.py db_worker` process on the test database.

How the worker shares the test database: tests that use `start_worker` run with
`transactional_db`, so what they write is committed and visible to another
process. The worker is started with DATABASE_URL pointing at the test database
pytest-django created (PostgreSQL: `test_<name>`). SQLite's default test database
is in memory and cannot be shared, so when a collected test uses the worker, a
hook in tests/conftest.py gives the SQLite test database a file in a fresh temporary folder
(`TEST["NAME"]`) before any database is set up; the file is private to this pytest
run, so parallel runs do not collide. RUN_DIR and MODEL_DIR of the test and of
the worker point at the test's tmp_path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connections

from config.settings import rq_settings
from inference.models import Policy
from tests.training import sleep_stage

# The test stage "sleep" is registered by importing it; the workers below are told
# to import it too (TRAINING_STAGE_MODULES), and the child reads its trainer's path
# from the envelope.
SLEEP_STAGE_MODULE = sleep_stage.__name__

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread: tiny matrices gain nothing from more, a shared CPU
    loses much. The trainer test modules use it for every test (`pytestmark`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def database_url() -> str:
    """Return a DATABASE_URL for the test database the current connection uses."""
    db = connections["default"].settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        name = db["NAME"]
        if "memory" in str(name):
            raise RuntimeError(
                "the SQLite test database is in memory; see tests/training/conftest.py"
            )
        return f"sqlite:///{name}"
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}{port}/{db['NAME']}"


class Worker:
    """A running `manage.py db_worker` subprocess and its log."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc = proc
        self.log = log

    def kill(self) -> None:
        """Kill the worker at once, as a lost machine would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Stop the worker (two SIGTERMs: finish nothing, stop the stage), then kill it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def cpu_with_native_bf16(monkeypatch) -> None:
    """Make this machine say it runs bfloat16 natively (a CPU with AMX), as the
    stages' bf16 paths need; without AMX PyTorch emulates it, slower but the same."""
    from training import artifacts

    monkeypatch.setattr(artifacts, "native_bf16", lambda: (True, "CPU with AMX"))


@pytest.fixture
def cpu_without_native_bf16(monkeypatch) -> None:
    """Make this machine say it has no native bfloat16 (an AVX2 CPU)."""
    from training import artifacts

    monkeypatch.setattr(
        artifacts,
        "native_bf16",
        lambda: (False, "CPU (AVX2) without AMX or AVX-512 BF16"),
    )


@pytest.fixture
def run_root(settings, tmp_path) -> Path:
    """Point RUN_DIR and MODEL_DIR at the test's own folders."""
    settings.RUN_DIR = tmp_path / "runs"
    settings.MODEL_DIR = tmp_path / "models"
    return tmp_path


def spawn_worker(
    run_root: Path,
    argv: list[str],
    log: Path,
    kind: type[Worker] | None = None,
    **env_extra: str,
) -> Worker:
    """Start `manage.py <argv>` on the test database, with the test's folders and the
    test stage "sleep"; return it as a `kind` (Worker by default)."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        RUN_DIR=str(run_root / "runs"),
        MODEL_DIR=str(run_root / "models"),
        DEBUG="0",
        TRAINING_STAGE_MODULES=SLEEP_STAGE_MODULE,
        **env_extra,
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", *argv],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return (kind or Worker)(proc, log)


@pytest.fixture
def start_worker(transactional_db, run_root) -> Iterator[Callable[[], Worker]]:
    """Return a function that starts a real db_worker on the test database."""
    workers: list[Worker] = []

    def start() -> Worker:
        worker = spawn_worker(
            run_root,
            [
                "db_worker",
                "--queue-name",
                "default,gpu",
                "--interval",
                "0.2",
                "--no-startup-delay",
                "--no-reload",
            ],
            run_root / f"worker-{len(workers) + 1}.log",
        )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for(
    predicate: Callable[[], object], timeout: float = 60.0, what: str = ""
) -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


@pytest.fixture
def start_policy(db, tmp_path) -> Policy:
    """A registered policy whose base folder exists (the test stage "sleep" never loads it)."""
    base = tmp_path / "start-model"
    base.mkdir()
    return Policy.objects.create(name="start", base_path=str(base))


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """Hash the personas' passwords cheaply: PBKDF2 costs seconds per user on 2 cores."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# TASK_BACKEND=rq's tests use this Redis database, emptied before and after each.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def rq_queue(settings, transactional_db) -> Iterator[str]:
    """Make the queue RQ on TEST_REDIS_URL for this test (what TASK_BACKEND=rq sets),
    and return that URL. Skip where no Redis answers, unless REQUIRE_REDIS=1 (CI
    sets it: there a missing Redis is a failure)."""
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        why = f"no Redis at {TEST_REDIS_URL} ({exc}); set TEST_REDIS_URL"
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    client.flushdb()
    for name, value in rq_settings(TEST_REDIS_URL).items():
        setattr(settings, name, value)
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


class RQWorkerProcess(Worker):
    """A `manage.py rqworker` subprocess: RQ ignores a second signal within a second."""

    def stop(self) -> None:
        """Warm, then cold shutdown (the running stage is stopped), then kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=1.2)
                return
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_rq_worker(rq_queue, run_root) -> Iterator[Callable[[], RQWorkerProcess]]:
    """Return a function that starts a real `manage.py rqworker default gpu
    --with-scheduler` (TASK_BACKEND=rq) on the test database and rq_queue's Redis."""
    workers: list[RQWorkerProcess] = []

    def start() -> RQWorkerProcess:
        worker = spawn_worker(
            run_root,
            ["rqworker", "default", "gpu", "--with-scheduler"],
            run_root / f"rqworker-{len(workers) + 1}.log",
            RQWorkerProcess,
            TASK_BACKEND="rq",
            REDIS_URL=rq_queue,
        )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
