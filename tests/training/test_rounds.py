"""Launching, cancelling and resuming rounds, and the reaper, without a worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from annotation.models import Snapshot
from annotation.snapshots import freeze_snapshot
from inference.models import Policy
from tests.annotation.data_factories import annotators, make_policy, make_task, rank
from training.jobs import freeze_round_snapshot
from training.models import Status, TrainingJob, TrainingRound
from training.reaper import current_worker, reap_stale_jobs
from training.rounds import cancel_round, parse_settings
from training.stages import parse_method
from training.tasks import launch, resume


@pytest.fixture
def deployed(project) -> Policy:
    policy = make_policy("demo-sft")
    project.current_policy = policy
    project.save()
    return policy


@pytest.fixture
def ranked(project, deployed) -> None:
    """Two tasks ranked by one annotator: 4 responses in 4 ranks give 6 pairs each."""
    user = annotators(1)[0]
    for prompt in ("What is 2 + 2?", "What is 3 + 3?"):
        rank(make_task(project, prompt), user, [[0], [1], [2], [3]])


def test_launch_freezes_a_snapshot_and_queues_the_first_stage_with_its_resolved_config(
    project, admin_user, ranked, deployed, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        training_round = launch(
            project,
            "dpo",
            user=admin_user,
            options={"queue": "gpu", "dpo": {"beta": "0.2"}},
        )

    job = training_round.jobs.get()
    task = DBTaskResult.objects.get(task_path="training.tasks.run_training_job")
    assert training_round.snapshot.status == "queued"  # frozen by the first stage
    freezes = DBTaskResult.objects.filter(task_path="annotation.tasks.freeze_task")
    assert not freezes.exists()  # no separate freeze job
    assert freeze_round_snapshot(job) == ""
    snapshot = Snapshot.objects.get(pk=training_round.snapshot_id)
    assert (snapshot.row_count, len(snapshot.sha256)) == (12, 64)
    assert freeze_round_snapshot(job) == ""  # the next stage: frozen already
    assert training_round.parent_policy == deployed
    assert (job.stage, job.status, job.index) == ("dpo", "queued", 0)
    assert job.config["beta"] == 0.2
    assert job.config["learning_rate"] == 5e-4
    assert job.config["base_path"] == "/models/demo-sft"
    assert (task.queue_name, task.args_kwargs["args"], str(task.id)) == (
        "gpu",
        [job.pk],
        job.task_id,
    )


def test_a_pipeline_gets_one_job_per_stage_in_order(project, admin_user, ranked):
    training_round = launch(project, "sft, reward, dpo", user=admin_user)

    assert list(training_round.jobs.values_list("index", "stage")) == [
        (0, "sft"),
        (1, "reward"),
        (2, "dpo"),
    ]
    assert training_round.method == "sft,reward,dpo"


def test_launch_refuses_a_snapshot_without_pairs_and_leaves_nothing_behind(
    project, admin_user, deployed
):
    with pytest.raises(
        ValidationError, match="has no preference pairs; collect rankings"
    ):
        launch(project, "dpo", user=admin_user)

    assert (Snapshot.objects.count(), TrainingRound.objects.count()) == (0, 0)
    assert DBTaskResult.objects.count() == 0


def test_a_round_whose_rankings_give_no_pairs_fails_its_first_stage_saying_so(
    project, admin_user, deployed
):
    """The launch only asks whether the project has rankings (a web request must
    not freeze); all ties give no pair, which the first stage finds in the worker."""
    rank(make_task(project, "What is 2 + 2?"), annotators(1)[0], [[0, 1, 2, 3]])
    training_round = launch(project, "dpo", user=admin_user)
    refused = freeze_round_snapshot(training_round.jobs.get())
    assert refused == (
        f"snapshot {training_round.snapshot.name} of project demo has no preference "
        "pairs; collect rankings (with at least two differing ranks) before training"
    )


def test_a_round_snapshot_whose_freeze_failed_is_frozen_again_on_resume(
    project, admin_user, ranked
):
    training_round = launch(project, "dpo", user=admin_user)
    Snapshot.any_state.filter(pk=training_round.snapshot_id).update(
        status="failed", error="the worker freezing this snapshot stopped"
    )
    name = training_round.snapshot.name
    with pytest.raises(ValidationError, match=f"already has a snapshot named '{name}'"):
        freeze_snapshot(project, name)  # the round's, failed or not
    job = TrainingJob.objects.get(round=training_round)
    assert freeze_round_snapshot(job) == ""
    assert Snapshot.objects.get(pk=training_round.snapshot_id).row_count == 12


def test_a_round_refuses_to_train_on_a_snapshot_still_running_elsewhere(
    project, admin_user, ranked
):
    training_round = launch(project, "dpo", user=admin_user)
    Snapshot.any_state.filter(pk=training_round.snapshot_id).update(
        status="running", heartbeat_at=timezone.now(), worker=current_worker()
    )
    refused = freeze_round_snapshot(TrainingJob.objects.get(round=training_round))
    assert refused.endswith("was not frozen (freezing); resume the round to try again")


def test_launch_refuses_a_project_without_a_current_policy(project, admin_user):
    with pytest.raises(ValidationError, match="project demo has no current policy"):
        launch(project, "dpo", user=admin_user)


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("dpo,warp", {}, r"unknown stage\(s\) \['warp'\]"),
        ("", {}, "method must name at least one stage"),
        ("ppo", {}, "stage ppo needs a reward model: put a reward stage before it"),
        ("grpo", {}, "stage grpo needs a reward model: put a reward stage before it"),
        (
            "reward,grpo",
            {"grpo": {"judge": "instructions"}},
            "stage grpo takes its reward from judge 'instructions', so the reward "
            "stage before it would train a reward model nothing uses: drop it",
        ),
        ("rloo", {"rloo": {"judge": "nope"}}, "no judge named 'nope'"),
        ("ppo", {"ppo": {"judge": "instructions"}}, "unknown PPOConfig option"),
        (
            "dpo",
            {"queue": "fast"},
            "queue must be one of \\['default', 'gpu'\\], got 'fast'",
        ),
        ("dpo", {"accelerate": "warp"}, "accelerate config 'warp' does not exist"),
        ("dpo", {"dpo": {"beta": "-1"}}, "beta must be > 0, got -1.0"),
        ("dpo", {"dpo": {"bogus": 1}}, r"unknown DPOConfig option\(s\) \['bogus'\]"),
        ("dpo", {"dpo": {"base_path": "/x"}}, "are set by the platform"),
        ("dpo", {"policy": "nope"}, "no registered policy named 'nope'"),
    ],
)
def test_launch_refuses_bad_input_with_a_message_naming_it(
    project, admin_user, ranked, method, options, message
):
    with pytest.raises(ValidationError, match=message):
        launch(project, method, user=admin_user, options=options)

    assert TrainingRound.objects.count() == 0


def test_settings_go_to_the_round_one_stage_or_every_stage_that_has_them():
    options = parse_settings(
        ["queue=gpu", "dpo.beta=0.3", "max_steps=5"], ["sft", "dpo"]
    )

    assert options == {
        "queue": "gpu",
        "dpo": {"beta": 0.3, "max_steps": 5},
        "sft": {"max_steps": 5},
    }


def test_a_setting_no_stage_has_is_refused():
    with pytest.raises(
        ValidationError, match="no stage of \\['dpo'\\] has an option 'warp'"
    ):
        parse_settings(["warp=1"], ["dpo"])


def test_method_accepts_arrows_and_spaces():
    assert parse_method("sft -> reward -> ppo") == ["sft", "reward", "ppo"]


def test_cancelling_a_queued_round_cancels_every_stage(project, admin_user, ranked):
    training_round = launch(project, "sft,dpo", user=admin_user)

    cancel_round(training_round, user=admin_user)

    training_round.refresh_from_db()
    assert training_round.status == Status.CANCELLED
    assert list(training_round.jobs.values_list("status", flat=True)) == [
        "cancelled",
        "cancelled",
    ]
    assert training_round.error.startswith("cancelled by admin1 at ")


def test_a_finished_round_cannot_be_cancelled(project, admin_user, ranked):
    training_round = launch(project, "dpo", user=admin_user)
    cancel_round(training_round, user=admin_user)

    with pytest.raises(
        ValidationError, match="is already cancelled; nothing to cancel"
    ):
        cancel_round(training_round, user=admin_user)


def test_resume_requeues_from_the_first_unfinished_stage(project, admin_user, ranked):
    training_round = launch(project, "sft,dpo", user=admin_user)
    TrainingJob.objects.filter(round=training_round, index=0).update(
        status=Status.SUCCEEDED
    )
    cancel_round(training_round, user=admin_user)

    job = resume(training_round, user=admin_user)

    training_round.refresh_from_db()
    assert (job.index, job.status) == (1, "queued")
    assert training_round.status == Status.QUEUED
    assert DBTaskResult.objects.filter(args_kwargs__args=[job.pk]).count() == 1


def test_a_queued_round_cannot_be_resumed(project, admin_user, ranked):
    training_round = launch(project, "dpo", user=admin_user)

    with pytest.raises(
        ValidationError, match="is queued; only a failed or cancelled round"
    ):
        resume(training_round, user=admin_user)


def test_the_reaper_fails_a_running_job_silent_for_more_than_a_minute(
    project, admin_user, ranked
):
    training_round = launch(project, "dpo", user=admin_user)
    now = timezone.now()
    job = training_round.jobs.get()
    TrainingJob.objects.filter(pk=job.pk).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now
    )

    assert reap_stale_jobs(now=now + timedelta(seconds=59)) == []
    assert reap_stale_jobs(now=now + timedelta(seconds=61)) == [job.pk]

    job.refresh_from_db()
    training_round.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.error.startswith("no heartbeat for 61 s")
    assert training_round.status == Status.FAILED
    assert (
        training_round.error == "stage 1 (dpo) lost its worker (no heartbeat for 61 s)"
    )


def test_the_reaper_never_fails_a_job_whose_process_runs_here_however_silent(
    project, admin_user, ranked
):
    """A runner of this host that is slow to write its heartbeat (a stage preparing
    its data, a busy database, `run_loop` running the stage itself) is not a lost
    worker: its process is asked, not the clock."""
    training_round = launch(project, "dpo", user=admin_user)
    now = timezone.now()
    job = training_round.jobs.get()
    TrainingJob.objects.filter(pk=job.pk).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now, worker=current_worker()
    )

    assert reap_stale_jobs(now=now + timedelta(minutes=10)) == []
    job.refresh_from_db()
    assert job.status == Status.RUNNING
    # Its stage process is gone, though, and the row still says running: the runner
    # lost track of it (the database was away when the stage ended). Silence counts.
    dead_pid = int(dead_process_identity().rsplit(":", 2)[1])
    TrainingJob.objects.filter(pk=job.pk).update(pid=dead_pid)
    assert reap_stale_jobs(now=now + timedelta(seconds=59)) == []
    assert reap_stale_jobs(now=now + timedelta(seconds=61)) == [job.pk]


def dead_process_identity() -> str:
    """Return the worker identity of a process of this host that has exited."""
    import subprocess
    import sys

    pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return current_worker().rsplit(":", 2)[0] + f":{pid}:12345"


def test_the_reaper_fails_at_once_a_running_job_whose_worker_process_is_gone(
    project, admin_user, ranked
):
    training_round = launch(project, "dpo", user=admin_user)
    now = timezone.now()
    job = training_round.jobs.get()
    TrainingJob.objects.filter(pk=job.pk).update(
        status=Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker=dead_process_identity(),
    )

    assert reap_stale_jobs(now=now + timedelta(seconds=1)) == [job.pk]

    job.refresh_from_db()
    training_round.refresh_from_db()
    assert job.status == Status.FAILED
    assert "is gone" in job.error
    assert training_round.status == Status.FAILED
    assert training_round.error == "stage 1 (dpo) lost its worker (its process is gone)"


def test_the_reaper_leaves_a_job_whose_worker_lives_or_runs_on_another_host(
    project, admin_user, ranked
):
    training_round = launch(project, "sft,dpo", user=admin_user)
    now = timezone.now()
    here, elsewhere = training_round.jobs.order_by("index")
    TrainingJob.objects.filter(pk=here.pk).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now, worker=current_worker()
    )
    TrainingJob.objects.filter(pk=elsewhere.pk).update(
        status=Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker="another-host:" + dead_process_identity().split(":", 1)[1],
    )

    assert reap_stale_jobs(now=now + timedelta(seconds=1)) == []
    # Another container of this host (another pid namespace): its pids are not ours.
    import socket

    pid = dead_process_identity().rsplit(":", 2)[1]
    TrainingJob.objects.filter(pk=elsewhere.pk).update(
        worker=f"{socket.gethostname()}/1:{pid}:12345"
    )
    assert reap_stale_jobs(now=now + timedelta(seconds=1)) == []
    # A process id reused by another process is not the worker that ran the job.
    machine, pid, _ = current_worker().rsplit(":", 2)
    TrainingJob.objects.filter(pk=here.pk).update(worker=f"{machine}:{pid}:1")
    assert reap_stale_jobs(now=now + timedelta(seconds=1)) == [here.pk]


def test_a_claimed_job_records_the_process_that_runs_it(project, admin_user, ranked):
    from training.jobs import start_job

    job = launch(project, "dpo", user=admin_user).jobs.get()

    assert start_job(job.pk).worker == current_worker()
    job.refresh_from_db()
    assert job.worker == current_worker()
    assert start_job(job.pk) is None  # a second runner finds nothing to claim


def test_a_stage_is_not_claimed_before_every_stage_before_it_succeeded(
    project, admin_user, ranked
):
    """It starts from their outputs: claimed early, it would train on a folder that
    is not there yet (what `run_loop` beside a db_worker once did)."""
    from pathlib import Path

    from training.jobs import finish_job, next_job, start_job

    training_round = launch(project, "sft,dpo", user=admin_user)
    first, second = training_round.jobs.order_by("index")

    assert next_job(training_round) == first
    assert start_job(second.pk) is None
    assert start_job(first.pk) is not None
    assert next_job(training_round) is None  # stage 1 runs
    assert start_job(second.pk) is None
    Path(first.run_dir).mkdir(parents=True)
    Path(first.run_dir, "result.json").write_text('{"loss": 0.5}')
    finish_job(first.pk, succeeded=True, stopped=False)

    assert next_job(training_round) == second
    assert start_job(second.pk).status == Status.RUNNING


def test_the_reaper_is_queued_on_the_queue_of_the_round(project, admin_user, ranked):
    launch(project, "dpo", user=admin_user, options={"queue": "gpu"})

    assert DBTaskResult.objects.filter(
        task_path="training.tasks.reap_training_jobs", queue_name="gpu", status="READY"
    ).exists()


def test_the_launch_command_queues_a_round_with_its_settings(
    project, admin_user, ranked
):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command(
        "launch_round",
        "--project",
        "demo",
        "--method",
        "sft,dpo",
        "--set",
        "dpo.beta=0.3",
        "--set",
        "max_steps=4",
        "--user",
        "admin1",
        stdout=out,
    )

    training_round = TrainingRound.objects.get()
    configs = dict(training_round.jobs.values_list("stage", "config"))
    assert out.getvalue().startswith(
        f"training round {training_round.pk} queued: sft,dpo from demo-sft"
    )
    assert (
        configs["dpo"]["beta"],
        configs["dpo"]["max_steps"],
        configs["sft"]["max_steps"],
    ) == (0.3, 4, 4)
    assert training_round.created_by == admin_user


def test_the_launch_command_reports_a_refusal_as_a_command_error(project, deployed):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="has no preference pairs"):
        call_command("launch_round", "--project", "demo", "--method", "dpo")


def test_the_cancel_and_resume_commands_act_on_the_round(project, admin_user, ranked):
    from io import StringIO

    from django.core.management import CommandError, call_command

    training_round = launch(project, "dpo", user=admin_user)
    out = StringIO()

    call_command("cancel_round", str(training_round.pk), stdout=out)
    call_command("resume_round", str(training_round.pk), stdout=out)

    training_round.refresh_from_db()
    assert out.getvalue().splitlines() == [
        f"training round {training_round.pk} cancelled",
        f"training round {training_round.pk} resumes at stage 1 (dpo)",
    ]
    assert training_round.status == Status.QUEUED
    with pytest.raises(
        CommandError, match="is queued; only a failed or cancelled round"
    ):
        call_command("resume_round", str(training_round.pk))


def test_the_deploy_command_deploys_and_rolls_back(project, deployed, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    newer = Policy.objects.create(name="newer", base_path=str(tmp_path))
    out = StringIO()

    call_command("deploy_policy", "newer", "--project", "demo", stdout=out)
    project.refresh_from_db()
    assert project.current_policy == newer
    call_command("deploy_policy", "--project", "demo", "--rollback", stdout=out)
    project.refresh_from_db()
    assert project.current_policy == deployed
    assert out.getvalue().splitlines() == [
        "newer is the current policy of demo",
        "demo-sft is the current policy of demo",
    ]


def test_a_round_that_trains_a_policy_ends_with_an_evaluation_on_held_out_prompts(
    project, admin_user, ranked, deployed
):
    from annotation.models import Prompt

    Prompt.objects.create(project=project, messages="Held out?", is_held_out=True)

    training_round = launch(
        project, "reward,grpo", user=admin_user, options={"evaluate": {"prompts": 3}}
    )

    stages = list(training_round.jobs.values_list("stage", flat=True))
    evaluate = training_round.jobs.get(stage="evaluate")
    assert stages == ["reward", "grpo", "evaluate"]
    assert training_round.method == "reward,grpo"
    assert (evaluate.config["prompts"], evaluate.config["judge"]) == (3, "")
    assert evaluate.config["parent_base_path"] == "/models/demo-sft"


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_a_group_stage_scored_by_a_judge_launches_without_a_reward_stage(
    project, admin_user, ranked, method
):
    training_round = launch(
        project,
        method,
        user=admin_user,
        options={method: {"judge": "instructions"}, "evaluate": False},
    )

    (job,) = training_round.jobs.all()
    assert job.stage == method
    assert (job.config["judge"], job.config["judge_path"]) == (
        "instructions",
        "inference.instructions:JUDGE",
    )
    assert job.config["reward_model_path"] == ""


def test_rankings_by_a_judge_annotator_make_the_evaluation_ask_that_judge(
    project, admin_user, ranked
):
    from annotation.models import Prompt
    from annotation.simulated import simulated_user

    Prompt.objects.create(project=project, messages="Held out?", is_held_out=True)
    judge = simulated_user(
        "sim-judge-1", "noisy(judge, flip=0.1, tie=0, skip=0, seed=1)"
    )
    rank(make_task(project, "What is 4 + 4?"), judge, [[0], [1], [2], [3]])

    training_round = launch(project, "dpo", user=admin_user)

    evaluate = training_round.jobs.get(stage="evaluate")
    assert (evaluate.config["judge"], evaluate.config["judge_path"]) == (
        "demo",
        "demo.world:JUDGE",
    )


def test_rankings_by_an_annotator_naming_its_judge_make_the_evaluation_ask_it(
    project, admin_user, ranked
):
    from annotation.models import Prompt
    from annotation.simulated import JudgeAnnotator, NoisyAnnotator, simulated_user
    from inference.judges import get_judge

    Prompt.objects.create(project=project, messages="Held out?", is_held_out=True)
    annotator = NoisyAnnotator(
        JudgeAnnotator(get_judge("instructions"), "instructions"), flip_rate=0.1
    )
    judge = simulated_user("sim-judge-1", annotator.simulator)
    rank(make_task(project, "What is 4 + 4?"), judge, [[0], [1], [2], [3]])

    training_round = launch(project, "dpo", user=admin_user)

    evaluate = training_round.jobs.get(stage="evaluate")
    assert (evaluate.config["judge"], evaluate.config["judge_path"]) == (
        "instructions",
        "inference.instructions:JUDGE",
    )


def test_an_evaluation_naming_an_unknown_judge_is_refused(project, admin_user, ranked):
    from annotation.models import Prompt

    Prompt.objects.create(project=project, messages="Held out?", is_held_out=True)

    # The user's input: a ValidationError, which the API and the page show as such.
    with pytest.raises(ValidationError) as error:
        launch(
            project, "dpo", user=admin_user, options={"evaluate": {"judge": "ifeval"}}
        )
    assert (
        "no judge named 'ifeval'; registered judges: ['demo', 'instructions']"
        in str(error.value)
    )


def test_evaluation_can_be_switched_off_and_is_skipped_without_held_out_prompts(
    project, admin_user, ranked
):
    off = launch(project, "dpo", user=admin_user, options={"evaluate": "false"})
    skipped = launch(project, "dpo", user=admin_user)

    assert list(off.jobs.values_list("stage", flat=True)) == ["dpo"]
    assert off.config["evaluate"] is False
    assert (
        skipped.config["evaluate_skipped"] == "the project has no held-out test prompts"
    )


def test_a_stage_starts_from_the_outputs_of_the_stages_before_it(
    project, admin_user, ranked, run_root
):
    from pathlib import Path

    from training.jobs import start_job

    training_round = launch(project, "sft,reward,ppo", user=admin_user)
    sft, reward, ppo = training_round.jobs.order_by("index")
    Path(sft.run_dir, "output").mkdir(parents=True)
    Path(sft.run_dir, "output", "adapter_config.json").write_text(
        "{}"
    )  # a LoRA adapter
    Path(reward.run_dir, "output").mkdir(parents=True)  # a whole model
    TrainingJob.objects.filter(pk__in=[sft.pk, reward.pk]).update(
        status=Status.SUCCEEDED
    )
    TrainingJob.objects.filter(pk=ppo.pk).update(status=Status.QUEUED)

    started = start_job(ppo.pk)

    assert started.status == Status.RUNNING
    assert (started.config["base_path"], started.config["adapter_path"]) == (
        "/models/demo-sft",
        str(Path(sft.run_dir) / "output"),
    )
    assert started.config["reward_model_path"] == str(Path(reward.run_dir) / "output")
    assert TrainingJob.objects.get(pk=ppo.pk).config == started.config


def test_a_reward_ensemble_reaches_the_ppo_stage_as_the_registered_folders(
    project, admin_user, ranked, run_root
):
    from pathlib import Path

    from training.jobs import start_job

    for name in ("rm-1", "rm-2"):
        Policy.objects.create(
            name=name, base_path=f"/models/{name}", kind=Policy.Kind.REWARD_MODEL
        )
    training_round = launch(
        project,
        "reward,ppo",
        user=admin_user,
        options={"reward_ensemble": "rm-1, rm-2", "evaluate": False},
    )
    reward, ppo = training_round.jobs.order_by("index")
    assert training_round.config["reward_ensemble"] == ["rm-1", "rm-2"]
    assert ppo.config["reward_ensemble_paths"] == ["/models/rm-1", "/models/rm-2"]
    assert "reward_ensemble_paths" not in reward.config  # the reward stage has none

    Path(reward.run_dir, "output").mkdir(parents=True)
    TrainingJob.objects.filter(pk=reward.pk).update(status=Status.SUCCEEDED)
    TrainingJob.objects.filter(pk=ppo.pk).update(status=Status.QUEUED)
    started = start_job(ppo.pk)
    assert started.config["reward_model_path"] == str(Path(reward.run_dir) / "output")
    assert started.config["reward_ensemble_paths"] == ["/models/rm-1", "/models/rm-2"]


@pytest.mark.parametrize(
    ("method", "ensemble", "message"),
    [
        (
            "reward,ppo",
            ["nope"],
            "reward_ensemble names 'nope', which is no registered",
        ),
        ("reward,ppo", ["demo-sft"], "reward_ensemble names 'demo-sft', which is no"),
        ("dpo", ["rm-1"], "reward_ensemble is for a stage that scores with reward"),
        ("reward,ppo", [f"rm-{i}" for i in range(8)], "reward_ensemble names 8 reward"),
        ("reward,ppo", {"rm-1": 1}, "reward_ensemble must be a list of registered"),
    ],
)
def test_a_bad_reward_ensemble_is_refused_naming_it(
    project, admin_user, ranked, method, ensemble, message
):
    Policy.objects.create(
        name="rm-1", base_path="/models/rm-1", kind=Policy.Kind.REWARD_MODEL
    )
    with pytest.raises(ValidationError, match=message):
        launch(project, method, user=admin_user, options={"reward_ensemble": ensemble})
    assert TrainingRound.objects.count() == 0


@pytest.mark.parametrize("method", ["reward,ppo", "reward,grpo", "reward,rloo"])
def test_the_reward_stages_own_members_join_the_named_ensemble(
    project, admin_user, ranked, run_root, method
):
    from pathlib import Path

    from training.jobs import start_job

    Policy.objects.create(
        name="rm-1", base_path="/models/rm-1", kind=Policy.Kind.REWARD_MODEL
    )
    training_round = launch(
        project,
        method,
        user=admin_user,
        options={
            "reward_ensemble": ["rm-1"],
            "reward": {"ensemble_size": 3},
            "evaluate": False,
        },
    )
    reward, online = training_round.jobs.order_by("index")
    output = Path(reward.run_dir, "output")
    for member in ("2", "1", "10-not-a-member"):
        (output / "members" / member).mkdir(parents=True)
    TrainingJob.objects.filter(pk=reward.pk).update(status=Status.SUCCEEDED)
    TrainingJob.objects.filter(pk=online.pk).update(status=Status.QUEUED)

    started = start_job(online.pk)

    assert started.config["reward_model_path"] == str(output)
    assert started.config["reward_ensemble_paths"] == [
        "/models/rm-1",
        str(output / "members" / "1"),
        str(output / "members" / "2"),
    ]


def test_an_ensemble_of_more_than_eight_reward_models_is_refused(
    project, admin_user, ranked
):
    for i in range(3):
        Policy.objects.create(
            name=f"rm-{i}", base_path=f"/models/rm-{i}", kind=Policy.Kind.REWARD_MODEL
        )
    with pytest.raises(ValidationError, match="make 9 reward models; an ensemble has"):
        launch(
            project,
            "reward,ppo",
            user=admin_user,
            options={
                "reward_ensemble": ["rm-0", "rm-1", "rm-2"],
                "reward": {"ensemble_size": 6},
            },
        )
    assert TrainingRound.objects.count() == 0


def test_the_launch_form_offers_merged_reward_models_for_the_ensemble(
    project, deployed
):
    from training.forms import LaunchForm

    for name, adapter in (("rm-a", ""), ("rm-b", ""), ("rm-lora", "/models/x")):
        Policy.objects.create(
            name=name,
            base_path="/models/base",
            adapter_path=adapter,
            kind=Policy.Kind.REWARD_MODEL,
        )
    offered = [c for c, _ in LaunchForm().fields["reward_ensemble"].choices]
    assert sorted(str(c) for c in offered) == ["rm-a", "rm-b"]
    form = LaunchForm(
        {
            "project": project.name,
            "method": "reward,ppo",
            "queue": "default",
            "reward_ensemble": ["rm-b", "rm-a"],
        }
    )
    assert form.is_valid(), form.errors
    assert form.launch_options()["reward_ensemble"] == ["rm-a", "rm-b"]


def test_an_ensemble_member_that_is_an_adapter_is_refused(project, admin_user, ranked):
    Policy.objects.create(
        name="rm-lora",
        base_path="/models/base",
        adapter_path="/models/rm-lora",
        kind=Policy.Kind.REWARD_MODEL,
    )
    with pytest.raises(ValidationError, match="rm-lora is an adapter"):
        launch(
            project,
            "reward,ppo",
            user=admin_user,
            options={"reward_ensemble": ["rm-lora"]},
        )


@pytest.mark.parametrize(
    "field, text, value",
    [
        ("beta", "0.5", 0.5),
        ("max_steps", "12", 12),
        ("use_lora", "false", False),
        ("loss_type", "sigmoid,sft", ["sigmoid", "sft"]),
        ("loss_type", '["ipo"]', ["ipo"]),
        ("loss_weights", "1,0.5", [1.0, 0.5]),
        ("trl_args", '{"max_grad_norm": 0.5}', {"max_grad_norm": 0.5}),
    ],
)
def test_text_settings_become_the_config_field_types(field, text, value):
    assert parse_settings([f"dpo.{field}={text}"], ["dpo"]) == {"dpo": {field: value}}


def test_round_folders_differ_for_rounds_that_share_an_id(db, tmp_path, settings):
    """A reset database reuses ids; a stage must never find another round's checkpoints."""
    from datetime import timedelta
    from types import SimpleNamespace

    from django.utils import timezone

    from training.jobs import round_dir

    settings.RUN_DIR = tmp_path
    now = timezone.now()
    first = SimpleNamespace(pk=7, created_at=now)
    second = SimpleNamespace(pk=7, created_at=now + timedelta(seconds=1))
    assert round_dir(first) != round_dir(second)
    assert round_dir(first).parent == tmp_path


