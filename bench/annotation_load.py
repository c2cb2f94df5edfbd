"""Load benchmark of the annotator workspace: gunicorn + PostgreSQL, N concurrent annotators.

Run it by hand (PostgreSQL must be reachable):

    .venv/bin/python bench/annotation_load.py --tasks 10000 --seconds 20 --mode all

It creates a fresh database, migrates it, creates a project with 10,000 ranking
tasks of 4 responses (overlap 3), starts gunicorn with platform/gunicorn.conf.py
(--workers/--threads set WEB_CONCURRENCY/WEB_THREADS), and drives N annotator
sessions over kept-alive HTTP connections. Each session ranks its task (random
order, some ties) and asks for the next, in one of three modes:

- `htmx`, the page with JavaScript: the POST stores the ranking and leases the next
  task in one transaction and answers with the next task's workspace (one request
  per submission);
- `plain`, the page without JavaScript: the POST answers 303 and the session GETs
  the next task (two requests);
- `api`, a labelling script with a Bearer token: POST next-task, then POST the
  ranking (two requests);
- `api-next`, the same script using POST ranking-and-next-task, which stores the
  ranking and returns the next lease (one request per submission, like `htmx`).

`--mode all` runs the four in turn, each on a fresh project. Per mode it prints
submissions per second, p50/p95/p99 latency of the requests, the home page's rate
under the same sessions just before (the same-run baseline), the load average, and
the CPU seconds per submission of the gunicorn workers and of this database's
PostgreSQL backends (read from /proc: a cost that does not depend on what else the
machine runs). A CPU probe (5M Python additions, about 0.12 s on this machine when
quiet) shows how fast a CPU second was. Then it checks the invariants in the
database: no task ranked more than its overlap, no annotator ranking a task twice,
every stored count equal to the stored rankings, and every submission a session saw
accepted stored (nothing lost).

Measured 2026-11-28 13:00 UTC on the 2-core development machine, quiet (CPU probe
0.13 s), 8 sessions, 10,000 tasks, gunicorn's defaults of platform/gunicorn.conf.py
(4 gthread workers x 2 threads), 20 s per mode, invariants held in every run:

    mode      subm/s  p50 ms  p95 ms  p99 ms  CPU/subm web + PostgreSQL  home page/s
    htmx       195.6    39.7    53.3    62.1    6.0 + 3.4 ms               297.2
    plain      112.0    35.3    56.5    65.7   11.3 + 5.7 ms               298.1
    api        103.5    48.6    63.9    69.8   11.2 + 5.8 ms               282.8
    api-next   161.1    48.9    62.9    69.5    7.2 + 4.3 ms               283.2

The annotator's page (htmx) and a script's one-round-trip API both meet the target
(150 submissions/s, p99 under 100 ms); `plain` (the page without JavaScript: submit,
303, GET) and `api` (two requests per item) serve two requests per submission, at
about 220 requests/s with p99 under 70 ms.

The code before this work (commit fde8e58, the same machine, quiet, minutes
earlier; its defaults, 2 workers x 4 threads): htmx 80.6 submissions/s, p50 97 ms,
p99 140 ms, CPU 11.7 + 3.9 ms per submission; api 108.2/s (p99 65 ms). With 4 x 2
workers that code reached 130/s, p99 128 ms. What changed: the 12 ORM queries of a
submission became raw SQL (leasing, the profile and task locks, closing the lease,
inserting the ranking, the consensus update, the page's progress and task text),
which halved the web CPU: building ORM queries cost more than PostgreSQL spent
running them; the lease check and the response ids became one statement (17
statements per page submission, constant as data grows: tests/annotation/
test_hot_path.py counts them); the rank options are built once; and two workers per
core with two threads each replaced one worker per core with four threads (the
threads of one process queued on its GIL). What is left per submission is mostly
Django's request cycle (session, user and roles: 3 queries) and PostgreSQL planning
the leasing statements (about 0.8 ms each, unprepared).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from probe import cpu_probe  # bench/probe.py (this script's folder is on the path)

ROOT = Path(__file__).resolve().parent.parent
LEASE = re.compile(rb'name="lease" value="(\d+)"')
# Responses are named by handle (1..K), never by database id (issue 12, item 2).
HANDLE = re.compile(rb'class="response card" id="response-(\d+)"')
CSRF = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/h6_bench"
    )
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=2 * (os.cpu_count() or 1),
        help="gunicorn workers (WEB_CONCURRENCY; default as platform/gunicorn.conf.py)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads per worker (WEB_THREADS; >1: gthread)",
    )
    parser.add_argument(
        "--mode",
        choices=["htmx", "plain", "api", "api-next", "all"],
        default="htmx",
        help="what a session drives: the page with htmx, the page without JavaScript, "
        "the JSON API with a token (next-task then ranking, or ranking-and-next-task), "
        "or each of them in turn on a fresh project",
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault(
        "SECRET_KEY", "bench-only-secret-key-0123456789-abcdefghijklmnop"
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def create_database(database_url: str) -> None:
    """Create the benchmark database afresh and migrate it."""
    import psycopg2

    parts = urllib.parse.urlparse(database_url)
    name = parts.path.lstrip("/")
    admin = psycopg2.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        dbname="postgres",
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        # A fresh database each run: the figures never depend on an earlier run's rows.
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def create_project(n_tasks: int, sessions: int) -> tuple[object, list[tuple[str, str]]]:
    """Create a fresh project of n_tasks tasks and one annotator (and API token) per session."""
    from django.contrib.auth.models import Group, User
    from django.db import transaction

    from annotation.models import Project, Prompt, RankingTask, Response, messages_hash
    from annotation.tokens import create_token
    from inference.models import Policy

    with transaction.atomic():
        Project.objects.filter(name="bench").delete()
        project = Project.objects.create(
            name="bench",
            title="Load benchmark",
            responses_per_task=4,
            overlap=3,
            gold_rate=0,
            guidelines="Rank the **most helpful** response first.",
        )
        policy, _ = Policy.objects.get_or_create(
            name="bench-policy", defaults={"kind": "imported"}
        )
        prompts = []
        for i in range(n_tasks):
            messages = [
                {"role": "user", "content": f"Benchmark prompt {i}: explain item {i}."}
            ]
            prompts.append(
                Prompt(
                    project=project,
                    messages=messages,
                    content_hash=messages_hash(messages),
                )
            )
        Prompt.objects.bulk_create(prompts, batch_size=2000)
        tasks = RankingTask.objects.bulk_create(
            [RankingTask(project=project, prompt=p, overlap=3) for p in prompts],
            batch_size=2000,
        )
        Response.objects.bulk_create(
            [
                Response(
                    task=t,
                    policy=policy,
                    position=j,
                    text=f"Answer {j} to task {t.pk}.\nIt has two lines.",
                )
                for t in tasks
                for j in range(4)
            ],
            batch_size=4000,
        )
        group, _ = Group.objects.get_or_create(name="annotator")
        names = []
        for s in range(sessions):
            name = f"bench-annotator-{s}"
            User.objects.filter(username=name).delete()
            user = User.objects.create_user(name, password=name + "-pw")
            user.groups.add(group)
            names.append(
                (name, create_token(user, "load benchmark", ["read", "annotate"])[1])
            )
            if hasattr(project, "members"):  # membership, where the schema has it
                project.members.add(user)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # planner statistics for the bulk-created rows
    return project, names


def start_gunicorn(args: argparse.Namespace) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "DB_CONN_MAX_AGE": "600",
        "DEBUG": "0",
        "INSECURE_HTTP": "1",  # plain HTTP to 127.0.0.1, no TLS proxy
        "WEB_BIND": f"127.0.0.1:{args.port}",
        "WEB_CONCURRENCY": str(args.workers),
        "WEB_THREADS": str(args.threads),
        "WEB_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-c",
            "platform/gunicorn.conf.py",
            "config.wsgi",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
            conn.request("GET", "/login/")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit("gunicorn did not answer on /login/ within 60 s")


class Session:
    """One annotator's browser (cookies, CSRF token, workspace) or API client (token)."""

    def __init__(
        self, port: int, username: str, token: str, mode: str, seed: int
    ) -> None:
        self.port = port
        self.username = username
        self.token = token
        self.mode = mode
        self.rng = random.Random(seed)
        self.cookies: dict[str, str] = {}
        self.latencies: list[float] = []
        self.accepted = 0
        self.baseline_requests = 0
        self.errors: list[str] = []
        self.reconnects = 0  # requests sent again on a connection the server closed
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: dict | str | None = None,
        headers: dict | None = None,
    ):
        """Send one request on a kept-alive connection (reopened when the server closes it)."""
        all_headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        all_headers.update(headers or {})
        data = None
        if isinstance(body, dict):
            data = urllib.parse.urlencode(body, doseq=True)
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
            all_headers["X-CSRFToken"] = self.cookies.get("csrftoken", "")
            all_headers["Referer"] = f"http://127.0.0.1:{self.port}{path}"
        elif body is not None:
            data = body
            all_headers.setdefault("Content-Type", "application/json")
        start = time.perf_counter()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=30
                )
            try:
                self.conn.request(method, path, body=data, headers=all_headers)
                response = self.conn.getresponse()
                payload = response.read()
                break
            except (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
            ):
                # A kept-alive connection the server closed meanwhile: reopen once.
                self.conn.close()
                self.conn = None
                self.reconnects += 1
                if attempt == 2:
                    raise
        self.latencies.append(time.perf_counter() - start)
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        if response.will_close:
            self.conn.close()
            self.conn = None
        return response.status, payload, dict(response.getheaders())

    def login(self) -> None:
        status, page, _ = self.request("GET", "/login/")
        token = CSRF.search(page).group(1).decode()
        status, _, _ = self.request(
            "POST",
            "/login/",
            {
                "username": self.username,
                "password": self.username + "-pw",
                "csrfmiddlewaretoken": token,
            },
        )
        if status != 302:
            raise RuntimeError(f"login of {self.username} answered {status}")
        self.latencies.clear()

    def order(self, handles: list[int]) -> list[list[int]]:
        self.rng.shuffle(handles)
        groups: list[list[int]] = []
        for handle in handles:
            if groups and self.rng.random() < 0.15:
                groups[-1].append(handle)
            else:
                groups.append([handle])
        return groups

    def baseline(self, stop_at: float) -> None:
        """Loop the cheapest signed-in page (home), the machine's ceiling for Django."""
        while time.monotonic() < stop_at:
            self.request("GET", "/")
            self.baseline_requests += 1

    def run(self, project: str, stop_at: float) -> None:
        if self.mode in ("api", "api-next"):
            self.run_api(project, stop_at)
            return
        url = f"/projects/{project}/annotate/"
        # A GET never leases (issue 12, item 4): the first task is asked for by POST,
        # as the page does; each submission then leases the next one.
        if self.mode == "htmx":
            status, page, _ = self.request("POST", url, {}, {"HX-Request": "true"})
        else:
            self.request("POST", url, {})
            status, page, _ = self.request("GET", url)
        while time.monotonic() < stop_at:
            lease = LEASE.search(page)
            if lease is None:
                return  # no task left
            handles = [int(h) for h in HANDLE.findall(page)]
            body = {
                "lease": lease.group(1),
                "order": json.dumps(self.order(handles)),
                "active_seconds": "3",
            }
            if self.mode == "htmx":
                status, page, _ = self.request(
                    "POST", url + "submit/", body, {"HX-Request": "true"}
                )
                ok = status == 200 and b"Ranking saved." in page
            else:
                status, _, headers = self.request("POST", url + "submit/", body)
                ok = status == 303
                status, page, _ = self.request("GET", url)
            if ok:
                self.accepted += 1
            else:
                self.errors.append(f"submit answered {status}")

    def run_api(self, project: str, stop_at: float) -> None:
        """Loop next-task then submit over the JSON API, as a labelling script would
        (`api-next`: one request that submits and returns the next lease)."""
        auth = {"Authorization": f"Bearer {self.token}"}
        self.cookies = {}  # a script sends its token, not a browser's session
        lease = None
        while self.running(stop_at):
            if lease is None:
                status, payload, _ = self.request(
                    "POST", f"/api/projects/{project}/next-task", None, auth
                )
                if status == 204:
                    return  # no task left
                if status != 200:
                    self.errors.append(f"next-task answered {status}")
                    return
                lease = json.loads(payload)
            handles = [r["handle"] for r in lease["task"]["responses"]]
            order = self.order(handles)
            body = json.dumps({"order": order, "active_seconds": 3})
            if self.mode == "api-next":
                path = f"/api/leases/{lease['id']}/ranking-and-next-task"
            else:
                path = f"/api/leases/{lease['id']}/ranking"
            status, payload, _ = self.request("POST", path, body, auth)
            self.submitted(lease["id"], order, status, payload)
            if status != 201:
                self.errors.append(f"submit answered {status}")
                lease = None  # next-task returns the lease again if it is still held
                continue
            self.accepted += 1
            lease = json.loads(payload)["next"] if self.mode == "api-next" else None
            if self.mode == "api-next" and lease is None:
                return  # no task left

    def running(self, stop_at: float) -> bool:
        """Return whether the session goes on submitting (until `stop_at`, monotonic)."""
        return time.monotonic() < stop_at

    def submitted(
        self, lease_id: int, order: list[list[int]], status: int, payload: bytes
    ) -> None:
        """Called after every API submission with what the server answered (a hook)."""


