"""What differs between the job queue's backends (settings.TASK_BACKEND), in one place.

"database" (django-tasks-db): a queued task is a row, written in the caller's
transaction, so a task and the rows it serves commit together or not at all. "rq"
(django-tasks-rq): a task is a Redis entry that a worker may take at once, before
the caller's transaction commits (it would find no job row, or an old one), so it
is queued when that transaction commits; Redis and the database cannot commit
together, so a crash between the two leaves a committed job with no task, which
the reaper queues again (`training.tasks.requeue_lost`).

- `uses_database()`: whether the queue is the database;
- `enqueue_after_commit(enqueue)`: queue now (database) or on commit (broker);
- `enqueue_on_commit(enqueue)`: queue on commit; a broker away is logged, not raised
  (`broker_errors()`: what it raises then);
- `waiting(task_path, queue, due)`: whether a task of that function waits on the
  queue, due by `due` (the reaper's schedule asks it);
- `lost(task_ids)`: which of these task ids no worker will run;
- `held()`: which tasks (function, arguments) a broker holds for its workers;
- `worker_command(python, queues)`: the command line of a worker for `queues`
  (`make run`'s worker);
- `unreachable()`: why the queue cannot be reached, if it cannot (`make run` asks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

# How many queued tasks `waiting` reads from the front of a Redis queue: the
# reaper's task sits near the front (it is queued when due) or in the schedule.
SCAN_LIMIT = 1000


def uses_database() -> bool:
    """Return whether the queue is the database (django-tasks-db)."""
    return settings.TASKS["default"]["BACKEND"] == "django_tasks_db.DatabaseBackend"


def broker_errors() -> tuple[type[Exception], ...]:
    """Return what the broker raises when it cannot be reached or answer (for an
    `except` clause; none for the database queue). Redis is imported only where it
    is the queue: it costs 0.1 s at every process's start."""
    if uses_database():
        return ()
    from redis.exceptions import RedisError

    return (RedisError,)


def enqueue_after_commit(enqueue: Callable[[], object]) -> None:
    """Call `enqueue` now when the queue is the database (its row commits with the
    caller's transaction), else as `enqueue_on_commit` does."""
    if uses_database():
        enqueue()
    else:
        enqueue_on_commit(enqueue)


def enqueue_on_commit(enqueue: Callable[[], object]) -> None:
    """Call `enqueue` once the caller's transaction commits (at once outside one).

    A broker that cannot be reached then is logged, not raised: what asked has
    committed, and the workers' maintenance queues it again (`training.tasks.
    requeue_lost`, `annotation.tasks.requeue_lost_rows`)."""

    def enqueue_or_log() -> None:
        try:
            enqueue()
        except broker_errors() as exc:
            logger.warning("could not queue a task (%s); the workers will", exc)

    transaction.on_commit(enqueue_or_log)


def waiting(task_path: str, queue: str, due: datetime) -> bool:
    """Return whether a task of the function `task_path` waits on `queue` (not yet
    started) to run by `due`: queued, or scheduled for `due` or earlier."""
    if uses_database():
        from django.db.models import Q
        from django_tasks_db.models import DBTaskResult

        return (
            DBTaskResult.objects.filter(
                task_path=task_path, queue_name=queue, status="READY"
            )
            .filter(Q(run_after__isnull=True) | Q(run_after__lte=due))
            .exists()
        )
    import django_rq
    from rq.job import Job
    from rq.registry import ScheduledJobRegistry

    rq_queue = django_rq.get_queue(queue)
    scheduled = ScheduledJobRegistry(queue=rq_queue)
    ids = rq_queue.get_job_ids(0, SCAN_LIMIT) + [
        job_id.decode() if isinstance(job_id, bytes) else job_id
        for job_id in rq_queue.connection.zrangebyscore(
            scheduled.key, 0, due.timestamp()
        )
    ]
    jobs = Job.fetch_many(ids, connection=rq_queue.connection) if ids else []
    return any(job is not None and job.func_name == task_path for job in jobs)


def lost(task_ids: Iterable[str]) -> set[str]:
    """Return those of `task_ids` that no worker will run: unknown to the queue (a
    crash between the commit and the broker, a broker that lost its data) or ended
    there (a task that failed before it could claim its job: the database was away).
    Ask only about tasks whose job is still queued. The database queue loses none:
    its worker waits out an outage with the task row in place."""
    task_ids = [task_id for task_id in task_ids if task_id]
    if uses_database() or not task_ids:
        return set()
    import django_rq
    from rq.job import Job, JobStatus

    ended = {
        JobStatus.FAILED,
        JobStatus.STOPPED,
        JobStatus.CANCELED,
        JobStatus.FINISHED,
    }
    connection = django_rq.get_connection("default")
    jobs = Job.fetch_many(task_ids, connection=connection)
    return {
        task_id
        for task_id, job in zip(task_ids, jobs, strict=True)
        if job is None or job.get_status(refresh=False) in ended
    }


def held() -> set[tuple[str, tuple]]:
    """Return (function path, arguments) of every task a broker holds for a worker,
    queued, scheduled or running, on every queue (each list read up to SCAN_LIMIT).
    Ask only where the queue is a broker."""
    import django_rq
    from rq.job import Job
    from rq.registry import ScheduledJobRegistry, StartedJobRegistry

    found = set()
    for name in settings.TASK_QUEUES:
        rq_queue = django_rq.get_queue(name)
        ids = rq_queue.get_job_ids(0, SCAN_LIMIT)
        for registry in (ScheduledJobRegistry, StartedJobRegistry):
            ids += registry(queue=rq_queue).get_job_ids(
                0, SCAN_LIMIT - 1, cleanup=False
            )
        for job in Job.fetch_many(ids, connection=rq_queue.connection) if ids else []:
            if job is not None:
                found.add((job.func_name, tuple(job.args)))
    return found


def worker_command(python: str, queues: list[str]) -> list[str]:
    """Return the command line of a worker that serves `queues` and runs the reaper."""
    if uses_database():
        return [
            python,
            "manage.py",
            "db_worker",
            "--queue-name",
            ",".join(queues),
            "--no-reload",
            "--interval",
            "0.2",
        ]
    return [python, "manage.py", "rqworker", *queues, "--with-scheduler"]


def unreachable() -> str:
    """Return why the queue cannot be reached, or '' when it can: the database queue
    is the database; a broker is asked (a ping)."""
    if uses_database():
        return ""
    import django_rq

    url = settings.RQ_QUEUES["default"].get("URL", "")
    try:
        django_rq.get_connection("default").ping()
    except broker_errors() as exc:
        return (
            f"TASK_BACKEND=rq, but no Redis answers at REDIS_URL={url!r} ({exc}): start "
            "Redis there, set REDIS_URL to where it runs, or unset TASK_BACKEND to use "
            "the database as the queue"
        )
    return ""
