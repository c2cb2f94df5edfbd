"""Faults under annotation load: nothing a client saw accepted is lost, measured.

Run it by hand, as root (it mounts a tmpfs and restarts the local PostgreSQL):

    .venv/bin/python bench/chaos.py

It drives the annotation load of bench/annotation_load.py (a fresh database
`chaos_bench`, a project of ranking tasks, gunicorn with platform/gunicorn.conf.py,
8 API annotators, half `api`, half `api-next`) and a `manage.py db_worker`, and
injects one fault at a time while the annotators submit:

- `web`: `kill -9` of a gunicorn worker caught inside a submission's transaction
  (a SHARE lock the bench holds for a moment on the ranking table stops every
  submission at its INSERT, after it closed its lease); the master respawns it;
- `postgres`: `pg_ctlcluster 15 main restart` (every connection is cut);
- `worker-train`: `kill -9` of the db_worker while it runs a real SFT stage of a
  tiny randomly initialised model (after its first checkpoint); the bench restarts
  the worker as a process supervisor would and resumes the round;
- `import`: `kill -9` of the db_worker while it imports an uploaded file (inside the
  transaction inserting the file's rows); the bench restarts the worker, and the
  import is marked failed at the next look at it (its worker's process is gone);
- `disk`: a full disk during an export (a tmpfs of 16 MB or more mounted as
  EXPORT_DIR, filled but for 16 KB), then the same export once the filler is gone;
  the load's project has grown past REQUEST_MAX_PAIRS pairs by then on a fast
  machine, and the export is then the worker's (the page's 302 is followed);
- `worker-export`: `kill -9` of the db_worker while it writes the export of a
  snapshot of 180,000 pairs (`--export-tasks` 10,000 tasks of a project of its own),
  queued by the download page; the bench restarts the worker; the build must be
  marked failed with its hidden temporary folder removed, and the same download
  then builds it anew, every row.

A client retries a request that failed on the connection or with a 5xx, the same
body on the same lease, within 60 s. After each fault it checks: every submission a
client saw accepted (201 with the stored ranking) is stored exactly once, no task
over its overlap, no annotator ranking a task twice, the task counts equal the rows;
no temporary or partial file left in EXPORT_DIR or the round's run directory; an
import lands whole or not at all; the killed training job is marked failed (seconds
from the kill) and its round resumes from the checkpoint to success. The table:
accepted and stored are the submissions of the fault's window (stored counts the
leases of the window with a stored ranking, so a ranking whose answer the client
never saw counts there and not in accepted); lost is accepted and not stored;
duplicated is a lease or a (task, annotator) with more than one ranking; recovered is
seconds from the fault until every annotator had a submission accepted again (web,
postgres, import), the killed job was marked failed (worker-train), or the export
succeeded again (disk).

Measured 2026-12-01 05:45-05:55 UTC on the 2-core development machine, heavily
loaded (load average 15-21 from other engineers' test suites and this branch's;
CPU probe 0.20 s before and after, against 0.12 s quiet), 6,000 tasks, gunicorn 4
workers x 2 threads, DB_CONN_MAX_AGE 600 with health checks:

    fault          accepted  stored  lost  dup recovered s  load avg
    web                 165     165     0    0        12.0  16.4/17.7
    postgres            157     157     0    0         4.3  17.7/17.9
    worker-train        850     850     0    0        21.4  17.9/15.2
    import              563     563     0    0         1.1  15.2/18.1
    disk                598     598     0    0         7.2  18.1/21.1

web: 3 workers killed inside a transaction, the master respawned each, 2 client
requests were cut and sent again; postgres: the restart took 6.0 s, and the idle
db_worker exited on the refused connection (django_tasks_db's loop re-raises it)
and was restarted, as compose's `restart: unless-stopped` does; worker-train:
killed at checkpoint-5 of 40 steps, the stage process died with it
(PR_SET_PDEATHSIG), the restarted worker failed the job 21.4 s after the kill (its
Django start-up on the loaded machine is most of that), and the resumed round went
on from checkpoint-5 to 40/40 and succeeded; import (that row measured when imports
still ran in the web process, whose gunicorn worker was killed): the killed import
left no prompt, task, ranking, report or file, and the same file imported again
landed whole (4,000 tasks). Since imports run in the db_worker, `--faults import`
kills the worker mid-import (09:40 UTC, load 8.9-11.4, CPU probe 0.15 s before and
after, 6,000 tasks): 982 accepted, 982 stored, 0 lost, 0 duplicated, recovered in
28.4 s; the upload answered 302, the killed import was marked failed with nothing
landed, and the same file uploaded again landed whole (4,000/4,000 tasks); disk: the export on the full disk answered 500 and left no
file, the same export with room answered all 14,155 pairs. An earlier run the same
day (05:32, load 12.5-18) gave the same zeros and 10.2, 6.6, 22.3, 1.5 and 6.2 s.
In those runs the web fault chose its victim by polling for a writing transaction,
and most kills landed just after the commit; with the lock (06:16, load 5.3, 800
tasks): 479 accepted, 479 stored, 0 lost, 0 duplicated, recovered in 2.4 s, and 14
client requests cut by the kills and sent again, each answered once.

Run 2026-12-07 16:34-16:38 UTC (an AMD EPYC of the Zen 4 family, 2 cores, the bench
alone: load 2.9-7.4 from its own processes; CPU probe 0.19 s before, 0.24 s after),
with the sixth fault:

    fault          accepted  stored  lost  dup recovered s  load avg
    web                 987     987     0    0         1.5  2.9/3.5
    postgres           1398    1398     0    0         0.7  3.5/3.8
    worker-train       1907    1907     0    0         4.2  3.8/3.4
    import             1493    1493     0    0         0.2  3.4/4.3
    disk               1875    1875     0    0         3.1  4.3/5.3
    worker-export      4781    4781     0    0         9.9  5.3/7.4

The load's project had 39,117 pairs by the disk fault, past REQUEST_MAX_PAIRS, so the
worker built that export: it failed with `No space left on device` and left no file,
then with room wrote every pair. The killed export was marked failed 0.2 s after the
kill (its temporary folder removed) and built anew when asked again; before a job
whose process ran on this host and is gone was failed at once, the same fault
waited for its heartbeat to be 30 s silent (28.7 s, then 39.5 s to the download).

Before the fixes this bench led to (same machine, loaded as above, the same day):
the killed training job was marked failed 86.1 s after the kill (the reaper waited
60 s of heartbeat silence and then for its 30 s schedule), then 41.7 s once the job
recorded its worker process (the restarted worker waited for the launch's reaper
to come due); and every killed import left its staged upload in
EXPORT_DIR/uploads.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import annotation_load as load

ROOT = load.ROOT
FAULTS = ("web", "postgres", "worker-train", "import", "disk", "worker-export")
RETRY_SECONDS = 60.0  # how long a client retries one request
MAX_ATTEMPTS = 40
TARGET_RECOVERY = 60.0
PG_RESTART = ["pg_ctlcluster", "15", "main", "restart"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/chaos_bench"
    )
    parser.add_argument("--tasks", type=int, default=6000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="load before and after each fault"
    )
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--import-records", type=int, default=4000)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument(
        "--export-tasks",
        type=int,
        default=10_000,
        help="tasks (4 responses, 3 rankings: 18 pairs each) of the worker-export "
        "fault's own project",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    parts = urllib.parse.urlparse(args.database_url)
    if not parts.path.lstrip("/").startswith("chaos") or parts.hostname not in (
        "127.0.0.1",
        "localhost",
    ):
        parser.error(
            f"--database-url must name a local database whose name starts with 'chaos' "
            f"(it is dropped and recreated), got {args.database_url!r}"
        )
    unknown = set(args.faults.split(",")) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; expected some of {FAULTS}")
    return args


# ----------------------------------------------------------------- clients


class ChaosSession(load.Session):
    """An API annotator that retries a failed request and records every answer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop = threading.Event()
        self.retries = 0
        self.reset()

    def reset(self) -> None:
        """Start a fault's window: forget the submissions of the last one."""
        self.attempted: set[int] = set()
        self.accepted_leases: dict[int, int] = {}  # lease id -> ranking id
        self.accepted_times: list[float] = []
        self.errors = []

    def running(self, stop_at: float) -> bool:
        return not self.stop.is_set()

    def request(self, method, path, body=None, headers=None):
        """Send the request; retry on a broken connection or a 5xx, bounded in time."""
        deadline = time.monotonic() + RETRY_SECONDS
        last = (599, b"", {})
        for attempt in range(MAX_ATTEMPTS):
            try:
                status, payload, answer_headers = super().request(
                    method, path, body, headers
                )
                if status < 500:
                    return status, payload, answer_headers
                last = (status, payload, answer_headers)
            except (OSError, http.client.HTTPException) as exc:
                last = (599, repr(exc).encode(), {})
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
            self.retries += 1
            if time.monotonic() >= deadline:
                break
            time.sleep(min(2.0, 0.05 * 2**attempt))
        return last

    def submitted(self, lease_id, order, status, payload) -> None:
        self.attempted.add(lease_id)
        if status == 201:
            body = json.loads(payload)
            ranking = body.get("ranking", body)
            self.accepted_leases[lease_id] = ranking["id"]
            self.accepted_times.append(time.monotonic())