def process_cpu(match) -> float:
    """Return the CPU seconds used so far by the processes whose (pid, ppid, cmdline) match."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended meanwhile
        # fields[1] is the ppid; fields[11], fields[12] are utime and stime.
        if match(int(entry), int(fields[1]), cmdline):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def server_cpu(server_pid: int, database: str) -> tuple[float, float]:
    """Return CPU seconds so far of the gunicorn workers and of this database's backends."""
    web = process_cpu(lambda pid, ppid, cmd: pid == server_pid or ppid == server_pid)
    db = process_cpu(
        lambda pid, ppid, cmd: cmd.startswith("postgres: ") and f" {database} " in cmd
    )
    return web, db


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def check_invariants(project, accepted: int) -> list[str]:
    """Return the broken invariants: structure_problems and every accepted one stored."""
    from annotation.models import Ranking

    problems = structure_problems(project)
    total = Ranking.objects.filter(task__project=project).count()
    if total != accepted:
        problems.append(
            f"sessions saw {accepted} submissions accepted, the database holds {total}"
        )
    return problems


def structure_problems(project) -> list[str]:
    """Return what is wrong with the project's stored rankings: a task over its
    overlap, an annotator ranking a task twice, a stored count unlike the rows."""
    from django.db.models import Count, F

    from annotation.models import Ranking, RankingTask

    problems = []
    over = RankingTask.objects.filter(
        project=project, ranking_count__gt=F("overlap")
    ).count()
    if over:
        problems.append(f"{over} tasks ranked more than their overlap")
    dupes = (
        Ranking.objects.filter(task__project=project)
        .values("task", "annotator")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    if dupes:
        problems.append(f"{dupes} (task, annotator) pairs ranked twice")
    actual = dict(
        Ranking.objects.filter(task__project=project, is_skip=False)
        .values("task")
        .annotate(n=Count("pk"))
        .values_list("task", "n")
    )
    stored = dict(
        RankingTask.objects.filter(project=project, ranking_count__gt=0).values_list(
            "pk", "ranking_count"
        )
    )
    if actual != stored:
        problems.append("stored ranking counts differ from the rankings stored")
    return problems


def run_mode(args: argparse.Namespace, mode: str) -> bool:
    """Benchmark one mode on a fresh project; print its figures; return whether invariants hold."""
    t0 = time.perf_counter()
    project, names = create_project(args.tasks, args.sessions)
    print(f"created {args.tasks} tasks in {time.perf_counter() - t0:.1f} s")
    from django.db import connection

    connection.close()  # the server's workers must not share the parent's connection
    server = start_gunicorn(args)
    try:
        sessions = [
            Session(args.port, name, token, mode, args.seed + i)
            for i, (name, token) in enumerate(names)
        ]
        for s in sessions:
            s.login()
        # Warm up every worker (imports, connections) before the clock starts.
        for s in sessions:
            s.request("GET", "/login/")
        # Baseline in the same run: the home page (session, user, roles, two
        # aggregate queries, a template) under the same concurrency.
        stop_at = time.monotonic() + min(10.0, args.seconds / 2)
        threads = [
            threading.Thread(target=s.baseline, args=(stop_at,)) for s in sessions
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        baseline_rate = sum(s.baseline_requests for s in sessions) / (
            time.perf_counter() - start
        )
        for s in sessions:
            s.latencies.clear()
        load_before = os.getloadavg()[0]
        cpu_before = os.times()
        database = urllib.parse.urlparse(args.database_url).path.lstrip("/")
        web_before, db_before = server_cpu(server.pid, database)
        stop_at = time.monotonic() + args.seconds
        threads = [
            threading.Thread(target=s.run, args=(project.name, stop_at))
            for s in sessions
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        cpu_after = os.times()
        web_after, db_after = server_cpu(server.pid, database)
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = [x * 1000 for s in sessions for x in s.latencies]
    accepted = sum(s.accepted for s in sessions)
    errors = [e for s in sessions for e in s.errors]
    client_cpu = (cpu_after.user - cpu_before.user) + (
        cpu_after.system - cpu_before.system
    )
    print(
        f"mode={mode} sessions={args.sessions} workers={args.workers} threads={args.threads} "
        f"tasks={args.tasks} cpus={os.cpu_count()} seconds={elapsed:.1f}"
    )
    print(
        f"submissions: {accepted} ({accepted / elapsed:.1f}/s), requests: {len(latencies)} "
        f"({len(latencies) / elapsed:.1f}/s), errors: {len(errors)}"
    )
    print(
        f"baseline (home page GETs, same sessions): {baseline_rate:.1f}/s; "
        f"submissions/s over baseline requests/s: {accepted / elapsed / baseline_rate:.2f}"
    )
    print(
        f"load average before/after the run (all processes on the machine): "
        f"{load_before:.1f}/{os.getloadavg()[0]:.1f}; the bench client itself used "
        f"{client_cpu / elapsed:.2f} CPU"
    )
    per = 1000 / max(accepted, 1)
    print(
        f"CPU per submission: web {(web_after - web_before) * per:.1f} ms, PostgreSQL "
        f"{(db_after - db_before) * per:.1f} ms (a quiet 2-core machine could serve about "
        f"{2 / max((web_after - web_before + db_after - db_before) / max(accepted, 1), 1e-9):.0f}"
        " submissions/s)"
    )
    print(
        "request latency ms: "
        f"p50={percentile(latencies, 50):.1f} p95={percentile(latencies, 95):.1f} "
        f"p99={percentile(latencies, 99):.1f} max={max(latencies):.1f}"
    )
    connection.close()
    problems = check_invariants(project, accepted) + sorted(set(errors))[:5]
    print(
        "invariants: " + ("all hold" if not problems else "; ".join(problems)),
        flush=True,
    )
    return not problems


def main() -> None:
    args = parse_args()
    setup_django(args.database_url)
    create_database(args.database_url)
    modes = ["htmx", "plain", "api", "api-next"] if args.mode == "all" else [args.mode]
    print(f"CPU probe before: {cpu_probe():.2f} s", flush=True)
    results = [run_mode(args, mode) for mode in modes]
    print(f"CPU probe after: {cpu_probe():.2f} s")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
