"""The inference process: streams chat replies of recently used policies over a unix socket.

`manage.py serve_inference` runs it beside the task worker (`make run` starts both), so
the web tier relays replies and never imports torch. The protocol is line-delimited
JSON, one request per connection:

    -> {"op": "chat", "key": NAME, "base_path": ..., "adapter_path": ...,
        "messages": [{"role": ..., "content": ...}, ...], "sampling": {...}}
    <- {"event": "token", "text": "..."}       (one per piece, as generated)
    <- {"event": "done", "tokens": N, "seconds": S}   or   {"event": "error", "detail": ...}

    -> {"op": "ping"}   <- {"event": "pong", "loaded": [NAME, ...]}

Loaded policies stay in a least-recently-used cache of `cache_size` models.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.sampling import SamplingConfig

logger = logging.getLogger(__name__)

# Bounds of one reply: a streaming reply holds a web thread, so it may not run forever.
MAX_NEW_TOKENS = 512
MAX_SECONDS = 120.0
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "max_new_tokens", "seed")


def _load(base_path: str, adapter_path: str) -> tuple[Any, Any]:
    """Return (model, tokenizer) ready to generate on the default device."""
    from inference.loading import load_for_generation

    return load_for_generation(base_path, adapter_path)


class PolicyCache:
    """The `size` most recently used (model, tokenizer) pairs, loaded on first use."""

    def __init__(
        self,
        size: int,
        loader: Callable[[str, str], tuple[Any, Any]] = _load,
    ) -> None:
        if size < 1:
            raise ValueError(f"cache size must be at least 1, got {size}")
        self.size = size
        self._loader = loader
        self._models: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, base_path: str, adapter_path: str) -> tuple[Any, Any]:
        """Return the loaded policy `key`, loading it (and evicting the oldest) if absent."""
        with self._lock:  # one load at a time: two loads of one model waste memory
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loaded = self._loader(base_path, adapter_path)
            self._models[key] = loaded
            while len(self._models) > self.size:
                evicted, _ = self._models.popitem(last=False)
                logger.info("unloaded %s (cache of %d)", evicted, self.size)
            return loaded

    def names(self) -> list[str]:
        """Return the loaded policies, least recently used first."""
        with self._lock:
            return list(self._models)


def parse_sampling(raw: dict) -> SamplingConfig:
    """Return the one-candidate SamplingConfig of a chat request, bounded.

    Raises ValueError naming the bad control.
    """
    unknown = sorted(set(raw) - set(SAMPLING_KEYS))
    if unknown:
        raise ValueError(
            f"unknown sampling keys {unknown}; allowed: {list(SAMPLING_KEYS)}"
        )
    sampling = SamplingConfig(num_candidates=1, **raw)
    if sampling.max_new_tokens > MAX_NEW_TOKENS:
        raise ValueError(
            f"max_new_tokens is at most {MAX_NEW_TOKENS} here, got {sampling.max_new_tokens}"
        )
    return sampling


class _Handler(socketserver.StreamRequestHandler):
    server: InferenceServer

    def handle(self) -> None:
        try:
            request = json.loads(self.rfile.readline())
        except ValueError as exc:
            self._send({"event": "error", "detail": f"not a JSON line: {exc}"})
            return
        if request.get("op") == "ping":
            self._send({"event": "pong", "loaded": self.server.cache.names()})
            return
        if request.get("op") != "chat":
            self._send(
                {"event": "error", "detail": f"unknown op {request.get('op')!r}"}
            )
            return
        self._chat(request)

    def _chat(self, request: dict) -> None:
        from inference.streaming import stream_reply

        started = time.monotonic()
        stop = threading.Event()
        timer = threading.Timer(self.server.max_seconds, stop.set)
        timer.start()
        count = 0
        try:
            sampling = parse_sampling(request.get("sampling") or {})
            model, tokenizer = self.server.cache.get(
                request["key"], request["base_path"], request.get("adapter_path", "")
            )
            for piece in stream_reply(
                model, tokenizer, request["messages"], sampling, stop=stop
            ):
                count += 1
                self._send({"event": "token", "text": piece})
        except (BrokenPipeError, ConnectionResetError):
            stop.set()  # the reader went away: stop generating
            return
        except Exception as exc:  # any failure goes to the reader, by name
            logger.exception("chat request failed")
            self._send({"event": "error", "detail": f"{type(exc).__name__}: {exc}"})
            return
        finally:
            timer.cancel()
        self._send(
            {
                "event": "done",
                "tokens": count,
                "seconds": round(time.monotonic() - started, 3),
                "stopped": stop.is_set(),
            }
        )

    def _send(self, event: dict) -> None:
        self.wfile.write(json.dumps(event).encode() + b"\n")
        self.wfile.flush()


class InferenceServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A unix-socket server, one thread per connection, sharing one PolicyCache."""

    daemon_threads = True

    def __init__(
        self,
        path: Path,
        cache: PolicyCache,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        self.cache = cache
        self.max_seconds = max_seconds
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()  # a socket left by a killed server
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o600)  # only this user may ask for generations
