"""Under `make run`, the playground streams a demo policy's reply from the inference
process, and no web process has imported torch."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.stack.conftest import free_port, make_token, stack_env
from tests.stack.test_make_run import start_make_run, wait_until_serving

pytestmark = pytest.mark.slow


def _maps_torch(pid: int) -> bool:
    """Return whether the process has torch's library mapped (it imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def _stream_chat(port: int, token: str) -> list[tuple[float, dict]]:
    """POST a playground chat; return (arrival time, event) for each streamed event."""
    body = {
        "policy": "demo-sft",
        "messages": [{"role": "user", "content": "What colour is a glimmet?"}],
        "sampling": {"temperature": 1.0, "max_new_tokens": 48, "seed": 0},
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(
        "POST",
        "/api/playground/chat",
        json.dumps(body),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 200, response.read()[:2000]
    arrivals, buffer = [], b""
    while chunk := response.read1(65536):
        buffer += chunk
        *frames, buffer = buffer.split(b"\n\n")
        for frame in frames:
            arrivals.append((time.monotonic(), json.loads(frame[len(b"data: ") :])))
    conn.close()
    return arrivals


def test_playground_streams_from_the_inference_process_and_web_has_no_torch(
    micro_demo_var_dir, tmp_path
):
    env = stack_env(micro_demo_var_dir)
    token = make_token(env)
    port = free_port()
    log = (tmp_path / "make-run.log").open("w")
    make = start_make_run(micro_demo_var_dir, port, log)
    try:
        wait_until_serving(port, make, timeout_s=180)
        socket_path = micro_demo_var_dir / "inference.sock"
        deadline = time.monotonic() + 60
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        arrivals = _stream_chat(port, token)
        events = [e for _, e in arrivals]
        assert events[-1]["event"] == "done", events
        tokens = [t for t, e in arrivals if e["event"] == "token"]
        assert len(tokens) >= 2, events
        assert tokens[0] < tokens[-1]  # the first piece came before the last
        text = "".join(e["text"] for e in events if e["event"] == "token")
        assert text.strip()

        tree = psutil.Process(make.pid).children(recursive=True)
        web = [p for p in tree if "gunicorn" in " ".join(p.cmdline())]
        inference = [p for p in tree if "serve_inference" in " ".join(p.cmdline())]
        assert web and inference
        assert [p.pid for p in web if _maps_torch(p.pid)] == []
        assert _maps_torch(inference[0].pid)  # the check can see torch where it is
    finally:
        os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(timeout=20)
        except Exception:
            os.killpg(make.pid, signal.SIGKILL)
        log.close()
