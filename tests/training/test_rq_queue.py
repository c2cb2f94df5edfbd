"""TASK_BACKEND=rq: rounds queued in Redis and run by a real `manage.py rqworker`.

The queue is the machine's Redis (tests/training/conftest.py, `rq_queue`), the worker
is django-rq's `rqworker` with the platform's worker class (training/rq_worker.py),
and the stages are the test stage "sleep", as in test_cancel_resume.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import django_rq
import pytest
from django.db import transaction
from django.utils import timezone
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from annotation.models import Snapshot
from annotation.snapshots import queue_freeze
from annotation.tasks import requeue_lost_rows
from config import task_queue
from tests.annotation.data_factories import annotators, make_task, rank
from tests.training.conftest import REPO_ROOT, wait_for
from tests.training.test_cancel_resume import (
    first_job,
    launch_sleep,
    running_past,
    wait_until_finished,
)
from training.models import Status, TrainingJob, TrainingRound
from training.tasks import (
    launch,
    reap_training_jobs,
    requeue_lost,
    resume,
    schedule_reaper,
)

pytestmark = pytest.mark.slow


def rq_job(task_id: str) -> Job | None:
    """Return the RQ job of a task id, or None where Redis has none."""
    connection = django_rq.get_connection("default")
    return Job.fetch_many([task_id], connection=connection)[0]


def redis_away(settings) -> dict:
    """Point the queues at a port where no Redis answers; return the reachable ones."""
    reachable = settings.RQ_QUEUES
    settings.RQ_QUEUES = {
        name: {"URL": "redis://127.0.0.1:1/0"} for name in settings.TASK_QUEUES
    }
    return reachable


def rank_three_tasks(project) -> None:
    """Three tasks of four responses, each ranked by two annotators: 36 pairs."""
    people = annotators(2)
    for i in range(3):
        task = make_task(project, f"Question {i}?")
        for person in people:
            rank(task, person, [[0], [1], [2], [3]])


def test_a_round_runs_on_rq_and_each_stage_queues_the_next(
    project, admin_user, start_policy, start_rq_worker
):
    worker = start_rq_worker()
    training_round = launch_sleep(
        project, admin_user, start_policy, method="sleep,sleep", steps=3
    )

    finished = wait_until_finished(training_round)

    first, second = TrainingJob.objects.filter(round=training_round).order_by("index")
    assert finished.status == Status.SUCCEEDED, worker.log.read_text()[-3000:]
    assert (first.step, second.step) == (3, 3)
    assert second.output_policy.parent == first.output_policy
    # Both tasks went through Redis: the second was queued by the first's worker.
    assert rq_job(first.task_id).func_name == "training.tasks.run_training_job"
    assert list(rq_job(second.task_id).args) == [second.pk]


def test_a_snapshot_freeze_queued_by_the_web_tier_runs_on_the_rq_worker(
    project, start_rq_worker
):
    rank_three_tasks(project)
    worker = start_rq_worker()

    queued = queue_freeze(project, "over-redis")

    done = wait_for(
        lambda: Snapshot.objects.filter(pk=queued.pk, status="done").first(),
        what=f"the freeze to finish ({worker.log})",
    )
    assert done.pairs.count() == 36


def test_a_task_reaches_redis_only_when_its_transaction_commits(
    project, admin_user, start_policy, rq_queue
):
    queue = django_rq.get_queue("default")
    with transaction.atomic():
        training_round = launch_sleep(project, admin_user, start_policy)
        # A worker taking it now would find no job row: nothing is queued yet.
        assert queue.count == 0
    job = first_job(training_round)
    assert queue.get_job_ids() == [job.task_id]

    with pytest.raises(RuntimeError), transaction.atomic():
        launch_sleep(project, admin_user, start_policy)
        raise RuntimeError("refused after the launch")
    assert queue.count == 1  # the rolled-back launch queued nothing
    assert TrainingRound.objects.count() == 1


def test_the_reaper_waits_on_redis_once(rq_queue):
    registry = ScheduledJobRegistry(queue=django_rq.get_queue("default"))
    path = reap_training_jobs.module_path

    schedule_reaper(queue="default", delay=timedelta(seconds=30))
    schedule_reaper(queue="default", delay=timedelta(seconds=40))

    assert registry.count == 1
    now = timezone.now()
    assert task_queue.waiting(path, "default", now + timedelta(seconds=31))
    assert not task_queue.waiting(path, "default", now + timedelta(seconds=20))
    assert not task_queue.waiting(path, "gpu", now + timedelta(seconds=31))
    # Due before the one waiting: a second, earlier one is scheduled.
    schedule_reaper(queue="default", delay=timedelta(seconds=5))
    assert registry.count == 2


def test_a_job_whose_task_redis_lost_is_queued_again_and_runs(
    project, admin_user, start_policy, rq_queue, start_rq_worker
):
    training_round = launch_sleep(project, admin_user, start_policy, steps=2)
    job = first_job(training_round)
    lost_id = job.task_id
    django_rq.get_connection("default").flushdb()  # Redis restarted without its data
    assert requeue_lost() == []  # queued just now: its task may be on its way
    TrainingRound.objects.filter(pk=training_round.pk).update(
        created_at=timezone.now() - timedelta(minutes=5)
    )

    start_rq_worker()  # at start it queues the job again (training/rq_worker.py)
    finished = wait_until_finished(training_round)

    job.refresh_from_db()
    assert finished.status == Status.SUCCEEDED
    assert job.task_id != lost_id
    assert requeue_lost() == []  # nothing queued is lost now


def test_a_launch_while_redis_is_away_lands_and_its_stage_is_queued_later(
    project, admin_user, start_policy, rq_queue, settings
):
    reachable = redis_away(settings)

    training_round = launch_sleep(project, admin_user, start_policy)

    job = first_job(training_round)
    assert (training_round.status, job.status, job.task_id) == ("queued", "queued", "")
    settings.RQ_QUEUES = reachable  # Redis is back
    assert requeue_lost() == []  # launched just now: left alone
    TrainingRound.objects.filter(pk=training_round.pk).update(
        created_at=timezone.now() - timedelta(minutes=5)
    )
    assert requeue_lost() == [job.pk]
    job.refresh_from_db()
    assert django_rq.get_queue("default").get_job_ids() == [job.task_id]


def test_a_freeze_queued_while_redis_is_away_is_queued_again_and_runs(
    project, admin_user, start_policy, settings, start_rq_worker
):
    rank_three_tasks(project)
    reachable = redis_away(settings)

    queued = queue_freeze(project, "while-away")  # the request does not fail
    training_round = launch(
        project, "dpo", user=admin_user, options={"policy": start_policy.name}
    )

    settings.RQ_QUEUES = reachable  # Redis is back
    assert training_round.snapshot.status == "queued"  # its first stage freezes it
    assert requeue_lost_rows() == [f"Snapshot {queued.pk}"]
    assert requeue_lost_rows() == []  # Redis holds its task now
    start_rq_worker()
    done = wait_for(
        lambda: Snapshot.objects.filter(pk=queued.pk, status="done").first(),
        what="the freeze to finish",
    )
    assert done.pairs.count() == 36


def test_a_cold_shutdown_stops_the_stage_and_the_round_resumes(
    project, admin_user, start_policy, start_rq_worker
):
    worker = start_rq_worker()
    training_round = launch_sleep(
        project,
        admin_user,
        start_policy,
        steps=400,
        step_seconds=0.05,
        checkpoint_every=5,
    )
    job = running_past(training_round, 10)
    stage_pid = job.pid
    worker.proc.send_signal(signal.SIGTERM)  # warm: it would wait for the stage
    time.sleep(1.2)  # RQ ignores a second signal within a second
    worker.proc.send_signal(signal.SIGTERM)  # cold: the task stops its stage
    worker.proc.wait(timeout=30)

    failed = wait_until_finished(training_round, timeout=10)
    job.refresh_from_db()
    assert failed.status == Status.FAILED
    assert "the worker stopped while the stage ran" in job.error
    assert "resume the round" in job.error
    with pytest.raises(ProcessLookupError):
        os.kill(stage_pid, 0)

    resume(failed, user=admin_user)
    start_rq_worker()
    finished = wait_until_finished(training_round, timeout=90)
    job.refresh_from_db()
    assert finished.status == Status.SUCCEEDED
    assert job.step == 400


def test_a_killed_worker_takes_its_task_and_stage_with_it(
    project, admin_user, start_policy, start_rq_worker
):
    """RQ's work horse would run on after its worker's SIGKILL; this one stops."""
    worker = start_rq_worker()
    training_round = launch_sleep(
        project, admin_user, start_policy, steps=400, step_seconds=0.05
    )
    job = running_past(training_round, 5)
    stage_pid = job.pid

    worker.kill()

    failed = wait_until_finished(training_round, timeout=20)
    job.refresh_from_db()
    assert failed.status == Status.FAILED
    assert "the worker stopped while the stage ran" in job.error
    assert job.step < 400
    with pytest.raises(ProcessLookupError):
        os.kill(stage_pid, 0)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TASK_BACKEND": "celery"}, "TASK_BACKEND='celery'"),
        ({"TASK_BACKEND": "rq", "REDIS_URL": "127.0.0.1:6379"}, "REDIS_URL='127.0"),
    ],
)
def test_a_queue_setting_that_cannot_work_is_refused_by_name(env, named):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert named in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_make_run_starts_the_worker_of_the_queue_it_uses(rq_queue):
    from demo.management.commands.run_demo import Command

    web, worker, inference = Command()._commands("127.0.0.1", 8000, 1)

    assert worker[1:] == ["manage.py", "rqworker", "default", "gpu", "--with-scheduler"]


def test_make_run_refuses_an_rq_queue_no_redis_answers_by_name(rq_queue, settings):
    from django.core.management import CommandError, call_command

    redis_away(settings)

    with pytest.raises(CommandError, match=r"REDIS_URL='redis://127\.0\.0\.1:1/0'"):
        call_command("run_demo", "--setup-only")