class Load:
    """The annotators' threads, started and stopped around each fault."""

    def __init__(self, sessions: list[ChaosSession], project: str) -> None:
        self.sessions = sessions
        self.project = project
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for s in self.sessions:
            s.reset()
            s.stop.clear()
        self.threads = [
            threading.Thread(target=s.run, args=(self.project, 0.0), daemon=True)
            for s in self.sessions
        ]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        for s in self.sessions:
            s.stop.set()
        for t in self.threads:
            t.join(timeout=RETRY_SECONDS + 30)

    def all_accepting_since(self, since: float, timeout: float) -> float | None:
        """Wait until every session had a submission accepted after `since`; return
        the seconds from `since`, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            firsts = [
                min((t for t in s.accepted_times if t > since), default=None)
                for s in self.sessions
            ]
            if all(f is not None for f in firsts):
                return max(firsts) - since
            time.sleep(0.2)
        return None


@dataclass
class Row:
    """One fault's line of the table."""

    fault: str
    accepted: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    recovered: float | None = None
    load: tuple[float, float] = (0.0, 0.0)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.duplicated
            and not self.problems
            and self.recovered is not None
            and self.recovered <= TARGET_RECOVERY
        )


def account(row: Row, project, sessions: list[ChaosSession]) -> None:
    """Fill the row's counts from the sessions' records and the database."""
    from django.db import connection
    from django.db.models import Count

    from annotation.models import Ranking

    connection.close()  # a fault may have cut the bench's own connection
    attempted = set().union(*(s.attempted for s in sessions))
    accepted = {k: v for s in sessions for k, v in s.accepted_leases.items()}
    rows: dict[int, list[int]] = defaultdict(list)
    for lease_id, ranking_id in Ranking.objects.filter(
        lease_id__in=attempted
    ).values_list("lease_id", "id"):
        rows[lease_id].append(ranking_id)
    row.accepted = len(accepted)
    row.stored = len(rows)
    row.lost = sum(1 for lease, rid in accepted.items() if rid not in rows[lease])
    row.duplicated = sum(len(ids) - 1 for ids in rows.values() if len(ids) > 1)
    row.duplicated += (
        Ranking.objects.filter(task__project=project)
        .values("task", "annotator")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    row.problems += load.structure_problems(project)
    errors = [e for s in sessions for e in s.errors]
    if errors:
        row.notes.append(
            f"{len(errors)} submissions refused ({sorted(set(errors))[:3]})"
        )


# ----------------------------------------------------------------- processes


def children(pid: int) -> list[int]:
    """Return the pids of the live processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != b"Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Return whether the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def pid_of_client_port(port: int, pids: list[int]) -> int | None:
    """Return which of `pids` holds the TCP connection to PostgreSQL from `port`."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                local, remote = parts[1], parts[2]
                if int(local.rsplit(":", 1)[1], 16) == port and remote.endswith(
                    ":1538"  # 5432
                ):
                    inode = parts[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


def writing_backend_pid(
    database: str, pids: list[int], query_like: str, timeout: float
) -> int | None:
    """Wait until one of `pids` is inside a transaction that has written and whose
    statement matches `query_like`; return that process's pid (None after timeout)."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT client_port FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL "
                "AND query ILIKE %s AND client_port IS NOT NULL",
                [database, query_like],
            )
            ports = [r[0] for r in cursor.fetchall()]
        for port in ports:
            pid = pid_of_client_port(port, pids)
            if pid is not None:
                return pid
        time.sleep(0.005)
    return None


class Worker:
    """The `manage.py db_worker` process, restarted as a process supervisor would."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "db_worker",
                    "--queue-name",
                    "default",
                    "--no-reload",
                    "--interval",
                    "0.2",
                    "--no-startup-delay",
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def ensure(self) -> str:
        """Restart the worker if it exited; return a note saying so, or ''."""
        if self.proc is not None and self.proc.poll() is None:
            return ""
        code = self.proc.returncode if self.proc else None
        self.restarts += 1
        self.start()
        return f"db_worker had exited (status {code}); restarted"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Bench:
    """What every fault needs: the settings, the processes, the load."""

    args: argparse.Namespace
    base: Path
    project: object
    researcher: load.Session
    server: subprocess.Popen
    worker: Worker
    load: Load
    sessions: list[ChaosSession]

    @property
    def database(self) -> str:
        return urllib.parse.urlparse(self.args.database_url).path.lstrip("/")

    def web_workers(self) -> list[int]:
        return children(self.server.pid)

    def wait_workers(self, since: float, timeout: float = 60.0) -> float | None:
        """Wait until gunicorn runs its full count of workers; return seconds since `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.web_workers()) >= self.args.workers:
                return time.monotonic() - since
            time.sleep(0.1)
        return None


# ----------------------------------------------------------------- files


def leftovers(folder: Path, allowed: set[Path] = frozenset()) -> list[str]:
    """Return the files and folders under `folder` that look temporary or partial:
    any part of the path hidden or temporary (an export is written inside a hidden
    temporary folder under the file's final name), a staged upload, a checkpoint
    being written."""
    found = []
    if not folder.exists():
        return found
    for path in folder.rglob("*"):
        if path in allowed:
            continue
        rel = str(path.relative_to(folder))
        parts = Path(rel).parts
        if (
            any(p.startswith(".") or p.startswith("tmp") or ".tmp" in p for p in parts)
            or (parts[0] == "uploads" and not path.is_dir())
            or any(p.startswith("tmp-checkpoint") for p in parts)
        ):
            found.append(rel)
    return found


# ----------------------------------------------------------------- faults


def fault_web(bench: Bench, row: Row) -> None:
    """kill -9 three gunicorn workers, each inside a submission's transaction.

    A SHARE lock on the ranking table, held by the bench for a moment, stops every
    submission at its INSERT, after it closed its lease and before it commits; the
    worker of one of them is killed there, then the lock goes.
    """
    import psycopg2

    parts = urllib.parse.urlparse(bench.args.database_url)
    times = []
    for _ in range(3):
        locker = psycopg2.connect(
            host=parts.hostname,
            port=parts.port or 5432,
            user=parts.username or "postgres",
            dbname=bench.database,
        )
        try:
            with locker.cursor() as cursor:
                cursor.execute("LOCK TABLE annotation_ranking IN SHARE MODE")
            pid = writing_backend_pid(
                bench.database, bench.web_workers(), "%annotation_ranking%", timeout=20
            )
            if pid is None:
                row.notes.append("no worker caught mid-submission in 20 s")
            else:
                os.kill(pid, signal.SIGKILL)
                times.append(time.monotonic())
        finally:
            locker.rollback()
            locker.close()
        time.sleep(1.0)
    if not times:
        return
    respawn = bench.wait_workers(times[-1])
    accepting = bench.load.all_accepting_since(times[-1], timeout=RETRY_SECONDS)
    row.recovered = (
        None if respawn is None or accepting is None else max(respawn, accepting)
    )
    retries = sum(s.retries + s.reconnects for s in bench.sessions)
    row.notes.append(
        f"{len(times)} workers killed mid-transaction; {retries} client retries"
    )


def fault_postgres(bench: Bench, row: Row) -> None:
    """Restart the PostgreSQL cluster under load."""
    start = time.monotonic()
    done = subprocess.run(PG_RESTART, capture_output=True, text=True, timeout=120)
    if done.returncode:
        row.problems.append(f"{' '.join(PG_RESTART)} failed: {done.stderr.strip()}")
        return
    row.notes.append(f"restart took {time.monotonic() - start:.1f} s")
    row.recovered = bench.load.all_accepting_since(start, timeout=RETRY_SECONDS + 30)
    time.sleep(1.0)
    note = bench.worker.ensure()
    if note:
        row.notes.append(note + ", as its supervisor (compose: restart) would")


def fault_import(bench: Bench, row: Row) -> None:
    """kill -9 the db_worker while it inserts an uploaded file's rows; the import
    must fail whole, be marked failed, and the same file must import again."""
    from annotation.importing import LOST_AFTER_SECONDS
    from annotation.models import ImportReport, Prompt, RankingTask

    tag = f"chaos-import-{random.randrange(10**9)}"
    path = bench.base / f"{tag}.jsonl"
    write_import_file(path, tag, bench.args.import_records)
    answer = post_import(bench, path)  # 302 to the import's page: queued
    row.notes.append(f"upload answered {answer.get('status', 'no answer')}")
    pid = writing_backend_pid(
        bench.database, [bench.worker.proc.pid], 'INSERT INTO "annotation_%', 120
    )
    if pid is None:
        row.problems.append("the worker was never seen inserting the file's rows")
        return
    killed = time.monotonic()
    bench.worker.kill()
    bench.worker.start()  # a supervisor restarts it at once
    report = ImportReport.objects.get(source=f"{tag}.jsonl")
    page = f"/data/imports/{report.pk}/"
    # Looking at the import fails it once its worker is silent for LOST_AFTER_SECONDS.
    while time.monotonic() < killed + LOST_AFTER_SECONDS + 60:
        bench.researcher.request("GET", page)
        report.refresh_from_db()
        if report.status != ImportReport.Status.RUNNING:
            row.recovered = time.monotonic() - killed
            break
        time.sleep(0.5)
    if report.status != ImportReport.Status.FAILED:
        row.problems.append(f"the killed import is {report.status}, not failed")
    landed = (
        Prompt.objects.filter(source__startswith=f"{tag}.jsonl:").count(),
        RankingTask.objects.filter(source__startswith=f"{tag}.jsonl:").count(),
    )
    if any(landed):
        row.problems.append(
            f"half import: {landed[0]} prompts, {landed[1]} tasks of the killed import"
        )
    left = leftovers(Path(os.environ["EXPORT_DIR"]))
    if left:
        row.problems.append(f"files left in EXPORT_DIR: {left[:3]}")
    post_import(bench, path)
    again = ImportReport.objects.filter(source=f"{tag}.jsonl").latest("pk")
    deadline = time.monotonic() + 600
    while again.status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(1.0)
        again.refresh_from_db()
    whole = RankingTask.objects.filter(source__startswith=f"{tag}.jsonl:").count()
    row.notes.append(
        f"re-import {again.status}: {whole}/{bench.args.import_records} tasks"
    )
    if whole != bench.args.import_records:
        row.problems.append(f"the re-import landed {whole} tasks")


def write_import_file(path: Path, tag: str, records: int) -> None:
    """Write a TRL preference file of `records` distinct conversational pairs."""
    with open(path, "w") as out:
        for i in range(records):
            prompt = [{"role": "user", "content": f"{tag}: question {i}?"}]
            out.write(
                json.dumps(
                    {
                        "prompt": prompt,
                        "chosen": [
                            {"role": "assistant", "content": f"Good answer {i}."}
                        ],
                        "rejected": [
                            {"role": "assistant", "content": f"Bad answer {i}."}
                        ],
                    }
                )
                + "\n"
            )


def post_import(bench: Bench, path: Path) -> dict:
    """Upload the file on the import page as the researcher; return {'status': ...}."""
    boundary = f"chaos{random.randrange(10**12)}"
    token = bench.researcher.cookies.get("csrftoken", "")
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"'
        f"\r\n\r\n{token}\r\n".encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + path.read_bytes()
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    url = f"/data/projects/{bench.project.name}/imports/"
    conn = http.client.HTTPConnection("127.0.0.1", bench.args.port, timeout=300)
    try:
        conn.request(
            "POST",
            url,
            body=b"".join(parts),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Cookie": "; ".join(
                    f"{k}={v}" for k, v in bench.researcher.cookies.items()
                ),
                "X-CSRFToken": token,
                "Referer": f"http://127.0.0.1:{bench.args.port}{url}",
            },
        )
        response = conn.getresponse()
        response.read()
        return {"status": response.status}
    except (OSError, http.client.HTTPException) as exc:
        return {"status": type(exc).__name__}
    finally:
        conn.close()


def fault_disk(bench: Bench, row: Row) -> None:
    """Fill EXPORT_DIR (a tmpfs of 16 MB or more: room for the export once the filler
    goes) but for 16 KB and export a snapshot; then export it again with room. A
    snapshot over REQUEST_MAX_PAIRS is exported by the worker (`download`)."""
    from annotation.snapshots import freeze_snapshot

    snapshot = freeze_snapshot(
        bench.project, f"chaos-{random.randrange(10**9)}", user=None
    )
    export_dir = Path(os.environ["EXPORT_DIR"])
    # Room for the export (some 250 bytes a pair here) once the filler goes.
    size_mb = max(16, snapshot.row_count * 600 // 2**20 + 1)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(export_dir)],
        check=True,
    )
    try:
        filler = export_dir / "filler"
        with open(filler, "wb") as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        os.truncate(filler, max(0, filler.stat().st_size - 16384))
        url = f"/data/snapshots/{snapshot.pk}/download/?fmt=trl&file_format=jsonl"
        start = time.monotonic()
        status, body, how = download(bench, snapshot, url)
        row.notes.append(
            f"export on a full disk: {how}, snapshot of {snapshot.row_count} pairs"
        )
        if status == 200:
            row.problems.append("the export on a full disk answered 200")
        left = leftovers(export_dir, {filler}) + [
            str(p.relative_to(export_dir))
            for p in export_dir.rglob("*")
            if p.is_file() and p != filler
        ]
        if left:
            row.problems.append(f"files left on the full disk: {sorted(set(left))[:3]}")
        filler.unlink()
        status, body, how = download(bench, snapshot, url)
        lines = body.count(b"\n")
        if status == 200 and lines == snapshot.row_count:
            row.recovered = time.monotonic() - start
            row.notes.append(f"with room: {how}, {lines} rows")
        else:
            row.problems.append(
                f"the export with room answered {status} with {lines} of "
                f"{snapshot.row_count} rows"
            )
    finally:
        subprocess.run(["umount", "-l", str(export_dir)], check=False)


def fault_worker_export(bench: Bench, row: Row) -> None:
    """kill -9 the db_worker while it writes a large export (a snapshot over
    REQUEST_MAX_PAIRS, which the web tier queues); the build must be marked failed
    with its temporary folder removed, and the same download must build anew."""
    from django.conf import settings

    from annotation.export import LOST_AFTER_SECONDS
    from annotation.models import SnapshotExport
    from annotation.snapshots import freeze_snapshot

    project = export_project(bench, bench.args.export_tasks)
    snapshot = freeze_snapshot(project, f"chaos-{random.randrange(10**9)}", user=None)
    if snapshot.row_count <= settings.REQUEST_MAX_PAIRS:
        row.problems.append(
            f"the snapshot has {snapshot.row_count} pairs, not over REQUEST_MAX_PAIRS "
            f"({settings.REQUEST_MAX_PAIRS}): give --export-tasks more"
        )
        return
    url = f"/data/snapshots/{snapshot.pk}/download/?fmt=trl&file_format=jsonl"
    status, _, headers = bench.researcher.request("GET", url)
    row.notes.append(f"download of {snapshot.row_count} pairs answered {status}")
    jobs = SnapshotExport.objects.filter(snapshot=snapshot)
    deadline = time.monotonic() + 300
    job = None
    while time.monotonic() < deadline:
        job = jobs.first()
        if job is not None and job.status == "running" and job.progress > 0:
            break
        if job is not None and job.status in ("done", "failed"):
            row.problems.append(f"the build ended {job.status} before the kill")
            return
        time.sleep(0.02)
    else:
        row.problems.append("the worker was never seen writing the export")
        return
    killed = time.monotonic()
    bench.worker.kill()
    bench.worker.start()  # a supervisor restarts it at once
    row.notes.append(f"killed at {job.progress:.0%} of the build")
    export_dir = Path(os.environ["EXPORT_DIR"])
    partial = leftovers(export_dir)
    page = f"/data/exports/{job.pk}/"
    # Looking at the export fails it once its worker is silent for LOST_AFTER_SECONDS.
    while time.monotonic() < killed + LOST_AFTER_SECONDS + 60:
        bench.researcher.request("GET", page)
        job.refresh_from_db()
        if job.status != "running":
            break
        time.sleep(0.5)
    failed_after = time.monotonic() - killed
    if job.status != "failed":
        row.problems.append(f"the killed build is {job.status}, not failed")
        return
    row.notes.append(
        f"marked failed {failed_after:.1f} s after the kill; "
        f"{len(partial)} partial file(s) then, {len(leftovers(export_dir))} now"
    )
    left = leftovers(export_dir)
    if left:
        row.problems.append(f"files left in EXPORT_DIR: {left[:3]}")
    status, body, how = download(bench, snapshot, url)  # queues it anew
    job = jobs.first()
    lines = body.count(b"\n")
    if status == 200 and lines == snapshot.row_count:
        row.recovered = time.monotonic() - killed
        row.notes.append(f"asked again: {how}, {lines} rows")
    else:
        row.problems.append(
            f"the download asked again answered {status} with {lines} of "
            f"{snapshot.row_count} rows (build {job.status}: {job.error[:200]})"
        )


def download(bench: Bench, snapshot, url: str) -> tuple[int, bytes, str]:
    """GET a snapshot's export as the page does: one the web tier queues for the
    worker (a snapshot over REQUEST_MAX_PAIRS: 302 to the export's page) is followed
    until the worker ends its build, then asked for again. Return the last answer's
    status and body, and what happened."""
    from annotation.models import SnapshotExport

    status, body, _ = bench.researcher.request("GET", url)
    if status != 302:
        return status, body, f"HTTP {status} in the request"
    job = SnapshotExport.objects.get(snapshot=snapshot, fmt="trl", file_format="jsonl")
    deadline = time.monotonic() + 600
    while job.status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job.refresh_from_db()
    if job.status != "done":
        return 0, b"", f"queued, the worker's build {job.status}: {job.error[:160]}"
    status, body, _ = bench.researcher.request("GET", url)
    return status, body, f"queued, built by the worker, then HTTP {status}"


def export_project(bench: Bench, tasks: int):
    """Create the project `chaos-export`: `tasks` tasks of four responses, each ranked
    by three annotators (the load's project has too few rankings to export slowly)."""
    from django.contrib.auth.models import User
    from django.db import transaction

    from annotation.models import Project
    from bench.freeze import ranked_tasks
    from inference.models import Policy

    body = "A careful answer, with its reasons and an example. " * 3

    def order_of(n: int, a: int, ids: list[int]) -> list[list[int]]:
        return [[i] for i in (ids if a != 1 else ids[::-1])]  # one disagrees

    with transaction.atomic():
        project = Project.objects.create(name="chaos-export", responses_per_task=4)
        if hasattr(project, "members"):
            project.members.add(User.objects.get(username="chaos-researcher"))
        people = [User.objects.create(username=f"chaos-export-{i}") for i in range(3)]
        ranked_tasks(
            project,
            tasks,
            [Policy.objects.get(name="bench-policy")],
            people,
            order_of,
            text=lambda k: f"{k}. {body}",
        )
    return project


def fault_worker_train(bench: Bench, row: Row) -> None:
    """kill -9 the db_worker during an SFT stage; restart it; time the job's failure."""
    from training.models import Status, TrainingJob

    training_round = launch(bench)
    job = TrainingJob.objects.get(round=training_round, index=0)
    run_dir = Path(job.run_dir)
    deadline = time.monotonic() + 600
    checkpoint = None
    while time.monotonic() < deadline:
        job.refresh_from_db()
        checkpoints = sorted(
            (run_dir / "checkpoints").glob("checkpoint-*"),
            key=lambda p: int(p.name.split("-")[-1]),
        )
        if job.status == Status.RUNNING and job.pid and checkpoints:
            checkpoint = checkpoints[-1].name
            break
        if job.status in (Status.FAILED, Status.SUCCEEDED, Status.CANCELLED):
            row.problems.append(
                f"the stage ended {job.status} before the kill: {job.error[:200]}"
            )
            return
        time.sleep(0.5)
    if checkpoint is None:
        row.problems.append("the stage wrote no checkpoint in 600 s")
        return
    stage_pid = job.pid
    killed = time.monotonic()
    bench.worker.kill()
    row.notes.append(f"killed at step {job.step}/{job.total_steps} ({checkpoint})")
    bench.worker.start()  # a supervisor restarts it at once
    time.sleep(2.0)
    if alive(stage_pid):
        row.problems.append(f"the stage process {stage_pid} outlived its worker")
        os.killpg(stage_pid, signal.SIGKILL)
    while time.monotonic() < killed + 180:
        job.refresh_from_db()
        if job.status != Status.RUNNING:
            row.recovered = time.monotonic() - killed
            break
        time.sleep(0.25)
    if row.recovered is None:
        row.problems.append("the job was still running 180 s after its worker died")
        return
    row.notes.append(
        f"job {job.status}: {job.error.splitlines()[0][:80] if job.error else ''}"
    )
    bench.load.stop()
    resume(training_round)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        training_round.refresh_from_db()
        if training_round.status in (Status.FAILED, Status.SUCCEEDED, Status.CANCELLED):
            break
        time.sleep(1.0)
    job.refresh_from_db()
    if training_round.status != Status.SUCCEEDED:
        row.problems.append(
            f"the resumed round is {training_round.status}: {training_round.error[:200]}"
        )
    else:
        row.notes.append(
            f"resumed from {checkpoint} to {job.step}/{job.total_steps}: succeeded"
        )
    left = leftovers(run_dir)
    if left:
        row.problems.append(f"temporary files in the run directory: {left[:3]}")


def launch(bench: Bench):
    """Launch an SFT round of the tiny model on the project's rankings."""
    from training import rounds, tasks

    launcher = getattr(tasks, "launch", None) or rounds.launch_round
    steps = bench.args.train_steps
    return launcher(
        bench.project,
        "sft",
        user=None,
        options={
            "policy": "chaos-tiny",
            "evaluate": "false",
            "sft": {
                "max_steps": steps,
                "save_steps": 5,
                "per_device_train_batch_size": 4,
                "max_length": 64,
                "logging_steps": 1,
            },
        },
    )


def resume(training_round) -> None:
    """Resume the round (training.rounds.resume_round, or the worker-side entry point)."""
    from training import rounds, tasks

    resumer = getattr(tasks, "resume", None) or rounds.resume_round
    resumer(training_round, user=None)


# ----------------------------------------------------------------- set-up


def prepare_environment(base: Path) -> None:
    """Point every process at the bench's folders and persistent, checked connections."""
    for name in ("EXPORT_DIR", "RUN_DIR", "MODEL_DIR"):
        folder = base / name.split("_")[0].lower()
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
    os.environ["DB_CONN_MAX_AGE"] = "600"
    os.environ["DEBUG"] = "0"
    os.environ["INSECURE_HTTP"] = "1"
    # Health checks before reuse, as the settings' default will have them: a module
    # that adds them to config.settings where that does not yet.
    (base / "chaos_settings.py").write_text(
        "from config.settings import *  # noqa: F403\n"
        "DATABASES['default']['CONN_HEALTH_CHECKS'] = True  # noqa: F405\n"
    )
    os.environ["PYTHONPATH"] = os.pathsep.join([str(base), str(ROOT)])
    os.environ["DJANGO_SETTINGS_MODULE"] = "chaos_settings"
    sys.path.insert(0, str(base))


def build_tiny_policy(base: Path) -> None:
    """Save a randomly initialised micro Llama and register it as `chaos-tiny`."""
    try:
        from demo.policies import SIZES, init_model, train_tokenizer
    except ImportError:
        from training.demo_models import SIZES, init_model, train_tokenizer
    from inference.registry import register_policy

    path = Path(os.environ["MODEL_DIR"]) / "chaos-tiny"
    texts = [
        f"Answer {j} to task {n}. It has two lines. Benchmark prompt {n}: explain item {n}."
        for j in range(4)
        for n in range(200)
    ]
    tokenizer = train_tokenizer(texts, vocab_size=SIZES["micro"].vocab_size)
    model = init_model(tokenizer, SIZES["micro"], seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    register_policy("chaos-tiny", base_path=path)


def researcher_session(port: int, project) -> load.Session:
    """Create a researcher and sign them in on a browser session."""
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("chaos-researcher", password="chaos-researcher-pw")
    user.groups.add(Group.objects.get_or_create(name="researcher")[0])
    if hasattr(project, "members"):
        project.members.add(user)
    session = load.Session(port, "chaos-researcher", "", "plain", 0)
    session.login()
    session.request("GET", f"/data/projects/{project.name}/imports/")  # the CSRF cookie
    return session


def run_fault(bench: Bench, name: str) -> Row:
    """Run the load, inject the fault, keep the load on a while, and account."""
    row = Row(name)
    before = os.getloadavg()[0]
    bench.load.start()
    try:
        time.sleep(bench.args.seconds)
        {
            "web": fault_web,
            "postgres": fault_postgres,
            "worker-train": fault_worker_train,
            "import": fault_import,
            "disk": fault_disk,
            "worker-export": fault_worker_export,
        }[name](bench, row)
        time.sleep(bench.args.seconds)
    except Exception as exc:  # noqa: BLE001 - a bench fault is reported in its row
        row.problems.append(f"the bench itself failed: {exc!r}")
    finally:
        bench.load.stop()
    account(row, bench.project, bench.sessions)
    note = bench.worker.ensure()
    if note:
        row.notes.append(note)
    row.load = (before, os.getloadavg()[0])
    print(
        f"{name}: {'ok' if row.ok else 'FAILED'} {row.notes} {row.problems}", flush=True
    )
    return row


def print_table(rows: list[Row], probes: tuple[float, float]) -> None:
    print()
    print(
        f"{'fault':14} {'accepted':>8} {'stored':>7} {'lost':>5} {'dup':>4} "
        f"{'recovered s':>11}  load avg"
    )
    for r in rows:
        recovered = "-" if r.recovered is None else f"{r.recovered:.1f}"
        print(
            f"{r.fault:14} {r.accepted:8d} {r.stored:7d} {r.lost:5d} {r.duplicated:4d} "
            f"{recovered:>11}  {r.load[0]:.1f}/{r.load[1]:.1f}"
        )
    print(f"CPU probe before/after: {probes[0]:.2f}/{probes[1]:.2f} s")
    for r in rows:
        for text in r.notes:
            print(f"  {r.fault}: {text}")
        for text in r.problems:
            print(f"  {r.fault}: PROBLEM {text}")


def main() -> None:
    args = parse_args()
    base = Path(tempfile.mkdtemp(prefix="chaos-bench-"))
    prepare_environment(base)
    load.setup_django(args.database_url)
    load.create_database(args.database_url)
    probe_before = load.cpu_probe()
    print(f"CPU probe before: {probe_before:.2f} s; folders under {base}", flush=True)
    project, names = load.create_project(args.tasks, args.sessions)
    build_tiny_policy(base)
    from django.db import connection

    connection.close()
    server = load.start_gunicorn(args)
    worker = Worker(base / "db_worker.log")
    worker.start()
    rows = []
    try:
        sessions = [
            ChaosSession(
                args.port, name, token, "api" if i % 2 else "api-next", args.seed + i
            )
            for i, (name, token) in enumerate(names)
        ]
        bench = Bench(
            args,
            base,
            project,
            researcher_session(args.port, project),
            server,
            worker,
            Load(sessions, project.name),
            sessions,
        )
        for name in args.faults.split(","):
            rows.append(run_fault(bench, name))
    finally:
        worker.stop()
        server.terminate()
        server.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print_table(rows, (probe_before, load.cpu_probe()))
    sys.exit(0 if rows and all(r.ok for r in rows) else 1)


if __name__ == "__main__":
    main()
