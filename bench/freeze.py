"""Benchmark: freezing a large snapshot and downloading its first export, and what
each costs everyone else.

A snapshot of 180,000 pairs (10,000 tasks of four responses, each ranked by three
annotators) is frozen three ways in the same run, on the same database:

- baseline: the freeze as it was, in the web request, its pairs written by
  `bulk_create` of one model instance per pair (kept here as `store_with_orm`);
- ours, in process: `freeze_snapshot` (commands, the loop), pairs written as
  multi-row INSERTs of plain values;
- ours, through the API: `POST /api/projects/bench/snapshots` answers 202 at once
  and a worker's `run_freeze` freezes it (timed here in this process).

Beside each, a writer thread on its own connection makes a small write every 20 ms
(an annotator's submission, in effect), and the longest it waited is reported: on
SQLite a freeze's landing transaction holds the database's write lock.

Then the first download of a snapshot's export (TRL JSONL), two ways:

- baseline: written in the web request, as every download was (the snapshot "ours",
  with REQUEST_MAX_PAIRS past its size);
- ours: `GET /api/snapshots/{id}/download` answers 202 at once and a worker's
  `run_export` writes the file (timed here in this process); the same request then
  answers 200 with it (the snapshot "api": the same pairs, not exported before).

And the first comparison of two snapshots ("ours" against "api"), the same two ways:
in the request (baseline), or 202 at once and a worker's `run_comparison`, after which
the same request answers 200 with the kept result. Its peak Python memory
(tracemalloc) is set against the comparison's reading as it was, both snapshots'
rows in one dict each (`whole_snapshot_rows`, kept as the baseline).

    .venv/bin/python bench/freeze.py                 # SQLite under a temporary folder
    .venv/bin/python bench/freeze.py --tasks 2000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/freezebench .venv/bin/python bench/freeze.py

(PostgreSQL: an empty database of its own, which the bench fills.) Ends with one
JSON line of the figures.

Runs (2026-12-07, 08:28-08:30 UTC, an AMD EPYC of the Zen 4 family, 2 cores, the
bench alone; CPU probe 0.15-0.17 s, load 1.0-1.1):

- SQLite: baseline 15.8 s, its pairs written in 9.0 s, a writer beside it held back
  9.85 s; ours in process 8.7 s (1.81x faster), pairs 1.6 s (5.7x), the writer
  2.43 s; through the API the request answered in 0.005 s (0.0003x the baseline's
  request) and the worker's freeze took 8.8 s, the writer 3.1 s at most.
- PostgreSQL: baseline 19.7 s, pairs 9.7 s, the writer 0.57 s; ours 14.4 s (1.36x),
  pairs 4.1 s (2.3x), the writer 0.11 s; the API's request 0.008 s, the worker's
  freeze 14.1 s, the writer 0.05 s. (`executemany` of one row per parameter set
  took 26 s for the pairs on PostgreSQL: not kept.)
- A first run without a warm request timed the API's first request at 0.30-0.46 s:
  the imports of a cold process, 0.004 s from the second request on.

Runs with the export download (2026-12-07, 11:57-12:00 UTC, an AMD EPYC of the Zen 4
family, 2 cores, the bench alone; CPU probe 0.15-0.17 s, load 0.7-0.9):

- SQLite: the first download of the 180,000 pairs (141 MB of JSONL) took 1.43 s in
  the request; queued, the request answered 202 in 0.009 s (0.006x), the worker wrote
  the file in 1.41 s, and the request then sent it in 0.08 s. The freezes: baseline
  15.9 s, ours 8.5 s, the API's request 0.007 s; the writer 10.1 s against 3.1 s.
- PostgreSQL: 1.76 s in the request against 0.013 s (0.007x); the worker 1.75 s, the
  file sent in 0.08 s. The freezes: 19.1 s, 14.3 s, 0.009 s.
- At a million pairs the export takes some 10 s (bench/export.py), in the worker.

Runs with the comparison (2026-12-07, 12:05-12:09 UTC, the same machine, the bench
alone; CPU probe 0.15-0.18 s, load 0.6-1.7):

- SQLite: comparing the two snapshots of 180,000 pairs took 1.47 s in the request;
  queued, the request answered 202 in 0.008 s (0.006x), the worker compared them in
  1.45 s, and the request then read the kept result in 0.007 s. (The export: 1.32 s
  against 0.008 s.)
- PostgreSQL: 1.88 s against 0.013 s (0.007x); the worker 1.98 s, the result read in
  0.012 s. (The export: 1.89 s against 0.011 s.)
- The orders written as multi-row INSERTs too (`_store_orders`, was `bulk_create` of
  model instances): 30,000 orders in 0.36 s against 0.85 s (three runs each inside
  a rolled-back transaction, SQLite), so a freeze's landing holds SQLite's lock half
  a second less; the run after it: the writer beside the freeze waited at most 2.2 s
  (ours) and 2.3 s (through the API) against 2.4 s and 2.9 s the run before (load
  1.7, so within the noise of one run).

Runs with the comparison read a task at a time (2026-12-07, 16:12-16:15 UTC, the same
machine, beside `make test`; CPU probe 0.16-0.20 s, load 1.9-2.9):

- SQLite: the worker compared the two snapshots of 180,000 pairs in 1.40 s, at a
  peak of **5.1 MiB** of Python memory against 283.8 MiB for the baseline's two
  dicts (0.018x); in the request 1.38 s, queued 0.008 s.
- PostgreSQL: 1.97 s, peak 4.8 MiB against 279.8 MiB (0.017x); the request 2.17 s,
  queued 0.014 s.
- A first version streamed the pairs joined to their rankings, tasks, rounds,
  responses and policies, ordered by task: on PostgreSQL, before ANALYZE had seen
  the new pairs, the server-side cursor's fast-start plan was a nested loop over
  every task and every pair (still running after 5 minutes; 0.3 s for the pair table
  alone). The stream now reads the pair table alone and looks up each chunk's
  annotators, rounds and policies by id range: 1.76 s, where per-chunk IN lists of
  2,000 rows had taken 4.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.probe import cpu_probe  # noqa: E402


def setup_django(workdir: Path) -> None:
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}")
    os.environ.setdefault("DEBUG", "1")
    os.environ["VAR_DIR"] = str(workdir / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()


def build(tasks: int) -> dict:
    """Create the project: `tasks` tasks of four responses, three rankings each."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from annotation.models import Project
    from inference.models import Policy

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="bench")
    policy = Policy.objects.create(name="bench-policy", base_path="/nowhere")
    people = [User.objects.create(username=f"ann{i}") for i in range(3)]
    body = "The answer depends on the details; here is a careful explanation. " * 3

    def order_of(n: int, a: int, ids: list[int]) -> list[list[int]]:
        swapped = ids if a != 1 else [ids[1], ids[0], ids[2], ids[3]]
        return [[i] for i in swapped]

    ranked_tasks(
        project,
        tasks,
        [policy],
        people,
        order_of,
        text=lambda k: f"Response {k}. {body}",
    )
    admin = User.objects.create_superuser("bench-admin", password="unused-password")
    return {"project": project, "admin": admin}


