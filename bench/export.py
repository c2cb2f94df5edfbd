"""Benchmark: export one million preference pairs as JSONL and as Parquet.

Target (issue 4): each under 20 s on this machine with peak resident memory under
500 MB, memory flat as the data grows. Each phase runs in its own process so its
peak RSS is its own; the naive baseline (every row loaded as ORM objects into one
list, then written) runs in the same invocation on the same database, so the
ratios compare like with like.

    .venv/bin/python bench/export.py            # 1,000,000 pairs
    .venv/bin/python bench/export.py --pairs 200000

The database is a throwaway SQLite file under a temporary folder (or --workdir).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAIRS_PER_TASK = 6 * 3  # 4 responses ranked strictly by 3 annotators


def setup_django(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ.setdefault("DEBUG", "1")
    os.environ["VAR_DIR"] = str(workdir / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(workdir: Path, pairs: int) -> dict:
    """Create a project whose snapshot holds `pairs` pairs, inserted in bulk."""
    from django.core.management import call_command
    from django.db import connection, transaction

    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User

    from annotation.models import Project, Prompt, Snapshot
    from inference.models import Policy

    tasks = -(-pairs // PAIRS_PER_TASK)
    project = Project.objects.create(name="bench")
    policy = Policy.objects.create(name="bench-policy", base_path="/nowhere")
    [User.objects.create(username=f"ann{i}") for i in range(3)]
    snapshot = Snapshot.objects.create(
        project=project, name="bench", row_count=pairs, sha256="0" * 64
    )
    body = "The answer depends on the details; here is a careful explanation. " * 3
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            "INSERT INTO annotation_round (project_id, number, policy_id, sampling, strategy,"
            " created_at) VALUES (%s, 1, %s, '{}', 'fresh', datetime('now'))",
            [project.pk, policy.pk],
        )
        round_id = cur.lastrowid
        prompts = [
            Prompt(
                project=project,
                messages=[{"role": "user", "content": f"Question {i}: why?"}],
            )
            for i in range(tasks)
        ]
        for p in prompts:
            from annotation.models import messages_hash

            p.content_hash = messages_hash(p.messages)
        Prompt.objects.bulk_create(prompts, batch_size=5000)
        prompt_ids = list(
            Prompt.objects.filter(project=project).values_list("id", flat=True)
        )
        cur.executemany(
            "INSERT INTO annotation_rankingtask (project_id, round_id, prompt_id, overlap,"
            " ranking_count, is_gold, selection_score, source, created_at) VALUES"
            " (%s, %s, %s, 3, 3, 0, 0, '', datetime('now'))",
            [(project.pk, round_id, pid) for pid in prompt_ids],
        )
        task_ids = [
            r[0]
            for r in cur.execute(
                "SELECT id FROM annotation_rankingtask ORDER BY id"
            ).fetchall()
        ]
        cur.executemany(
            "INSERT INTO annotation_response (task_id, policy_id, text, sampling, position,"
            " created_at) VALUES (%s, %s, %s, '{}', %s, datetime('now'))",
            [
                (t, policy.pk, f"Response {k} to task {t}. {body}", k)
                for t in task_ids
                for k in range(4)
            ],
        )
        response_ids = [
            r[0]
            for r in cur.execute(
                "SELECT id FROM annotation_response ORDER BY task_id, position"
            ).fetchall()
        ]
        rows = []
        for n, task_id in enumerate(task_ids):
            r = response_ids[4 * n : 4 * n + 4]
            for a in range(3):
                order = r if a != 1 else [r[1], r[0], r[2], r[3]]
                for i in range(4):
                    for j in range(i + 1, 4):
                        if len(rows) < pairs:
                            rows.append(
                                (
                                    snapshot.pk,
                                    task_id,
                                    order[i],
                                    order[j],
                                    float(j - i),
                                    f"annotator-{a + 1}",
                                )
                            )
        cur.executemany(
            "INSERT INTO annotation_snapshotpair (snapshot_id, task_id, chosen_id, rejected_id,"
            " margin, annotator_label) VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )
    return {"snapshot": snapshot.pk, "pairs": len(rows), "tasks": tasks}


def export_ours(snapshot_id: int, out: Path, file_format: str, limit: int) -> dict:
    from annotation.export import export_snapshot
    from annotation.models import Snapshot

    snapshot = Snapshot.objects.get(pk=snapshot_id)
    start = time.perf_counter()
    export_snapshot(snapshot, out, file_format=file_format)
    return {"seconds": time.perf_counter() - start}


def export_naive(snapshot_id: int, out: Path, file_format: str, limit: int) -> dict:
    """The obvious way: load the pairs as ORM objects with their relations, then write.

    Run on the first `limit` pairs only: its memory grows with the data (about 10 GB
    for a million pairs), more than a shared laptop should be asked for.
    """
    from annotation.models import SnapshotPair

    start = time.perf_counter()
    pairs = list(
        SnapshotPair.objects.filter(snapshot_id=snapshot_id)
        .select_related(
            "task__prompt", "task__round__policy", "chosen__policy", "rejected__policy"
        )
        .order_by("id")[:limit]
    )
    rows = [
        {
            "prompt": p.task.prompt.messages,
            "chosen": [{"role": "assistant", "content": p.chosen.text}],
            "rejected": [{"role": "assistant", "content": p.rejected.text}],
            "margin": p.margin,
            "annotator": p.annotator_label,
            "round": p.task.round.number,
            "policy": p.task.round.policy.name,
            "chosen_policy": p.chosen.policy.name,
            "rejected_policy": p.rejected.policy.name,
            "prompt_id": p.task.prompt_id,
            "ranking_id": p.ranking_id,
            "chosen_id": p.chosen_id,
            "rejected_id": p.rejected_id,
        }
        for p in pairs
    ]
    if file_format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), out)
    else:
        with open(out, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"seconds": time.perf_counter() - start}


PHASES = {"ours": export_ours, "naive": export_naive}


def run_phase(args: argparse.Namespace) -> None:
    setup_django(Path(args.workdir))
    if args.phase == "build":
        result = build(Path(args.workdir), args.pairs)
    else:
        out = Path(args.workdir) / f"{args.phase}.{args.file_format}"
        result = PHASES[args.phase](
            args.snapshot, out, args.file_format, args.naive_pairs
        )
        result["bytes"] = out.stat().st_size
        with open(out, "rb") as f:
            result["lines"] = sum(1 for _ in f) if args.file_format == "jsonl" else None
        out.unlink()
    result["peak_rss_mb"] = peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(result))


def child(workdir: Path, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--workdir", str(workdir), *extra]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--workdir")
    parser.add_argument("--phase", choices=["build", *PHASES])
    parser.add_argument("--snapshot", type=int)
    parser.add_argument("--file-format", default="jsonl")
    parser.add_argument(
        "--naive-pairs",
        type=int,
        default=100_000,
        help="How many pairs the naive baseline exports (its memory grows).",
    )
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        built = child(workdir, "--phase", "build", "--pairs", str(args.pairs))
        print(
            f"built {built['pairs']:,} pairs over {built['tasks']:,} tasks "
            f"in {time.perf_counter() - start:.1f} s"
        )
        print(
            f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        print(
            f"{'format':8} {'exporter':8} {'pairs':>9} {'seconds':>8} {'CPU s':>6} "
            f"{'pairs/s':>10} {'peak RSS MB':>12} {'MB out':>8}"
        )
        results = {}
        for file_format in ("jsonl", "parquet"):
            for phase in ("ours", "naive"):
                if phase == "naive" and args.skip_naive:
                    continue
                r = child(
                    workdir,
                    "--phase",
                    phase,
                    "--snapshot",
                    str(built["snapshot"]),
                    "--file-format",
                    file_format,
                    "--naive-pairs",
                    str(args.naive_pairs),
                )
                r["pairs"] = (
                    built["pairs"]
                    if phase == "ours"
                    else min(args.naive_pairs, built["pairs"])
                )
                if r["lines"] is not None:
                    assert r["lines"] == r["pairs"], r
                results[(file_format, phase)] = r
                print(
                    f"{file_format:8} {phase:8} {r['pairs']:>9,} {r['seconds']:8.1f} "
                    f"{r['cpu_seconds']:6.1f} "
                    f"{r['pairs'] / r['seconds']:10,.0f} {r['peak_rss_mb']:12.0f} "
                    f"{r['bytes'] / 1e6:8.0f}"
                )
        for file_format in ("jsonl", "parquet"):
            ours = results[(file_format, "ours")]
            verdict = (
                "meets"
                if ours["seconds"] < 20 and ours["peak_rss_mb"] < 500
                else "MISSES"
            )
            line = f"{file_format}: ours {ours['seconds']:.1f} s, {ours['peak_rss_mb']:.0f} MB"
            naive = results.get((file_format, "naive"))
            if naive:
                speed = (ours["pairs"] / ours["seconds"]) / (
                    naive["pairs"] / naive["seconds"]
                )
                line += (
                    f"; {speed:.1f}x the naive pairs/s with"
                    f" {naive['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x less peak memory"
                    f" (naive on {naive['pairs']:,} pairs)"
                )
            print(f"{line} -> {verdict} the target (< 20 s, < 500 MB)")


if __name__ == "__main__":
    main()
