"""A training child inherits only what a stage needs from the worker's environment."""

import platform
import subprocess
import sys

import pytest

from training.supervisor import child_env


def test_the_platforms_secrets_do_not_reach_a_training_child(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db/prod")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    env = child_env()
    assert {"SECRET_KEY", "DATABASE_URL", "AWS_SECRET_ACCESS_KEY"} & set(env) == set()


def test_the_ml_stacks_settings_reach_a_training_child(monkeypatch):
    monkeypatch.setenv("HF_HOME", "/data/hf")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    env = child_env()
    assert (env["HF_HOME"], env["OMP_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"]) == (
        "/data/hf",
        "2",
        "1",
    )
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "PATH" in env


def test_the_allocator_settings_of_the_worker_reach_a_training_child(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/cuda/lib64")
    env = child_env()
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"  # the user's, not ours
    assert (env["MALLOC_ARENA_MAX"], env["LD_PRELOAD"], env["LD_LIBRARY_PATH"]) == (
        "2",
        "/usr/lib/libjemalloc.so.2",
        "/usr/local/cuda/lib64",
    )


def _page_faults_of_repeated_big_tensors(env: dict[str, str]) -> int:
    """Run a child that makes and frees a 256 MB tensor 4 times; return its page faults."""
    code = (
        "import resource, torch\n"
        "torch.ones(2**26).sum()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(4):\n"
        "    torch.ones(2**26).sum()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the tunables are glibc's"
)
def test_a_training_child_keeps_freed_tensors_instead_of_faulting_them_in_again(
    monkeypatch,
):
    """A step's big tensors (logits: batch x length x vocabulary) are over glibc's
    largest mmap threshold (32 MB): by default each is unmapped when freed and
    faulted in again, page by page and zeroed by the kernel, on the next step."""
    for name in ("GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    env = child_env()
    default = {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}
    pages = 4 * 2**28 // 4096  # four 256 MB tensors in 4 KB pages
    ours = _page_faults_of_repeated_big_tensors(env)
    # Against glibc's defaults in the same test (every page again: 262,144 here; fewer
    # where the kernel gives every mapping huge pages), so the bound can fail.
    assert ours < _page_faults_of_repeated_big_tensors(default) / 5
    assert ours < pages / 20