def ranked_tasks(
    project,
    tasks: int,
    policies: list,
    people: list,
    order_of,
    *,
    text=lambda k: f"Response {k}.",
    **ranking_fields,
) -> int:
    """Give `project` `tasks` tasks of four responses each (response k written by
    `policies[k % len(policies)]`, its text `text(k)`), every one ranked by each of
    `people`: person a's order of task n is `order_of(n, a, response ids)` (tie
    groups). Written in bulk; return the number of rankings. The benches' one way of
    making a large ranked project (bench/freeze.py, dashboard.py, chaos.py)."""
    from annotation.models import Prompt, Ranking, RankingTask, Response

    prompts = Prompt.objects.bulk_create(
        [
            Prompt(
                project=project,
                messages=[{"role": "user", "content": f"Question {i}: why?"}],
                content_hash=f"{i:064x}",
            )
            for i in range(tasks)
        ],
        batch_size=2000,
    )
    task_rows = RankingTask.objects.bulk_create(
        [RankingTask(project=project, prompt=p, overlap=3) for p in prompts],
        batch_size=2000,
    )
    responses = Response.objects.bulk_create(
        [
            Response(
                task=t, policy=policies[k % len(policies)], text=text(k), position=k
            )
            for t in task_rows
            for k in range(4)
        ],
        batch_size=2000,
    )
    rankings = [
        Ranking(
            task=task,
            annotator=person,
            order=order_of(n, a, [r.pk for r in responses[4 * n : 4 * n + 4]]),
            **ranking_fields,
        )
        for n, task in enumerate(task_rows)
        for a, person in enumerate(people)
    ]
    Ranking.objects.bulk_create(rankings, batch_size=2000)
    return len(rankings)


