"""Which process runs a job, and whether it still does.

A job (a training stage, an import) records the process that runs it as
'machine:pid:start time' (`current_worker`); `worker_state` later tells from that
whether the process still runs on this host, is gone (or its pid now belongs to a
process started at another time), or cannot be asked (another host or container).
Used by the training reaper (training/reaper.py) and by the jobs whose state is a
row's (`annotation.models.JobState`: imports, snapshot freezes, exports, comparisons,
a large project's page figures), which `queue_job` queues, `claim` or `run_job`
starts and `fail_lost` fails when their worker is lost: at once when its process
ran here and is gone, after a silent heartbeat (`start_heartbeat` writes it) when it
ran elsewhere; a job whose process runs here is never lost, however late its heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from config import task_queue

logger = logging.getLogger(__name__)

# A running JobState job writes a heartbeat this often; one of another host silent
# for LOST_AFTER_SECONDS has lost its worker (`fail_lost`).
HEARTBEAT_SECONDS = 2.0
LOST_AFTER_SECONDS = 30


def _start_time(pid: int) -> str:
    """Return when the process started (clock ticks since boot, from /proc), or ''
    where /proc is missing or the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return ""
    return "" if fields[0] == b"Z" else fields[19].decode()


def machine() -> str:
    """Return where a pid means one process: the host name and, where /proc has it,
    the pid namespace (containers that share a host name do not share pids)."""
    try:
        namespace = "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}" if namespace else socket.gethostname()


def current_worker() -> str:
    """Return this process's identity as a job records it: 'machine:pid:start time'."""
    pid = os.getpid()
    return f"{machine()}:{pid}:{_start_time(pid)}"


def worker_state(worker: str) -> str:
    """Return what became of the process a job recorded (`current_worker`): "gone",
    "running", or "unknown".

    Unknown when no process is recorded or it ran on another host or in another
    container (pid namespace): only the heartbeat can tell then. A pid that now
    belongs to a process started at another time (a restarted container's pid 1,
    say) is gone too.
    """
    parts = worker.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != machine() or not parts[1].isdigit():
        return "unknown"
    pid, started = int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass  # it exists, as another user's process
    if started and _start_time(pid) != started:
        return "gone"
    return "running"


def worker_is_gone(worker: str) -> bool:
    """Return whether the process a job recorded no longer runs (`worker_state`)."""
    return worker_state(worker) == "gone"


def start_heartbeat(
    running: QuerySet,
    every: float,
    name: str,
    fields: Callable[[], dict] | None = None,
) -> threading.Event:
    """Write `heartbeat_at` on the `running` rows every `every` seconds, from a
    thread of its own (its own connection: the job's transaction does not hold it
    back on PostgreSQL), until the returned event is set; with it, what `fields`
    returns (a job's progress while its own writes are inside a transaction that
    nobody else sees yet).

    `running`: the job's row while it runs, e.g. `filter(pk=..., status="running")`,
    so that a job failed meanwhile is not revived. On SQLite a job's landing
    transaction holds the lock the beat needs; the beat is logged as missed, and
    `worker_state` keeps the job of a process that still runs.
    """
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every):
                try:
                    extra = fields() if fields is not None else {}
                    running.update(heartbeat_at=timezone.now(), **extra)
                except OperationalError as exc:
                    logger.warning("%s: heartbeat missed: %s", name, exc)
        finally:
            connection.close()

    threading.Thread(target=beat, name=name, daemon=True).start()
    return stop


def claim(rows: QuerySet, pk: int) -> bool:
    """Move the queued row `pk` of `rows` (a `JobState` model's) to running in this
    process and return True; False when it is not queued (a job delivered twice, or
    one failed meanwhile, does nothing)."""
    return bool(
        rows.filter(pk=pk, status="queued").update(
            status="running", heartbeat_at=timezone.now(), worker=current_worker()
        )
    )


def fail_lost(
    rows: QuerySet, after: float, error: str, now: datetime | None = None, **fields
) -> list[int]:
    """Fail the running rows of `rows` whose worker is lost, with `error` (its
    `{why}` filled in) and `fields`; return their pks.

    A worker is lost when its process ran on this host and is gone (killed: failed at
    once, `why` "its process N is gone"), or when it cannot be asked (another host or
    container) and its heartbeat has been silent for `after` seconds (`why` "no
    heartbeat for N s"). A process of this host that still runs is never lost; a row
    whose heartbeat arrives meanwhile, or that another worker claimed meanwhile, is
    left running.
    """
    now = now or timezone.now()
    running = rows.filter(status="running")
    cutoff = now - timedelta(seconds=after)
    failed = []
    for pk, worker, beat in running.values_list("pk", "worker", "heartbeat_at"):
        state = worker_state(worker)
        if state == "gone":
            why = f"its process {worker.rsplit(':', 2)[1]} is gone"
            lost = running.filter(pk=pk, worker=worker)
        elif state == "unknown" and beat is not None and beat < cutoff:
            why = f"no heartbeat for {after:g} s"
            lost = running.filter(pk=pk, heartbeat_at__lt=cutoff)
        else:
            continue
        if lost.update(
            status="failed", error=error.format(why=why), finished_at=now, **fields
        ):
            failed.append(pk)
    return failed


# A JobState row queued anew: what a run before it left behind is cleared.
FRESH_JOB = {
    "status": "queued",
    "progress": 0.0,
    "error": "",
    "heartbeat_at": None,
    "worker": "",
    "finished_at": None,
}


def queue_job(
    model: type[Model],
    lookup: dict,
    enqueue: Callable[[int], object],
    again: Callable[[Model], bool],
    **fields,
) -> Model:
    """Return the `model` job row `lookup` names (a JobState model with a unique
    constraint over `lookup`'s fields), creating it queued with `fields` or queuing
    it anew when `again(row)` says so, and then calling `enqueue(pk)` once the
    transaction commits. Two requests racing for the same row get the same one."""
    fresh = {**FRESH_JOB, **fields}
    try:
        with transaction.atomic():
            job, created = model.objects.select_for_update().get_or_create(
                **lookup, defaults=fresh
            )
            if not created and again(job):
                for name, value in fresh.items():
                    setattr(job, name, value)
                job.save()
                created = True
            if created:
                task_queue.enqueue_on_commit(lambda: enqueue(job.pk))
    except IntegrityError:  # created by another request meanwhile
        job = model.objects.get(**lookup)
    return job


def run_job(
    rows: QuerySet,
    pk: int,
    every: float,
    work: Callable[[QuerySet], dict],
    failure: str,
) -> bool:
    """Run the queued job row `pk` of `rows` in this process and return True; False
    when it is not queued (`claim`). `work(running)` does the job (it may update
    `running`, the row while it runs, with its progress) and returns the fields the
    row is done with; a heartbeat thread runs meanwhile. An exception fails the row
    with "`failure`: the exception" and is raised again (the task's row keeps the
    traceback)."""
    if not claim(rows, pk):
        return False
    running = rows.filter(pk=pk, status="running")
    beating = start_heartbeat(running, every, f"{rows.model._meta.model_name}-{pk}")
    try:
        done = work(running)
        running.update(status="done", progress=1.0, finished_at=timezone.now(), **done)
    except Exception as exc:
        running.update(
            status="failed",
            error=f"{failure}: {exc!r}"[:2000],
            finished_at=timezone.now(),
        )
        raise
    finally:
        beating.set()
    return True
