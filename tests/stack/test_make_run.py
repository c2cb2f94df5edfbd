"""Ctrl-C of `make run` leaves no process behind and frees the port within 10 s."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.stack.conftest import ROOT, free_port, stack_env

pytestmark = pytest.mark.slow


def _install_stamp() -> str:
    """Return the Makefile's install stamp, so `make -o` skips the pip install."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    return f".venv/.installed-{digest}"


def wait_until_serving(port: int, make: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert make.poll() is None, f"make run exited early: {make.returncode}"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"make run did not serve on port {port} in {timeout_s} s")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _hold_a_request_open(port: int) -> socket.socket:
    """Start a POST whose body never finishes arriving: a web thread waits on it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 1000000\r\n\r\nusername=a"
    )
    time.sleep(1)  # the worker has taken it
    return sock


def _alive(procs: list[psutil.Process]) -> list[str]:
    left = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


def start_make_run(var_dir, port: int, log) -> subprocess.Popen:
    """Start `make run` (without its pip install) as a terminal would: its own group."""
    return subprocess.Popen(
        ["make", "-o", _install_stamp(), "run"],
        cwd=ROOT,
        env=stack_env(var_dir, PORT=str(port)),
        stdout=log,
        stderr=subprocess.STDOUT,
        process_group=0,  # its own group, as a terminal's foreground job
    )


def test_ctrl_c_of_make_run_stops_every_process_and_frees_the_port(
    micro_demo_var_dir, tmp_path
):
    port = free_port()
    log = (tmp_path / "make-run.log").open("w")
    make = start_make_run(micro_demo_var_dir, port, log)
    tree: list[psutil.Process] = []
    busy = None
    try:
        wait_until_serving(port, make, timeout_s=180)
        time.sleep(2)  # let the worker start too
        tree = psutil.Process(make.pid).children(recursive=True)
        commands = " ".join(" ".join(p.cmdline()) for p in tree)
        for name in ("gunicorn", "db_worker", "serve_inference"):
            assert name in commands, commands

        # A request in flight holds a worker's thread: the case that once left a gunicorn
        # worker holding the port (it waits for the thread; its master gave up on it).
        busy = _hold_a_request_open(port)

        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        started = time.monotonic()
        while time.monotonic() - started < 10:
            if make.poll() is not None and not _alive(tree) and _port_is_free(port):
                break
            time.sleep(0.1)
        took = time.monotonic() - started
        said = (tmp_path / "make-run.log").read_text()[-3000:]
        assert make.poll() is not None, (
            f"make still running 10 s after Ctrl-C: {_alive(tree)}\n{said}"
        )
        assert _alive(tree) == [], f"left behind after {took:.1f} s\n{said}"
        assert _port_is_free(port), f"port {port} still taken after {took:.1f} s"
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        for proc in tree:  # never leave a failed run's processes on the machine
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        log.close()
        if busy is not None:
            busy.close()
