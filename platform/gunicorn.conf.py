"""Gunicorn settings for the web tier (`gunicorn -c platform/gunicorn.conf.py config.wsgi`).

Every value comes from the environment, with defaults sized for a small machine: the
web process is CPU-bound Django without torch, so a few synchronous workers per core
serve annotators best; persistent database connections (DB_CONN_MAX_AGE in the
settings) save a connection setup per request.
"""
from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("WEB_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
threads = int(os.environ.get("WEB_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
# Import Django once in the master: workers fork ready and share the code pages.
preload_app = True
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then, so a slow leak never grows without bound.
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "info")
