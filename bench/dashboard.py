"""Benchmark: the project pages that read every ranking, at 30,000 rankings.

A project of 10,000 tasks of four responses (four policies), each ranked by two
people and one simulated annotator, 30,000 rankings in all, on a fresh database. The
pages read every ranking of the project in the request, so their time grows with
the project: the dashboard (throughput, agreement, gold, time per task) and the
overview (rounds, the human and simulated leaderboards, the simulators' agreement
with people). Each is timed through the test client as a signed-in admin, three
times (the median is reported), two ways in the same run:

- baseline: Kendall's tau-b by `scipy.stats.kendalltau` per pair of rankings, as
  `annotation.agreement.kendall_tau_b` computed it (kept here as `scipy_tau_b`);
- ours: `kendall_tau_b` counting the pairs itself (a ranking has a few responses;
  scipy's overhead per call was about 0.5 ms).

Both in the request (REQUEST_MAX_RANKINGS set past the project's size). Then as a
user gets them, with the defaults: past REQUEST_MAX_RANKINGS (10,000) rankings the
page's figures are the worker's (`annotation.figures`), so the first visit queues
them (timed), the worker's `run_figures` computes them (timed here in this process),
and a visit after that shows the kept ones (timed).

    .venv/bin/python bench/dashboard.py              # SQLite under a temporary folder
    .venv/bin/python bench/dashboard.py --tasks 2000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dashbench .venv/bin/python bench/dashboard.py

Ends with one JSON line of the figures.

Run (2026-12-07, 12:22-12:23 UTC, an AMD EPYC of the Zen 4 family, 2 cores, beside
`make test`: CPU probe 0.15-0.16 s, load 1.8 at the start and 2.4 at the end; SQLite):

- dashboard: 1.06 s against 3.24 s (0.33x) in the request; the worker's: the first
  visit 0.015 s (it queues them), the worker 1.37 s, a later visit 0.012 s (0.004x);
- overview: 1.84 s against 5.84 s (0.32x); the first visit 0.06 s, the worker
  2.12 s, a later visit 0.071 s (0.012x).

A run minutes earlier (12:15, load 1.8-2.1) gave 1.06 / 3.26 s and 1.62 / 6.00 s in
the request. Profiled, the rest of the time in the request is reading and decoding
every ranking's order (Django's JSON field, 60,000 decodes for the overview) and the
leaderboards' bootstrap; it grows with the project, which is why larger projects'
figures are the worker's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.freeze import ranked_tasks, setup_django  # noqa: E402  (one SQLite under workdir)
from bench.probe import cpu_probe  # noqa: E402

PAGES = {
    "dashboard": "/projects/bench/dashboard/",
    "overview": "/overview/bench/",
}


def build(tasks: int):
    """Create the project and return a signed-in admin's test client."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from annotation.models import AnnotatorProfile, Membership, Project
    from inference.models import Policy

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="bench")
    policies = [
        Policy.objects.create(name=f"bench-policy-{k}", base_path="/nowhere")
        for k in range(4)
    ]
    people = [User.objects.create(username=f"ann{i}") for i in range(2)]
    simulator = User.objects.create(username="sim0")
    AnnotatorProfile.objects.update_or_create(
        user=simulator, defaults={"is_simulated": True, "simulator": "judge"}
    )

    def order_of(n: int, a: int, ids: list[int]) -> list[list[int]]:
        return (
            [[ids[0]], [ids[1]], [ids[2]], [ids[3]]],
            [[ids[1]], [ids[0], ids[2]], [ids[3]]],
            [[ids[0]], [ids[2]], [ids[1]], [ids[3]]] if n % 2 else [[i] for i in ids],
        )[a]

    rankings = ranked_tasks(
        project, tasks, policies, [*people, simulator], order_of, active_seconds=30.0
    )
    admin = User.objects.create_superuser("bench-admin", password="unused-password")
    Membership.objects.get_or_create(project=project, user=admin)
    client = Client()
    client.force_login(admin)
    return client, rankings