def store_with_orm(snapshot, pair_rows, progress=None) -> None:
    """The baseline: the pairs as it wrote them, one model instance each."""
    from annotation.models import SnapshotPair

    for start in range(0, len(pair_rows), 2000):
        SnapshotPair.objects.bulk_create(
            [
                SnapshotPair(
                    snapshot=snapshot,
                    ranking=row["ranking"],
                    task=row["task"],
                    chosen_id=row["chosen"],
                    rejected_id=row["rejected"],
                    margin=row["margin"],
                    annotator_label=row["label"],
                )
                for row in pair_rows[start : start + 2000]
            ]
        )
        if progress is not None:
            progress(min(1.0, (start + 2000) / len(pair_rows)))


class Writer:
    """A thread that writes one small row every 20 ms on its own connection and
    keeps the longest wait."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.writes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        from django.db import connection

        from annotation.models import AuditEntry

        try:
            while not self.stop.wait(0.02):
                start = time.perf_counter()
                AuditEntry.objects.create(action="bench.write", actor_name="writer")
                self.longest = max(self.longest, time.perf_counter() - start)
                self.writes += 1
        finally:
            connection.close()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def timed_freeze(project, name: str, store) -> dict:
    """Freeze in process with `store` writing the pairs; return the figures."""
    import annotation.snapshots as snapshots

    marks: dict[str, float] = {}
    real_store = snapshots._store_pairs
    snapshots._store_pairs = store
    try:
        with Writer() as writer:
            start = time.perf_counter()

            def progress(share: float) -> None:
                if share >= 0.6:
                    marks.setdefault("store_from", time.perf_counter() - start)
                if share >= 1.0:
                    marks.setdefault("store_to", time.perf_counter() - start)

            snapshot = snapshots.freeze_snapshot(project, name, progress=progress)
            seconds = time.perf_counter() - start
    finally:
        snapshots._store_pairs = real_store
    return {
        "pairs": snapshot.row_count,
        "seconds": round(seconds, 2),
        "store_seconds": round(marks["store_to"] - marks["store_from"], 2),
        "longest_write_wait": round(writer.longest, 3),
        "writes": writer.writes,
    }


def api_freeze(project, admin, name: str) -> dict:
    """POST the freeze to the API (202), then run the worker's job; return both."""
    from django.test import Client

    from annotation.snapshots import run_freeze
    from annotation.tokens import create_token

    _, token = create_token(admin, f"bench-{name}", ["data", "read"])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    client.get("/api/projects/bench/snapshots")  # warm, as a running server is
    with Writer() as writer:
        start = time.perf_counter()
        response = client.post(
            "/api/projects/bench/snapshots",
            {"name": name},
            content_type="application/json",
        )
        answered = time.perf_counter() - start
        assert response.status_code == 202, response.content
        snapshot = run_freeze(response.json()["id"])
        seconds = time.perf_counter() - start
    assert snapshot.status == "done", snapshot.error
    return {
        "pairs": snapshot.row_count,
        "request_seconds": round(answered, 3),
        "seconds": round(seconds, 2),
        "longest_write_wait": round(writer.longest, 3),
        "writes": writer.writes,
    }


