"""The RQ worker of TASK_BACKEND=rq: `manage.py rqworker default gpu --with-scheduler`.

settings.RQ names this class, so django-rq's `rqworker` runs it. It is RQ's worker
(a work horse forked per task; `--with-scheduler` moves the reaper's delayed task
onto its queue when due) with what the platform's `db_worker` also does:

- a stop that reaches the running stage: RQ's cold shutdown (a second SIGTERM or
  Ctrl-C) SIGKILLs the horse, and the stage would die with it, its job "running"
  until the reaper noticed; here the horse gets SIGTERM, and the task stops its
  stage (SIGTERM, SIGKILL 10 s later: training/supervisor.py) and records the job
  failed with "resume the round", as db_worker's second signal does. A third
  signal SIGKILLs the horse. A worker killed outright (SIGKILL, a lost
  container) takes its horse with it the same way, where RQ's would run on;
- with RQ's maintenance (at start, then every 10 minutes), the reaper's work: jobs
  of a worker that died are failed, and stages, imports, freezes, exports,
  comparisons and page figures whose task the broker never got or lost are queued
  again (`requeue_lost` in training/tasks.py, `requeue_lost_rows` in
  annotation/tasks.py). It needs no task in Redis, so it runs after Redis lost the
  reaper's own task too.

The first SIGTERM is RQ's warm shutdown: the running task finishes first.
"""

from __future__ import annotations

import logging
import signal
import sys

from django.db import DatabaseError, connections
from redis.exceptions import RedisError
from rq.worker import Worker as RQWorker

from training.supervisor import die_with_parent

logger = logging.getLogger(__name__)


def _stop_task(signum, frame) -> None:
    """In the horse: unwind the task (SystemExit), as db_worker's second signal does.

    Later SIGTERMs are ignored, so they cannot cut the stop short: a killed worker's
    horse was seen to receive a second one while its task stopped the stage (about
    one run in three of the killed-worker test), and died with the job left
    "running". The worker escalates to SIGKILL itself (`Worker.kill_horse`)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(1)


class Worker(RQWorker):
    """RQ's worker whose cold shutdown lets the running task stop its stage."""

    horse_signals_sent = 0

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        signal.signal(signal.SIGTERM, _stop_task)
        # RQ's horse outlives a worker killed with SIGKILL; this one stops its task
        # as on a cold shutdown, so a dead worker leaves no task running unseen.
        die_with_parent(signal.SIGTERM)

    def execute_job(self, job, queue) -> None:
        self.horse_signals_sent = 0  # a new horse
        super().execute_job(job, queue)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send the horse SIGTERM the first time a kill is asked for, SIGKILL after."""
        if sig == signal.SIGKILL and self.horse_signals_sent == 0:
            sig = signal.SIGTERM
        self.horse_signals_sent += 1
        super().kill_horse(sig)

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance (at start, then every 10 minutes), and the reaper's."""
        super().run_maintenance_tasks()
        self.reap()

    def reap(self) -> None:
        """Fail the jobs of dead workers and queue again the stages whose task was
        lost, then close the database connections: the horses are forked from this
        process and must not share its connection."""
        from annotation.tasks import requeue_lost_rows
        from training.reaper import reap_stale_jobs
        from training.tasks import requeue_lost

        try:
            reaped = reap_stale_jobs()
            requeued = requeue_lost() + requeue_lost_rows()
            if reaped or requeued:
                logger.warning(
                    "failed the jobs %s of lost workers; queued again the jobs %s "
                    "whose task was lost",
                    reaped,
                    requeued,
                )
        except (DatabaseError, RedisError) as exc:
            logger.warning("could not reap (%s); trying again later", exc)
        finally:
            connections.close_all()