@pytest.mark.parametrize(
    "error, gist",
    [
        (
            "stage process ended with exit status 1.\n--- end of stage.log ---\nTraceback:\n"
            '  File "x.py"\nValueError: max_length 8 leaves no room\nTokenizing: 100%|##| 7/7\r',
            "ValueError: max_length 8 leaves no room",
        ),
        (
            "stage process ended with killed by SIGKILL.\n--- end of stage.log ---\n"
            "Dropping fully truncated examples: 100%|##| 7/7",
            "stage process ended with killed by SIGKILL.",
        ),
        ("", "no error text"),
    ],
)
def test_the_error_gist_names_the_exception_not_the_last_progress_bar(error, gist):
    from training.jobs import error_gist

    assert error_gist(error) == gist


def test_the_round_workflow_writes_the_database_and_the_caller_queues(
    project, admin_user, ranked
):
    from training import rounds

    training_round = rounds.launch_round(project, "sft,dpo", user=admin_user)

    assert training_round.jobs.get(index=0).status == Status.QUEUED
    assert DBTaskResult.objects.count() == 0  # training.tasks.launch queues it


def test_a_finished_stage_hands_back_the_next_one_and_the_worker_queues_it(
    project, admin_user, ranked
):
    from pathlib import Path

    from training.jobs import finish_job, start_job
    from training.tasks import _finish

    training_round = launch(project, "sft,dpo,sft", user=admin_user)
    first, second, third = training_round.jobs.order_by("index")
    for job in (first, second):
        Path(job.run_dir).mkdir(parents=True)
        Path(job.run_dir, "result.json").write_text('{"loss": 0.5}')

    start_job(first.pk)
    ended, following = finish_job(first.pk, succeeded=True, stopped=False)
    assert (ended.status, following) == (Status.SUCCEEDED, second)
    assert not DBTaskResult.objects.filter(args_kwargs__args=[second.pk]).exists()

    start_job(second.pk)
    assert _finish(second.pk, succeeded=True, stopped=False).status == "succeeded"
    third.refresh_from_db()
    assert (
        str(DBTaskResult.objects.get(args_kwargs__args=[third.pk]).id) == third.task_id
    )


