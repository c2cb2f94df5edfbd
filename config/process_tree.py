"""A command's tree of child processes, stopped whole within a deadline, none left behind.

`make run` starts gunicorn (which forks its workers), the task worker (which starts
training stages in their own sessions) and the inference server. On Ctrl-C every one of
them must go, and the port must be free, within seconds: a gunicorn worker that outlived
its master once kept port 8000, and the next `make run` could not start. So the command
becomes a child subreaper (Linux): a grandchild orphaned by its parent's death is
re-parented to it instead of to init, and stays in the tree it can see and kill.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux prctl); return False where the OS has no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def descendants() -> list[psutil.Process]:
    """Return every living process below this one (children, their children, adoptees)."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def stop_tree(
    children: list[subprocess.Popen], grace_s: float = 5.0, kill_wait_s: float = 3.0
) -> list[int]:
    """Ask the children to stop (SIGTERM), then kill whatever of the tree is left.

    Waits up to `grace_s` for the whole tree (grandchildren included) to exit, then
    sends SIGKILL to every remaining descendant and reaps them. Return the pids that had
    to be killed.
    """
    for child in children:
        if child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap_adopted()
        for child in children:
            child.poll()
        if not descendants():
            return []
        time.sleep(0.1)
    left = descendants()
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=kill_wait_s)
    for child in children:
        try:
            child.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
    _reap_adopted()
    return [proc.pid for proc in left]


def _reap_adopted() -> None:
    """Collect exited adoptees (they are our children now), so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
