"""`manage.py serve_inference`: the inference process that streams playground replies."""

from __future__ import annotations

import signal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.server import InferenceServer, PolicyCache


class Command(BaseCommand):
    help = (
        "Serve chat replies of registered policies over a unix socket "
        "(settings.INFERENCE_SOCKET), keeping the most recently used policies loaded."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--socket",
            default="",
            help="Socket path (default: INFERENCE_SOCKET, VAR_DIR/inference.sock).",
        )
        parser.add_argument(
            "--cache-size",
            type=int,
            default=settings.INFERENCE_CACHE_SIZE,
            help="Policies kept loaded (least recently used one goes first).",
        )

    def handle(self, *args, socket: str, cache_size: int, **options) -> None:
        path = socket or settings.INFERENCE_SOCKET
        server = InferenceServer(path, PolicyCache(cache_size))

        def _stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        self.stdout.write(f"Inference process listening at {path}")
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            Path(path).unlink(missing_ok=True)
