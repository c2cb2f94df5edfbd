"""Does the platform add weight to training? Bare TRL vs a platform stage through the worker.

Same model (a randomly initialised demo-size Llama, ~1M parameters), same data (a
snapshot of synthetic rankings, exported once), same steps, batch and seed. The
baseline is bench/bare_trl.py run as a process; the platform run is
`training.tasks.launch` with a running `manage.py db_worker` (polling every 0.2 s, as
deployed), timed from the launch call to the round's recorded finish, so it includes
the queue wait, the export, the child process, progress reporting and the
registration. Runs alternate (bare, platform, bare, ...) so load drifts hit both.

    .venv/bin/python bench/train_overhead.py --steps 100 --repeat 3

Prints one line per run and, per method, the median wall-time ratio platform/bare
(target: at most 1.05).

Measured 2026-11-28 on the quiet 2-core machine (load 1.4), 100 steps, batch 8,
3 alternating runs each: reward model median ratio 1.046 (bare 7.4-7.7 s, platform
7.7-8.2 s), DPO 0.985 (bare 10.1-10.8 s, platform 10.0-10.6 s); queue waits 0.0-0.2 s,
registration after the stage under 0.05 s. A rerun 45 minutes later: 1.030 (reward),
1.026 (DPO). Two fixes got there from 1.29 (reward)
and 1.39 (DPO): manage.py had set OMP_WAIT_POLICY=PASSIVE for every process it
starts, which halved the speed of the training child's OpenMP threads on a quiet
machine (train_runtime 2.2 s against 0.9 s for 40 reward steps); a short spin
(GOMP_SPINCOUNT=10000) is as fast as the default when quiet and nearly as good as
passive when busy. And the worker polled its queue every second (now 0.2 s as
deployed), and this bench polled the round's status 20 times a second from the
same two cores (now twice a second, timing from the round's finish stamp).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def setup_django(root: Path) -> None:
    """Point the platform at a fresh SQLite database and run folders under `root`."""
    os.environ.update(
        DATABASE_URL=f"sqlite:///{root / 'db.sqlite3'}",
        RUN_DIR=str(root / "runs"),
        MODEL_DIR=str(root / "models"),
        DEBUG="1",
        LOG_LEVEL="WARNING",
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def build_world(root: Path, n_prompts: int) -> tuple:
    """Return (project, policy) with a demo-size model and every task ranked once."""
    from django.contrib.auth.models import User

    from annotation.models import Project, Prompt, Ranking, RankingTask, Response, Round
    from demo.policies import SIZES, init_model, train_tokenizer
    from inference.models import Policy

    questions = [f"What is {a} plus {b}?" for a in range(10) for b in range(10)][
        :n_prompts
    ]
    answers = [
        (
            "The answer is {s}.",
            "I think it is {w}.",
            "Ask someone else.",
            "{w}? Maybe. Or not, who knows really.",
        ),
    ]
    texts = []
    for q in questions:
        a, b = (int(x) for x in q[8:-1].split(" plus "))
        texts.append((q, [t.format(s=a + b, w=a + b + 1) for t in answers[0]]))
    corpus = [q + " " + " ".join(r) for q, r in texts]
    tokenizer = train_tokenizer(corpus, SIZES["demo"].vocab_size)
    model = init_model(tokenizer, SIZES["demo"], seed=0)
    model_dir = root / "models" / "start"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    policy = Policy.objects.create(name="start", base_path=str(model_dir))
    project = Project.objects.create(name="bench", current_policy=policy, overlap=1)
    labelling = Round.objects.create(project=project, number=1, policy=policy)
    user = User.objects.create(username="bench-annotator")
    for question, responses in texts:
        prompt = Prompt.objects.create(project=project, messages=question)
        task = RankingTask.objects.create(
            project=project, round=labelling, prompt=prompt, overlap=1
        )
        ids = [
            Response.objects.create(task=task, policy=policy, text=text, position=i).pk
            for i, text in enumerate(responses)
        ]
        Ranking.objects.create(task=task, annotator=user, order=[[i] for i in ids])
        task.ranking_count = 1
        task.save()
    return project, policy


def run_bare(
    method: str, model_dir: str, data: Path, out: Path, steps: int, batch: int
) -> tuple[float, float]:
    """Return the wall time of bench/bare_trl.py as a fresh process, and TRL's train_runtime."""
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bare_trl.py"),
            method,
            model_dir,
            str(data),
            str(out),
            "--steps",
            str(steps),
            "--batch",
            str(batch),
        ],
        check=True,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    runtime = json.loads(done.stdout.strip().splitlines()[-1])["train_runtime"]
    return time.perf_counter() - start, runtime


