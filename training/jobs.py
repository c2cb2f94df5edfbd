"""The job lifecycle: claim a queued stage, write its run directory, record how it ended.

A `TrainingJob` is one stage of a round. The worker's task (training/tasks.py)
claims it with `start_job` (its config then gets the inputs from the stages
before it), writes the run directory with `prepare_run_dir`, and records the end
with `finish_job`, which moves the round on: it returns the next stage's job for
the caller to queue, or, after the last stage, registers every artifact of the
round in one transaction (policies with their parent, snapshot name and hash,
resolved config); a cancelled or failed round registers nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from config.workers import current_worker
from inference.judges import judge_path
from inference.models import Policy
from training.models import FINISHED, Status, TrainingJob, TrainingRound
from training.progress import (
    CONFIG_FILE,
    LOG_FILE,
    OUTPUT_DIR,
    RESULT_FILE,
    STOP_FILE,
    Reporter,
)
from training.reward import ensemble_members
from training.stages import INPUT_FIELDS, get_stage, resolve_config


def policy_inputs(policy: Policy) -> dict[str, str]:
    """Return the inputs naming `policy` as the starting policy and as the parent."""
    return {
        "base_path": policy.base_path,
        "adapter_path": policy.adapter_path,
        "parent_base_path": policy.base_path,
        "parent_adapter_path": policy.adapter_path,
    }


def reward_inputs(policy: Policy) -> dict[str, str]:
    """Return the inputs naming a registered reward model; it must be one merged folder."""
    if policy.adapter_path:
        raise ValidationError(
            f"reward model {policy.name} is an adapter on {policy.base_path}; the online "
            "stages need a merged reward model folder (a reward stage saves one)"
        )
    return {"reward_model_path": policy.base_path}


def ensemble_inputs(names: list[str]) -> dict[str, list[str]]:
    """Return the input naming the registered reward models of a round's
    `reward_ensemble` option (each one merged folder, as `reward_inputs` checks)."""
    if not names:
        return {}
    paths = []
    for name in names:
        policy = Policy.objects.filter(name=name, kind=Policy.Kind.REWARD_MODEL).first()
        if policy is None:
            raise ValidationError(
                f"reward_ensemble names {name!r}, which is no registered reward model; "
                "see the registry page"
            )
        paths.append(reward_inputs(policy)["reward_model_path"])
    return {"reward_ensemble_paths": paths}


def judge_inputs(config: dict[str, Any]) -> dict[str, str]:
    """Return the path of the judge a stage's config names, looked up here: the
    stage's child process has no app registry to find it by name. Raise
    ValidationError naming the registered judges when there is none by that name."""
    if not config.get("judge"):
        return {}
    try:
        return {"judge_path": judge_path(config["judge"])}
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def round_dir(training_round: TrainingRound) -> Path:
    """Return the folder holding the round's data files and its stages' run directories.

    The creation time is part of the name: ids restart with a new database (a test
    run, a reset), and a stage must never resume from another round's checkpoint.
    """
    stamp = training_round.created_at.strftime("%Y%m%dT%H%M%S%f")
    return Path(settings.RUN_DIR) / f"round-{training_round.pk}-{stamp}"


def _inputs_for(job: TrainingJob) -> dict[str, Any]:
    """Return the artifact paths this job starts from (the previous stages' outputs)
    and the path of the judge it names."""
    training_round = job.round
    inputs = policy_inputs(training_round.parent_policy)
    reward_name = training_round.config.get("reward_model")
    if reward_name:
        inputs.update(reward_inputs(Policy.objects.get(name=reward_name)))
    inputs.update(ensemble_inputs(training_round.config.get("reward_ensemble") or []))
    inputs.update(judge_inputs(job.config))
    for earlier in training_round.jobs.filter(index__lt=job.index).order_by("index"):
        produces = get_stage(earlier.stage).produces
        if not produces:
            continue
        base, adapter = artifact_paths(earlier)
        if produces == Policy.Kind.REWARD_MODEL:
            inputs["reward_model_path"] = base
            # A reward stage's further ensemble members join the round's named ones.
            members = ensemble_members(base)
            if members:
                inputs["reward_ensemble_paths"] = [
                    *inputs.get("reward_ensemble_paths", []),
                    *members,
                ]
        else:
            inputs.update({"base_path": base, "adapter_path": adapter})
    return inputs


def artifact_paths(job: TrainingJob) -> tuple[str, str]:
    """Return (base_path, adapter_path) of a finished job's artifact.

    A LoRA artifact (adapter_config.json in the output) sits on the base the job
    started from; any other artifact is a whole model.
    """
    output = Path(job.output_path or Path(job.run_dir) / OUTPUT_DIR)
    if (output / "adapter_config.json").is_file():
        return job.config.get("base_path", ""), str(output)
    return str(output), ""


def next_job(training_round: TrainingRound) -> TrainingJob | None:
    """Return the round's stage that may start now: its first stage not succeeded, if
    it is queued; None while a stage runs or after the round's end.

    A stage reads the outputs of the stages before it, so it starts only after every
    one of them succeeded (`start_job` refuses it before).
    """
    job = training_round.jobs.exclude(status=Status.SUCCEEDED).order_by("index").first()
    return job if job is not None and job.status == Status.QUEUED else None


def start_job(job_id: int) -> TrainingJob | None:
    """Claim a queued job for this worker: mark it and its round running.

    Exactly one runner claims a job: the db_worker that took its task, or a process
    that runs stages itself (`manage.py run_loop`) beside it. The claim is one
    conditional UPDATE (queued -> running) under the row lock, so of two runners
    the second finds nothing to claim, whatever the database's locking. A job
    whose earlier stages have not all succeeded is not claimed: its inputs are
    not there yet. Record this process as the job's worker (the reaper fails the
    job as soon as that process is gone). Fill the job's inputs from the stages
    before it (the config on the row is then exactly what the child receives).
    Return None, and start nothing, when the job is not queued any more, when an
    earlier stage has not succeeded, or when its round was cancelled (its job is
    then cancelled).
    """
    now = timezone.now()
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update()
            .select_related("round")
            .get(pk=job_id)
        )
        training_round = TrainingRound.objects.select_for_update().get(pk=job.round_id)
        if job.status != Status.QUEUED:
            return None
        if training_round.status == Status.CANCELLED:
            job.status, job.finished_at = Status.CANCELLED, now
            job.save(update_fields=["status", "finished_at"])
            return None
        if next_job(training_round) != job:
            return None
        job.config = resolve_config(
            job.stage,
            {k: v for k, v in job.config.items() if k not in INPUT_FIELDS},
            _inputs_for(job),
        )
        job.status = Status.RUNNING
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.finished_at = None
        job.error = ""
        job.pid = None
        job.worker = current_worker()
        fields = ("config", "status", "started_at", "heartbeat_at", "finished_at")
        claimed = TrainingJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
            **{name: getattr(job, name) for name in fields},
            error="",
            pid=None,
            worker=job.worker,
        )
        if claimed != 1:
            return None
        training_round.status = Status.RUNNING
        training_round.save(update_fields=["status"])
    return job


def freeze_round_snapshot(job: TrainingJob) -> str:
    """Freeze the round's snapshot if its launch queued it (`training.rounds.
    _snapshot_for`), here in the worker before the stage; return why the round cannot
    train on it, or '' when it can.

    A freeze that failed (or whose worker was lost) is queued again, so resuming
    the round retries it. Internal errors propagate (the job fails with them).
    """
    from annotation.models import Snapshot
    from annotation.snapshots import fail_lost_freezes, run_freeze
    from training.rounds import no_pairs

    snapshot = job.round.snapshot
    if snapshot is None or snapshot.status == Snapshot.Status.DONE:
        return ""
    fail_lost_freezes()
    Snapshot.any_state.filter(pk=snapshot.pk, status=Snapshot.Status.FAILED).update(
        status=Snapshot.Status.QUEUED, progress=0.0, error="", finished_at=None
    )
    frozen = run_freeze(snapshot.pk)
    job.round.snapshot = frozen
    if frozen.status != Snapshot.Status.DONE:
        return (
            f"the round's snapshot {frozen.name} was not frozen ("
            f"{frozen.error or frozen.get_status_display().lower()}); resume the "
            "round to try again"
        )
    if frozen.row_count == 0:
        return no_pairs(job.round.project, f"snapshot {frozen.name}")
    return ""


def prepare_run_dir(job: TrainingJob) -> Path:
    """Write config.json and the training data; clear what a stopped run left behind.

    Checkpoints and progress stay, so a resumed stage continues from its newest
    complete checkpoint; a half-written output or checkpoint (a stage killed while
    saving) and an old STOP file go.
    """
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    removed = Reporter(run_dir).remove_incomplete_checkpoints()
    if removed:
        with open(run_dir / LOG_FILE, "a", encoding="utf-8") as log:
            log.write(f"removed half-written checkpoints: {', '.join(removed)}\n")
    if not (run_dir / RESULT_FILE).exists():
        shutil.rmtree(run_dir / OUTPUT_DIR, ignore_errors=True)
    data_path = None
    spec = get_stage(job.stage)
    fmt = spec.data
    if fmt == "prompts":
        data_path = run_dir / "held-out-prompts.jsonl"
        from annotation.pool import held_out_prompts

        prompts = held_out_prompts(
            job.round.project, int(job.config.get("prompts", 16)), "test"
        )
        data_path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    elif fmt == "corpus":
        data_path = Path(job.round.corpus.path)
    elif fmt == "sft" and job.round.demonstrations_id:
        data_path = Path(job.round.demonstrations.path)
    elif fmt:
        data_path = round_dir(job.round) / f"data-{fmt}.jsonl"
        if not data_path.exists():
            from annotation.export import export_snapshot

            export_snapshot(
                job.round.snapshot, data_path, fmt=fmt, style="conversational"
            )
    envelope = {
        "stage": job.stage,
        "config_class": spec.config,
        "trainer": spec.trainer,
        "job": job.pk,
        "round": job.round_id,
        "config": job.config,
        "data_path": str(data_path) if data_path else None,
    }
    (run_dir / CONFIG_FILE).write_text(json.dumps(envelope, indent=2, sort_keys=True))
    return run_dir


def merge_history(history: list[dict], lines: list[dict], cap: int = 600) -> list[dict]:
    """Return the metric history with new progress lines appended.

    A line whose step is below the last one means a resumed run rewound to its
    checkpoint: later points are dropped, so the curve shows the run that counts.
    Lines of the same step merge. Beyond `cap` points every other old point goes.
    """
    history = list(history)
    for line in lines:
        point = {k: v for k, v in line.items() if k != "time"}
        step = point.get("step", 0)
        while history and history[-1].get("step", 0) > step:
            history.pop()
        if history and history[-1].get("step") == step:
            history[-1] = {**history[-1], **point}
        else:
            history.append(point)
    if len(history) > cap:
        history = history[: -cap // 2 : 2] + history[-cap // 2 :]
    return history


class JobEnd(NamedTuple):
    """How `finish_job` left a job, and the round's next job to queue (None: none)."""

    job: TrainingJob
    following: TrainingJob | None


def finish_job(
    job_id: int, *, succeeded: bool, stopped: bool, error: str = ""
) -> JobEnd:
    """Record how a job ended and move its round on; return the job and the next one.

    Success: store the result and either hand back the next stage's job, which the
    caller queues (training/tasks.py), or, after the last stage, register every
    artifact of the round and mark it succeeded. A stop on request: the job is
    cancelled. Otherwise the job and its round fail with `error`. A job no longer
    running (the reaper decided) is left as it is.
    """
    now = timezone.now()
    following = None
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        training_round = TrainingRound.objects.select_for_update().get(pk=job.round_id)
        if job.status != Status.RUNNING:
            return JobEnd(job, None)
        job.finished_at = now
        job.pid = None
        if succeeded and training_round.status != Status.CANCELLED:
            result = json.loads((Path(job.run_dir) / RESULT_FILE).read_text())
            job.status = Status.SUCCEEDED
            job.output_path = str(Path(job.run_dir) / OUTPUT_DIR)
            job.last_metrics = {**job.last_metrics, **result}
            job.save()
            following = training_round.jobs.filter(index=job.index + 1).first()
            if following is None:
                _register_outputs(training_round)
                training_round.status = Status.SUCCEEDED
                training_round.finished_at = now
                training_round.save()
        elif stopped or training_round.status == Status.CANCELLED:
            job.status = Status.CANCELLED
            job.save()
            if training_round.status not in FINISHED:
                training_round.status, training_round.finished_at = (
                    Status.CANCELLED,
                    now,
                )
                training_round.save()
        else:
            job.status = Status.FAILED
            job.error = error
            job.save()
            _fail_round(training_round, job, error, now)
    return JobEnd(job, following)


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def error_gist(error: str) -> str:
    """Return the one line that says why a stage failed.

    The last exception line of the log if there is one; else the supervisor's first
    line ("stage process ended with killed by SIGKILL."): the log's last line is
    often a progress bar.
    """
    lines = [
        line.strip() for line in error.replace("\r", "\n").splitlines() if line.strip()
    ]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    return lines[0] if lines else "no error text"


def _fail_round(
    training_round: TrainingRound, job: TrainingJob, error: str, now
) -> None:
    """Mark the round failed because of `job`, with the gist of the error."""
    gist = error_gist(error)
    training_round.status = Status.FAILED
    training_round.error = f"stage {job.index + 1} ({job.stage}) failed: {gist}"
    training_round.finished_at = now
    training_round.save()


def _register_outputs(training_round: TrainingRound) -> None:
    """Register every stage's artifact with its lineage; the last policy is the round's output."""
    from inference.registry import register_policy

    parent = training_round.parent_policy
    output = None
    jobs = list(training_round.jobs.order_by("index"))
    evaluation = next((j.last_metrics for j in jobs if j.stage == "evaluate"), {})
    last_policy_job = max(
        (j.index for j in jobs if get_stage(j.stage).produces == Policy.Kind.POLICY),
        default=None,
    )
    for job in jobs:
        spec = get_stage(job.stage)
        if not spec.produces:
            continue
        metrics = {
            k: v for k, v in job.last_metrics.items() if isinstance(v, (int, float))
        }
        if job.index == last_policy_job:
            metrics.update(
                {
                    k: v
                    for k, v in evaluation.items()
                    if isinstance(v, (int, float)) and k not in ("step", "total")
                }
            )
        base, adapter = artifact_paths(job)
        config, data_name, data_sha256 = _data_lineage(training_round, spec, job)
        policy = register_policy(
            f"{training_round.project.name}-round{training_round.pk}-{job.index + 1}-{job.stage}",
            base_path=base,
            adapter_path=adapter,
            parent=parent,
            kind=spec.produces,
            config=config,
            metrics=metrics,
            snapshot_name=data_name,
            snapshot_sha256=data_sha256,
            method=job.stage,
        )
        TrainingJob.objects.filter(pk=job.pk).update(output_policy=policy)
        if spec.produces == Policy.Kind.POLICY:
            parent = output = policy
        elif output is None and job.index == len(jobs) - 1:
            output = policy
    training_round.output_policy = output


def _data_lineage(
    training_round: TrainingRound, spec, job: TrainingJob
) -> tuple[dict[str, Any], str, str]:
    """Return (config to register, data name, data SHA-256) of a job's artifact.

    A stage that read a corpus (pre-training text, uploaded demonstrations) names
    it as "corpus:NAME" with the file's hash, and its config records the corpus's
    lineage (kind, hash, records, filters); any other names the round's snapshot.
    """
    corpus = None
    if spec.data == "corpus":
        corpus = training_round.corpus
    elif spec.data == "sft" and training_round.demonstrations_id:
        corpus = training_round.demonstrations
    if corpus is not None:
        return (
            {**job.config, "corpus": corpus.lineage()},
            f"corpus:{corpus.name}",
            corpus.sha256,
        )
    snapshot = training_round.snapshot
    return (
        job.config,
        snapshot.name if snapshot else "",
        snapshot.sha256 if snapshot else "",
    )