def scipy_tau_b(a, b):
    """The baseline: Kendall's tau-b as it was computed, by scipy per pair."""
    from scipy.stats import kendalltau

    from annotation.agreement import rank_map

    ra, rb = rank_map(a), rank_map(b)
    common = sorted(set(ra) & set(rb))
    if len(common) < 2:
        return None
    x = [ra[r] for r in common]
    y = [rb[r] for r in common]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(kendalltau(x, y, variant="b").statistic)


def time_pages(client, repeats: int) -> dict:
    """Return the median seconds of each page over `repeats` GETs, after one GET
    that is not timed (its imports, scipy's among them, are a cold process's)."""
    figures = {}
    for name, url in PAGES.items():
        client.get(url)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            response = client.get(url)
            seconds.append(time.perf_counter() - start)
            assert response.status_code == 200, (url, response.status_code)
        figures[name] = round(statistics.median(seconds), 3)
    return figures


def kept_pages(client) -> dict:
    """Return, for each page, the first visit's seconds (it queues the figures), the
    worker's seconds computing them, and a later visit's seconds (the kept ones)."""
    from annotation.figures import run_figures
    from annotation.models import ProjectFigures

    figures = {}
    for name, url in PAGES.items():
        start = time.perf_counter()
        first = client.get(url)
        queued_seconds = time.perf_counter() - start
        assert b"Computing the figures" in first.content, url
        job = ProjectFigures.objects.get(page=name)
        start = time.perf_counter()
        assert run_figures(job.pk).status == "done"
        worker_seconds = time.perf_counter() - start
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            later = client.get(url)
            seconds.append(time.perf_counter() - start)
        assert b"Computed by the worker" in later.content, url
        figures[name] = {
            "first_visit_seconds": round(queued_seconds, 3),
            "worker_seconds": round(worker_seconds, 2),
            "later_visit_seconds": round(statistics.median(seconds), 3),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--tiny", action="store_true", help="60 tasks, one GET: the whole path"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.tiny:
        args.tasks, args.repeats = 60, 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    workdir.mkdir(parents=True, exist_ok=True)
    setup_django(workdir)
    from django.conf import settings
    from django.db import connection

    import annotation.agreement as agreement
    import annotation.simulated as simulated

    print(
        f"CPU probe {cpu_probe():.2f} s; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs; database {connection.vendor}",
        file=sys.stderr,
    )
    client, rankings = build(args.tasks)
    client.get("/")  # warm, as a running server is
    ours_tau = agreement.kendall_tau_b
    default_max = settings.REQUEST_MAX_RANKINGS
    settings.REQUEST_MAX_RANKINGS = 10**12  # both in the request
    agreement.kendall_tau_b = simulated.kendall_tau_b = scipy_tau_b
    try:
        baseline = time_pages(client, args.repeats)
    finally:
        agreement.kendall_tau_b = simulated.kendall_tau_b = ours_tau
    try:
        ours = time_pages(client, args.repeats)
    finally:
        settings.REQUEST_MAX_RANKINGS = default_max
    # As a user gets them; a run of fewer rankings (--tasks) lowers the threshold.
    settings.REQUEST_MAX_RANKINGS = min(default_max, rankings - 1)
    try:
        kept = kept_pages(client)
    finally:
        settings.REQUEST_MAX_RANKINGS = default_max
    figures = {
        "database": connection.vendor,
        "rankings": rankings,
        "baseline": baseline,
        "ours": ours,
        "kept": kept,
        "ratio": {name: round(ours[name] / baseline[name], 3) for name in PAGES},
        "kept_ratio": {
            name: round(kept[name]["later_visit_seconds"] / baseline[name], 4)
            for name in PAGES
        },
        "cpu_probe_s": round(cpu_probe(), 2),
        "load": round(os.getloadavg()[0], 1),
    }
    for name in PAGES:
        print(
            f"{name:>10}: {ours[name]:.2f} s against {baseline[name]:.2f} s "
            f"({figures['ratio'][name]:.2f}x) at {rankings:,} rankings",
            file=sys.stderr,
        )
    for name in PAGES:
        row = kept[name]
        print(
            f"{name:>10}, the worker's: the first visit {row['first_visit_seconds']:.2f} s "
            f"(queues them), the worker {row['worker_seconds']:.2f} s, a later visit "
            f"{row['later_visit_seconds']:.3f} s",
            file=sys.stderr,
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
