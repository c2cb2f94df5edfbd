"""`manage.py db_worker`: django-tasks-db's worker, which outlives a database restart.

The original re-raises every database error but a locked SQLite file, so an idle
worker exited when PostgreSQL restarted (its reconnect is refused while the server
is down) and stayed gone unless something restarted it. This one closes its
connections and tries again, with a pause that doubles up to RETRY_MAX_SECONDS,
until the database answers; each failure is logged, and a stop signal still stops
it at once. A task whose bookkeeping the outage cut off stays "running" in the
task table; a training stage's job is failed by the reaper (training/reaper.py)
and resumed as after any lost worker. The options are the original's.

INSTALLED_APPS lists this app before django_tasks_db, so `db_worker` is this
command everywhere (`make run`, compose, the tests' workers).
"""

from __future__ import annotations

import logging
import os
import time

from django.core.management.base import CommandError
from django.db import connections
from django.db.utils import InterfaceError, OperationalError
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.management.commands import db_worker

logger = logging.getLogger("django_tasks_db")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


def close_connections() -> None:
    """Drop every database connection of this process; the next query reconnects."""
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except (OperationalError, InterfaceError):
            connection.connection = None  # already broken: forget it


class Worker(db_worker.Worker):
    """The original worker loop, restarted after a lost database connection."""

    def run(self) -> None:
        pause = RETRY_FIRST_SECONDS
        while True:
            started = time.monotonic()
            try:
                super().run()
                return
            except (OperationalError, InterfaceError) as exc:
                if not self.running:
                    raise
                if time.monotonic() - started > 10 * RETRY_MAX_SECONDS:
                    pause = RETRY_FIRST_SECONDS  # a new outage, not the same one
                logger.warning(
                    "worker %s lost the database (%s); trying again in %.1f s",
                    self.worker_id,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else exc,
                    pause,
                )
                close_connections()
                time.sleep(pause)
                pause = min(2 * pause, RETRY_MAX_SECONDS)


class Command(db_worker.Command):
    help = (
        "Run a database background worker (django-tasks-db's), which waits out a "
        "database restart instead of exiting"
    )

    def handle(
        self,
        *,
        verbosity: int,
        queue_name: str,
        interval: float,
        batch: bool,
        backend_name: str,
        startup_delay: bool,
        reload: bool,
        max_tasks: int | None,
        worker_id: str,
        exclude_queues: str,
        **options,
    ) -> None:
        self.configure_logging(verbosity)
        excluded = exclude_queues.split(",") if exclude_queues else []
        if excluded and "*" not in queue_name.split(","):
            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        worker = Worker(
            queue_names=queue_name.split(","),
            interval=interval,
            batch=batch,
            backend_name=backend_name,
            startup_delay=startup_delay,
            max_tasks=max_tasks,
            worker_id=worker_id,
            excluded_queue_names=excluded,
        )
        if reload and batch:
            logger.warning("--reload and --batch cannot be combined; not reloading")
        if reload and not batch:
            if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
                worker.configure_signals()  # only the reloaded child
            run_with_reloader(worker.run)
        else:
            worker.configure_signals()
            worker.run()
