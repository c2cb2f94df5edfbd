"""Gunicorn settings for the web tier (`gunicorn -c platform/gunicorn.conf.py config.wsgi`).

Every value comes from the environment, with defaults sized for a small machine. A
request of the annotator workspace spends about a third of its time waiting on
PostgreSQL round trips, so threaded workers (gthread) keep a core busy while one
request waits. Two workers per core with two threads each served the most
submissions per second at the lowest p99 in bench/annotation_load.py on 2 cores
(214/s, p99 72 ms; one worker per core x 4 threads: 167/s, p99 90 ms, the threads
of a process queueing on its GIL; 8 synchronous workers: 173/s, and no keep-alive).
WEB_THREADS=1 gives synchronous workers. Each thread keeps its database connection
(DB_CONN_MAX_AGE, 600 s by default in settings) instead of opening one per request.
"""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("WEB_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
threads = int(os.environ.get("WEB_THREADS", "2"))
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