def run_platform(
    project, method: str, steps: int, batch: int, snapshot: str
) -> tuple[float, dict]:
    """Return the wall time from launch to the round's success, via the worker,
    and its parts: queue (launch to the job's start), stage (start to finish) and
    TRL's own train_runtime inside the stage."""
    from training.models import FINISHED, TrainingRound
    from training.tasks import launch

    options = {
        "snapshot": snapshot,
        method: {"max_steps": steps, "per_device_train_batch_size": batch},
    }
    if method == "reward":
        options[method]["eval_fraction"] = (
            0.0  # the bare script evaluates nothing either
        )
    from django.utils import timezone

    launched = timezone.now()
    training_round = launch(project, method, user=None, options=options)
    while True:
        # Polled slowly so this process takes no CPU from the stage; the time comes
        # from the round's own finish stamp, not from when this loop noticed it.
        status = TrainingRound.objects.values_list("status", flat=True).get(
            pk=training_round.pk
        )
        if status in FINISHED:
            break
        time.sleep(0.5)
    training_round.refresh_from_db()
    elapsed = (training_round.finished_at - launched).total_seconds()
    if status != "succeeded":
        raise SystemExit(f"platform {method} round {status}: {training_round.error}")
    job = training_round.jobs.get()
    parts = {
        "queue": (job.started_at - training_round.created_at).total_seconds(),
        "stage": (job.finished_at - job.started_at).total_seconds(),
        "train_runtime": job.last_metrics.get("train_runtime"),
        "after": (training_round.finished_at - job.finished_at).total_seconds(),
    }
    return elapsed, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=60, help="6 pairs each")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--methods", default="reward,dpo")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="train-overhead-"))
    setup_django(root)
    from annotation.export import export_snapshot
    from annotation.snapshots import freeze_snapshot

    project, policy = build_world(root, args.prompts)
    snapshot = freeze_snapshot(project, "bench")
    data = export_snapshot(snapshot, root / "data.jsonl")
    print(
        f"{snapshot.row_count} pairs, {args.steps} steps, batch {args.batch}; folder {root}"
    )

    worker = subprocess.Popen(
        # As platform/compose.yaml and `make run` start it (poll every 0.2 s).
        [
            sys.executable,
            "manage.py",
            "db_worker",
            "--no-reload",
            "--no-startup-delay",
            "--interval",
            "0.2",
        ],
        cwd=REPO,
        env=dict(os.environ),
        stdout=open(root / "worker.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(3)  # the worker boots once; a deployment keeps it running
        results: dict[str, dict[str, list[float]]] = {}
        for method in args.methods.split(","):
            for i in range(args.repeat):
                bare, bare_runtime = run_bare(
                    method,
                    policy.base_path,
                    data,
                    root / f"bare-{method}-{i}",
                    args.steps,
                    args.batch,
                )
                platform, parts = run_platform(
                    project, method, args.steps, args.batch, snapshot.name
                )
                results.setdefault(method, {"bare": [], "platform": []})
                results[method]["bare"].append(bare)
                results[method]["platform"].append(platform)
                print(
                    f"{method} run {i + 1}: bare TRL {bare:6.1f} s (train_runtime "
                    f"{bare_runtime:.1f})   platform {platform:6.1f} s (queue {parts['queue']:.1f}, "
                    f"stage {parts['stage']:.1f}, train_runtime {parts['train_runtime']:.1f}, "
                    f"after {parts['after']:.1f})   "
                    f"ratio {platform / bare:.3f}",
                    flush=True,
                )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    for method, times in results.items():
        ratios = [p / b for p, b in zip(times["platform"], times["bare"], strict=False)]
        print(
            f"{method}: median ratio platform/bare = {statistics.median(ratios):.3f} "
            f"(target <= 1.05; {len(ratios)} run(s), load average {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