def api_downloads(admin, inline_snapshot, queued_snapshot) -> dict:
    """Time the first download of each snapshot's export: one written in the request,
    one queued (202) and written by `run_export`, then sent (200)."""
    from django.conf import settings
    from django.test import Client

    from annotation.export import run_export
    from annotation.tokens import create_token

    _, token = create_token(admin, "bench-downloads", ["data", "read"])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    client.get("/api/projects/bench/snapshots")  # warm, as a running server is

    def get(snapshot):
        start = time.perf_counter()
        response = client.get(f"/api/snapshots/{snapshot.pk}/download")
        if response.status_code == 200:
            size = sum(len(part) for part in response.streaming_content)
        else:
            size = 0
        return response, time.perf_counter() - start, size

    default_inline = settings.REQUEST_MAX_PAIRS
    settings.REQUEST_MAX_PAIRS = 10**12
    try:
        response, inline_seconds, inline_bytes = get(inline_snapshot)
    finally:
        settings.REQUEST_MAX_PAIRS = default_inline
    assert response.status_code == 200, response.status_code
    # The default threshold; a run of fewer pairs (--tasks) lowers it under them.
    settings.REQUEST_MAX_PAIRS = min(default_inline, queued_snapshot.row_count - 1)
    try:
        queued, queued_seconds, _ = get(queued_snapshot)
    finally:
        settings.REQUEST_MAX_PAIRS = default_inline
    assert queued.status_code == 202, queued.status_code
    start = time.perf_counter()
    job = run_export(queued.json()["id"])
    build_seconds = time.perf_counter() - start
    assert job.status == "done", job.error
    sent, sent_seconds, sent_bytes = get(queued_snapshot)
    assert sent.status_code == 200 and sent_bytes == inline_bytes
    return {
        "rows": job.rows,
        "bytes": sent_bytes,
        "baseline_request_seconds": round(inline_seconds, 3),
        "queued_request_seconds": round(queued_seconds, 4),
        "worker_seconds": round(build_seconds, 2),
        "ready_request_seconds": round(sent_seconds, 3),
    }


def api_comparison(admin, a, b) -> dict:
    """Time the first comparison of `a` with `b`: in the request, then queued (202)
    and computed by `run_comparison`, then read back (200)."""
    from django.conf import settings
    from django.test import Client

    from annotation.snapshots import run_comparison
    from annotation.tokens import create_token

    _, token = create_token(admin, "bench-comparison", ["data", "read"])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    client.get("/api/projects/bench/snapshots")  # warm, as a running server is

    def get(x, y):
        start = time.perf_counter()
        response = client.get(f"/api/snapshots/{x.pk}/diff", {"against": y.pk})
        return response, time.perf_counter() - start

    default = settings.REQUEST_MAX_PAIRS
    settings.REQUEST_MAX_PAIRS = 10**12
    try:
        inline, inline_seconds = get(b, a)  # b against a: not the queued one below
    finally:
        settings.REQUEST_MAX_PAIRS = default
    assert inline.status_code == 200, inline.status_code
    settings.REQUEST_MAX_PAIRS = min(default, a.row_count - 1)
    try:
        queued, queued_seconds = get(a, b)
        assert queued.status_code == 202, queued.status_code
        start = time.perf_counter()
        job = run_comparison(queued.json()["id"])
        worker_seconds = time.perf_counter() - start
        assert job.status == "done", job.error
        ready, ready_seconds = get(a, b)
    finally:
        settings.REQUEST_MAX_PAIRS = default
    assert ready.status_code == 200
    assert ready.json()["unchanged"] == inline.json()["unchanged"] == a.row_count
    return {
        "pairs": a.row_count,
        "baseline_request_seconds": round(inline_seconds, 3),
        "queued_request_seconds": round(queued_seconds, 4),
        "worker_seconds": round(worker_seconds, 2),
        "ready_request_seconds": round(ready_seconds, 3),
        **comparison_memory(a, b),
    }


def whole_snapshot_rows(snapshot) -> dict[tuple, dict]:
    """The comparison's reading as it was (kept as the memory baseline): every pair
    of the snapshot in one dict, keyed as the diff keys them."""
    from annotation.models import SnapshotPair
    from annotation.snapshots import _diff_row, _row_order

    keyed = {}
    rows = SnapshotPair.objects.filter(snapshot=snapshot).values_list(
        "task_id",
        "chosen_id",
        "rejected_id",
        "ranking__annotator_id",
        "annotator_label",
        "margin",
        "task__round__number",
        "chosen__policy__name",
        "rejected__policy__name",
    )
    for task, chosen, rejected, user, label, margin, number, cpol, rpol in rows:
        row = _diff_row(task, chosen, rejected, user, label, margin, number)
        keyed[_row_order(row)] = {**row, "chosen_policy": cpol, "rejected_policy": rpol}
    return keyed


