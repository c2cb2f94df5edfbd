"""Running one training stage as a child process: start it, watch it, stop it, kill it.

Plain Python, no Django: the worker's job function passes an `on_tick` callback
that copies progress onto the job row, writes the heartbeat and answers whether a
cancel was asked. A stop is graceful first (the STOP file: the trainer checkpoints
and exits), then SIGTERM to the child's process group, then SIGKILL.

The child runs in its own session (process group), so escalation also reaches the
processes `accelerate launch` starts, and on Linux it is killed when the worker
dies (PR_SET_PDEATHSIG), so a dead worker leaves no orphan training behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.progress import LOG_FILE, RESULT_FILE, STOP_FILE, read_progress
from training.stage import EXIT_STOPPED

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCELERATE_DIR = REPO_ROOT / "platform" / "accelerate"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Outcome:
    """How a stage's child process ended."""

    returncode: int
    stop_requested: bool
    escalation: str  # "", "SIGTERM" or "SIGKILL": how hard it had to be stopped
    has_result: bool

    @property
    def succeeded(self) -> bool:
        """Return whether the stage finished and wrote its result."""
        return self.returncode == 0 and self.has_result and not self.stop_requested

    @property
    def stopped(self) -> bool:
        """Return whether the stage ended because a stop was asked."""
        return self.stop_requested and not self.succeeded


# What a training child may inherit from the worker: the system's basics and the
# ML stack's own knobs. Never the platform's secrets (SECRET_KEY, DATABASE_URL,
# tokens): a stage reads its config file, not the database.
CHILD_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "GLIBC_TUNABLES",
    }
)
CHILD_ENV_PREFIXES = (
    "LC_",
    "MALLOC_",
    "HF_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "TORCH",
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "CUDA_",
    "NCCL_",
    "NVIDIA_",
    "ACCELERATE_",
    "PYTORCH_",
    "XDG_CACHE_HOME",
)


# glibc's malloc for a training child. A step's big tensors (the logits, batch x
# length x vocabulary: 0.5 GB for 16 sequences of 160 tokens on SmolLM2) are over
# glibc's largest mmap threshold (32 MB), so by default each is unmapped when freed
# and faulted in again on the next step, page by page, zeroed by the kernel: a fifth
# of a real-model round's CPU time was system time. Kept on the heap instead (no
# mmap'd chunks, the heap never trimmed: a stage is one short-lived process that
# reaches its peak anyway), in huge pages where the kernel allows them, a step's
# allocations reuse the last step's pages (bench/stage_allocator.py has the
# figures). A worker whose environment sets GLIBC_TUNABLES (even empty: glibc's
# defaults), a MALLOC_ variable or LD_PRELOAD (jemalloc, tcmalloc) keeps its own.
STAGE_GLIBC_TUNABLES = (
    "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
    ":glibc.malloc.hugetlb=1"
)


def child_env() -> dict[str, str]:
    """Return the environment of a training child: only what a stage needs, unbuffered,
    with the stage's allocator settings unless the worker brings its own."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in CHILD_ENV_NAMES or name.startswith(CHILD_ENV_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    own_allocator = any(
        name in ("GLIBC_TUNABLES", "LD_PRELOAD") or name.startswith("MALLOC_")
        for name in env
    )
    if not own_allocator:
        env["GLIBC_TUNABLES"] = STAGE_GLIBC_TUNABLES
    return env


def accelerate_configs() -> list[str]:
    """Return the names of the accelerate configs in platform/accelerate/."""
    if not ACCELERATE_DIR.is_dir():
        return []
    return sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml"))


def stage_command(run_dir: Path, accelerate_config: str = "") -> list[str]:
    """Return the command line that runs the stage in `run_dir`.

    Without an accelerate config the stage runs as `python -m training.stage`:
    on one CPU process `accelerate launch` only adds start-up time (see
    bench/train_overhead.py). With one, `accelerate launch --config_file
    platform/accelerate/NAME.yaml` starts the processes it describes (DDP,
    DeepSpeed ZeRO-2/3, FSDP).
    """
    stage = ["-m", "training.stage", str(run_dir)]
    if not accelerate_config:
        return [sys.executable, *stage]
    path = ACCELERATE_DIR / f"{accelerate_config}.yaml"
    if not path.is_file():
        raise ValueError(
            f"accelerate config {accelerate_config!r} does not exist; "
            f"expected one of {accelerate_configs()} (files in {ACCELERATE_DIR})"
        )
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(path),
        *stage,
    ]


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """In a child (before exec, or an RQ work horse): ask Linux to send us `sig` when
    the process that started us dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to the child's process group, if it still exists."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def tail(path: Path, max_chars: int = 4000) -> str:
    """Return the end of a text file (the last `max_chars` characters), or ''."""
    if not path.is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_chars * 4))
        text = fh.read().decode("utf-8", errors="replace")
    return text[-max_chars:]


def supervise(
    argv: list[str],
    run_dir: Path,
    *,
    on_tick: Callable[[list[dict]], bool],
    on_start: Callable[[int], None] = lambda pid: None,
    tick_seconds: float = 2.0,
    poll_seconds: float = 0.1,
    stop_grace_seconds: float = 30.0,
    term_grace_seconds: float = 10.0,
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run `argv` with output to run_dir/stage.log until it exits; return how it ended.

    Every `tick_seconds` (and once more at the end) call `on_tick` with the
    progress lines written since the last call; when it returns True, create the
    STOP file, then SIGTERM the process group after `stop_grace_seconds` and
    SIGKILL it `term_grace_seconds` later. If the worker itself is interrupted
    (an exception here, e.g. SystemExit on a second Ctrl-C), terminate the child
    the same way before re-raising.

    Long on purpose: one polling loop whose escalation state (STOP, SIGTERM,
    SIGKILL) lives in its locals, so the whole stop sequence reads in one place.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    offset = 0
    stop_at = term_at = None
    escalation = ""
    with open(run_dir / LOG_FILE, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    try:
        on_start(proc.pid)
        next_tick = 0.0
        while True:
            returncode = proc.poll()
            now = time.monotonic()
            if returncode is not None or now >= next_tick:
                lines, offset = read_progress(run_dir, offset)
                if on_tick(lines) and stop_at is None:
                    (run_dir / STOP_FILE).touch()
                    stop_at = now
                next_tick = now + tick_seconds
            if returncode is not None:
                break
            if (
                stop_at is not None
                and term_at is None
                and now - stop_at >= stop_grace_seconds
            ):
                _signal_group(proc.pid, signal.SIGTERM)
                term_at, escalation = now, "SIGTERM"
            if (
                term_at is not None
                and escalation != "SIGKILL"
                and now - term_at >= term_grace_seconds
            ):
                _signal_group(proc.pid, signal.SIGKILL)
                escalation = "SIGKILL"
            time.sleep(poll_seconds)
    except BaseException:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=term_grace_seconds)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    # Reap what accelerate may have left in the group.
    _signal_group(proc.pid, signal.SIGKILL)
    if stop_at is not None:
        with open(run_dir / LOG_FILE, "ab") as log:
            how = f" after {escalation}" if escalation else ""
            log.write(f"stopped on request{how} (exit status {returncode})\n".encode())
    return Outcome(
        returncode=returncode,
        stop_requested=stop_at is not None or returncode == EXIT_STOPPED,
        escalation=escalation,
        has_result=(run_dir / RESULT_FILE).is_file(),
    )