def test_the_round_workflow_and_the_job_lifecycle_do_not_import_the_task_queue():
    import ast

    from tests.training.conftest import REPO_ROOT

    for module in ("rounds", "jobs", "stages"):
        tree = ast.parse((REPO_ROOT / "training" / f"{module}.py").read_text())
        imported = {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert "training.tasks" not in imported, module


def test_a_stage_killed_by_sigkill_says_memory_is_the_likely_cause(tmp_path):
    from training.supervisor import Outcome
    from training.tasks import failure_text

    (tmp_path / "stage.log").write_text("Loading weights: 100%\n")
    killed = Outcome(
        returncode=-9, stop_requested=False, escalation="", has_result=False
    )
    text = failure_text(killed, tmp_path)
    assert text.startswith("stage process ended with killed by SIGKILL")
    assert "out-of-memory killer" in text and "gradient_accumulation_steps" in text
    failed = Outcome(
        returncode=1, stop_requested=False, escalation="", has_result=False
    )
    assert "memory" not in failure_text(failed, tmp_path)


def test_a_stage_that_heartbeats_without_progress_is_marked_on_its_page(
    project, admin_user, ranked, settings
):
    """A hung stage still heartbeats (its worker lives), so the reaper rightly leaves
    it; the page says how long it has gone without a progress line instead."""
    from tests.conftest import login
    from training.tasks import JobWatcher

    settings.STAGE_STALL_MINUTES = 30
    training_round = launch(project, "dpo", user=admin_user)
    job = training_round.jobs.get()
    start = timezone.now() - timedelta(minutes=45)
    TrainingJob.objects.filter(pk=job.pk).update(
        status=Status.RUNNING, started_at=start, heartbeat_at=start, progress_at=start
    )
    watcher = JobWatcher(TrainingJob.objects.get(pk=job.pk))
    watcher.tick([])  # a heartbeat alone: the worker lives, the stage has not moved
    job.refresh_from_db()
    assert job.heartbeat_at > start + timedelta(minutes=44)
    assert job.progress_at == start
    page = login(admin_user).get(training_round.get_absolute_url()).content.decode()
    assert "No progress from this stage for 45 minutes" in page

    watcher.tick([{"step": 3, "total": 10, "loss": 0.6}])
    job.refresh_from_db()
    assert job.progress_at > start + timedelta(minutes=44)
    page = login(admin_user).get(training_round.get_absolute_url()).content.decode()
    assert "No progress from this stage" not in page
    assert "last progress" in page
