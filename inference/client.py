"""The web tier's side of the inference process: ask for a chat reply, read it as it streams.

Standard library only: the web processes never import torch (see inference.server).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from inference.models import Policy


class InferenceUnavailable(Exception):
    """The inference process is not running (or not answering) at its socket."""


def socket_path() -> Path:
    """Return where the inference process listens (settings.INFERENCE_SOCKET)."""
    return Path(settings.INFERENCE_SOCKET)


def _connect(timeout_s: float) -> socket.socket:
    path = socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise InferenceUnavailable(
            f"no inference process answers at {path} ({exc.strerror or exc}); "
            "`make run` starts one, or run: .venv/bin/python manage.py serve_inference"
        ) from None
    return sock


def _events(sock: socket.socket, deadline: float) -> Iterator[dict]:
    """Yield the JSON events of one connection until it closes or the deadline passes."""
    buffer = b""
    while True:
        if time.monotonic() > deadline:
            yield {"event": "error", "detail": "the reply ran out of time"}
            return
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            yield {
                "event": "error",
                "detail": "the inference process stopped answering",
            }
            return
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


def chat(
    policy: Policy,
    messages: list[dict],
    sampling: dict,
    *,
    read_timeout_s: float = 60.0,
    total_s: float = 150.0,
) -> Iterator[dict]:
    """Return the events of `policy`'s reply to `messages`: token..., then done or error.

    Connects at once: raises InferenceUnavailable when no inference process listens.
    A read waits at most `read_timeout_s` (the first one includes loading the policy),
    the whole reply at most `total_s`; closing the iterator early closes the
    connection, and the inference process stops generating.
    """
    sock = _connect(read_timeout_s)
    request = {
        "op": "chat",
        "key": policy.name,
        "base_path": policy.base_path,
        "adapter_path": policy.adapter_path,
        "messages": messages,
        "sampling": sampling,
    }
    try:
        sock.sendall(json.dumps(request).encode() + b"\n")
    except OSError as exc:
        sock.close()
        raise InferenceUnavailable(f"the inference process hung up: {exc}") from None
    return _closing(sock, _events(sock, time.monotonic() + total_s))


def _closing(sock: socket.socket, events: Iterator[dict]) -> Iterator[dict]:
    try:
        yield from events
    finally:
        sock.close()


def ping(timeout_s: float = 2.0) -> dict:
    """Return the inference process's pong (the loaded policies), or raise InferenceUnavailable."""
    sock = _connect(timeout_s)
    try:
        sock.sendall(b'{"op": "ping"}\n')
        for event in _events(sock, time.monotonic() + timeout_s):
            return event
    finally:
        sock.close()
    raise InferenceUnavailable("the inference process closed without answering")