def comparison_memory(a, b) -> dict:
    """Peak Python memory (tracemalloc) of the baseline's reading of both snapshots
    and of `diff_snapshots`, which reads them a task at a time."""
    import tracemalloc

    from annotation.snapshots import diff_snapshots

    def peak(work) -> float:
        tracemalloc.start()
        try:
            work()
            return tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()

    baseline = peak(lambda: (whole_snapshot_rows(a), whole_snapshot_rows(b)))
    ours = peak(lambda: diff_snapshots(a, b))
    return {
        "baseline_peak_mib": round(baseline, 1),
        "worker_peak_mib": round(ours, 1),
        "peak_vs_baseline": round(ours / baseline, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument(
        "--tiny", action="store_true", help="60 tasks: the whole path, for the tests"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.tiny:
        args.tasks = 60
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-freeze-"))
    workdir.mkdir(parents=True, exist_ok=True)
    setup_django(workdir)
    from django.db import connection

    print(
        f"CPU probe {cpu_probe():.2f} s; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs; database {connection.vendor}",
        file=sys.stderr,
    )
    world = build(args.tasks)
    project = world["project"]
    baseline = timed_freeze(project, "baseline", store_with_orm)
    import annotation.snapshots as snapshots

    ours = timed_freeze(project, "ours", snapshots._store_pairs)
    api = api_freeze(project, world["admin"], "api")
    assert baseline["pairs"] == ours["pairs"] == api["pairs"]
    from annotation.models import Snapshot

    frozen_ours = Snapshot.objects.get(project=project, name="ours")
    frozen_api = Snapshot.objects.get(project=project, name="api")
    downloads = api_downloads(world["admin"], frozen_ours, frozen_api)
    comparison = api_comparison(world["admin"], frozen_ours, frozen_api)
    figures = {
        "database": connection.vendor,
        "pairs": ours["pairs"],
        "baseline": baseline,
        "ours": ours,
        "api": api,
        "store_speedup": round(baseline["store_seconds"] / ours["store_seconds"], 1),
        "freeze_speedup": round(baseline["seconds"] / ours["seconds"], 2),
        "request_vs_baseline": round(api["request_seconds"] / baseline["seconds"], 4),
        "export": downloads,
        "comparison": comparison,
        "comparison_request_vs_baseline": round(
            comparison["queued_request_seconds"]
            / comparison["baseline_request_seconds"],
            4,
        ),
        "export_request_vs_baseline": round(
            downloads["queued_request_seconds"] / downloads["baseline_request_seconds"],
            4,
        ),
        "cpu_probe_s": round(cpu_probe(), 2),
        "load": round(os.getloadavg()[0], 1),
    }
    for name in ("baseline", "ours", "api"):
        row = figures[name]
        print(
            f"{name:>8}: {row['pairs']:,} pairs in {row['seconds']:.1f} s"
            + (
                f" (the request answered in {row['request_seconds']:.3f} s)"
                if "request_seconds" in row
                else f" (storing the pairs {row['store_seconds']:.1f} s)"
            )
            + f"; a writer beside it waited at most {row['longest_write_wait']:.2f} s",
            file=sys.stderr,
        )
    print(
        f"  export: the first download of {downloads['rows']:,} rows "
        f"({downloads['bytes'] / 1e6:.0f} MB) took {downloads['baseline_request_seconds']:.2f} s "
        f"in the request; queued, the request answered 202 in "
        f"{downloads['queued_request_seconds']:.4f} s, the worker wrote it in "
        f"{downloads['worker_seconds']:.2f} s, and the request then sent it in "
        f"{downloads['ready_request_seconds']:.2f} s",
        file=sys.stderr,
    )
    print(
        f"  comparison of two snapshots of {comparison['pairs']:,} pairs: "
        f"{comparison['baseline_request_seconds']:.2f} s in the request; queued, the "
        f"request answered 202 in {comparison['queued_request_seconds']:.4f} s, the "
        f"worker compared them in {comparison['worker_seconds']:.2f} s, and the request "
        f"then read the result in {comparison['ready_request_seconds']:.3f} s; "
        f"peak memory {comparison['worker_peak_mib']:.1f} MiB against "
        f"{comparison['baseline_peak_mib']:.1f} MiB holding both snapshots' rows",
        file=sys.stderr,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
