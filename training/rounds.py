"""Training rounds: launch a pipeline of stages, run their lifecycle, cancel and resume.

A round freezes a snapshot, creates one `TrainingJob` per stage with its resolved
config, and enqueues the first stage. Each stage's output is the next one's input:
a policy stage (sft, dpo, ppo, grpo, rloo) hands its artifact on as the policy, a
reward stage hands its artifact on as the reward model of the online stages. When
the last stage succeeds, every artifact of the round is registered in one
transaction (policies with their parent, snapshot name and hash, resolved config);
a cancelled or failed round registers nothing.

Invariants kept by the functions here: a round is `running` while one of its jobs
runs; at most one job of a round is queued or running at a time; a job's `config`
is the resolved config its child process received.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import typing
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.models import Project, Snapshot
from inference.models import Policy
from training.models import FINISHED, Status, TrainingJob, TrainingRound
from training.progress import CONFIG_FILE, OUTPUT_DIR, RESULT_FILE, STOP_FILE
from training.stages import STAGES, get_stage, implicit_stages

# Options of the round itself; everything else configures stages.
ROUND_OPTIONS = {
    "queue": "Tasks API queue: 'default' (CPU worker) or 'gpu' (a GPU host's worker).",
    "accelerate": "Accelerate config in platform/accelerate/ ('' runs one plain process).",
    "policy": "Registered policy to start from (default: the project's current policy).",
    "reward_model": "Registered reward model for ppo/grpo/rloo without a reward stage.",
    "snapshot": "Existing snapshot to train on (default: freeze a new one of all rankings).",
    "stop_grace_seconds": "Seconds a stage gets to stop after STOP before SIGTERM.",
    "evaluate": "false skips the evaluation stage (the policy then cannot be deployed).",
}
DEFAULT_STOP_GRACE_SECONDS = 30.0
# Config fields the platform fills from the previous stage or the registry.
INPUT_FIELDS = {
    "base_path",
    "adapter_path",
    "reward_model_path",
    "parent_base_path",
    "parent_adapter_path",
}


def parse_method(method: str) -> list[str]:
    """Return the stage names of a pipeline such as 'sft,reward,ppo'.

    Raise ValueError for an unknown stage or an online stage without a reward
    stage before it (unless a reward_model option names one: see `launch_round`).
    """
    stages = [
        s.strip().lower() for s in method.replace("->", ",").split(",") if s.strip()
    ]
    if not stages:
        raise ValueError(
            f"method must name at least one stage, e.g. 'dpo'; got {method!r}"
        )
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(
            f"unknown stage(s) {unknown} in method {method!r}; expected a comma-separated "
            f"pipeline of {sorted(STAGES)}, e.g. 'dpo' or 'sft,reward,ppo'"
        )
    return stages


def config_class(stage: str) -> type:
    """Return the config dataclass of a stage (imports its trainer module, not torch)."""
    return get_stage(stage).config_class()


def coerce(cls: type, name: str, value: Any) -> Any:
    """Return `value` converted to the type of field `name` of `cls` (text from forms/CLI)."""
    if not isinstance(value, str):
        return value
    hints = typing.get_type_hints(cls)
    if name not in hints:
        return value
    kind = hints[name]
    if kind is str:
        return value
    if kind is bool:
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    # Lists, dicts, optionals: JSON, or a comma-separated list ("sigmoid,sft", "1,0.5").
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        lists = [
            k for k in (kind, *typing.get_args(kind)) if typing.get_origin(k) is list
        ]
        if not lists:
            raise ValueError(f"{name} must be JSON ({kind}), got {value!r}") from None
        item_type = (typing.get_args(lists[0]) or (str,))[0]
        items = [item.strip() for item in value.split(",") if item.strip()]
        try:
            return (
                [item_type(item) for item in items]
                if item_type in (int, float)
                else items
            )
        except ValueError:
            raise ValueError(
                f"{name} must be a list of {item_type.__name__}, got {value!r}"
            ) from None


def parse_settings(pairs: list[str], stages: list[str]) -> dict[str, Any]:
    """Turn ['queue=gpu', 'dpo.beta=0.2', 'max_steps=5'] into launch options.

    A round option goes to the top level; 'stage.field' configures one stage; a
    bare field configures every stage of the pipeline whose config has it.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"settings are key=value, got {pair!r}")
        if key in ROUND_OPTIONS:
            options[key] = value
            continue
        stage, dot, field = key.partition(".")
        targets = [stage] if dot else stages
        field = field if dot else key
        matched = False
        for target in targets:
            if target not in stages and target not in implicit_stages():
                raise ValueError(
                    f"{key!r} names stage {target!r}, which is not in the pipeline {stages}"
                )
            names = {f.name for f in dataclasses.fields(config_class(target))}
            if field in names:
                options.setdefault(target, {})[field] = coerce(
                    config_class(target), field, value
                )
                matched = True
        if not matched:
            raise ValueError(
                f"no stage of {stages} has an option {field!r}; round options are "
                f"{sorted(ROUND_OPTIONS)}, stage options e.g. dpo.beta (see the launch page)"
            )
    return options


def resolve_config(
    stage: str, overrides: dict[str, Any], inputs: dict[str, str]
) -> dict[str, Any]:
    """Return the stage's full config: defaults, then overrides, then the platform's inputs.

    Raise ValueError (from the config's own checks) naming a bad value.
    """
    cls = config_class(stage)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: coerce(cls, k, v) for k, v in overrides.items()}
    set_inputs = sorted(INPUT_FIELDS & set(values))
    if set_inputs:
        raise ValueError(
            f"{stage} options {set_inputs} are set by the platform (from the starting policy "
            "and the previous stages); choose the policy with the 'policy' option instead"
        )
    values.update({k: v for k, v in inputs.items() if k in names})
    return cls.from_dict(values).to_dict()


def _policy_inputs(policy: Policy) -> dict[str, str]:
    """Return the inputs naming `policy` as the starting policy and as the parent."""
    return {
        "base_path": policy.base_path,
        "adapter_path": policy.adapter_path,
        "parent_base_path": policy.base_path,
        "parent_adapter_path": policy.adapter_path,
    }


def _reward_inputs(policy: Policy) -> dict[str, str]:
    """Return the inputs naming a registered reward model; it must be one merged folder."""
    if policy.adapter_path:
        raise ValueError(
            f"reward model {policy.name} is an adapter on {policy.base_path}; the online "
            "stages need a merged reward model folder (a reward stage saves one)"
        )
    return {"reward_model_path": policy.base_path}


def _is_off(value: Any) -> bool:
    return value is False or (
        isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}
    )


def round_dir(training_round: TrainingRound) -> Path:
    """Return the folder holding the round's data files and its stages' run directories.

    The creation time is part of the name: ids restart with a new database (a test
    run, a reset), and a stage must never resume from another round's checkpoint.
    """
    stamp = training_round.created_at.strftime("%Y%m%dT%H%M%S%f")
    return Path(settings.RUN_DIR) / f"round-{training_round.pk}-{stamp}"


def launch_round(
    project: Project,
    method: str,
    *,
    user: AbstractBaseUser | None,
    options: dict[str, Any] | None = None,
) -> TrainingRound:
    """Freeze a snapshot, create the round and one job per stage, enqueue the first.

    Raise ValueError with a message for the user when the method, an option or a
    config value is bad, no starting policy is known, or the snapshot has no pairs.
    Everything is written in one transaction with the queued task, so a refused
    launch leaves no snapshot, round or task behind.
    """
    from training.supervisor import accelerate_configs

    options = dict(options or {})
    stages = parse_method(method)
    queue = options.get("queue") or "default"
    queues = settings.TASKS["default"].get("QUEUES", ["default"])
    if queue not in queues:
        raise ValueError(f"queue must be one of {queues}, got {queue!r}")
    options["queue"] = queue
    accelerate = options.get("accelerate") or ""
    if accelerate and accelerate not in accelerate_configs():
        raise ValueError(
            f"accelerate config {accelerate!r} does not exist; expected one of "
            f"{accelerate_configs()} or '' for a single plain process"
        )
    options["accelerate"] = accelerate
    grace = float(options.get("stop_grace_seconds") or DEFAULT_STOP_GRACE_SECONDS)
    if grace <= 0:
        raise ValueError(f"stop_grace_seconds must be > 0, got {grace}")
    options["stop_grace_seconds"] = grace

    if options.get("policy"):
        parent = Policy.objects.filter(
            name=options["policy"], kind=Policy.Kind.POLICY
        ).first()
        if parent is None:
            raise ValueError(
                f"no registered policy named {options['policy']!r}; see the registry page"
            )
    else:
        parent = project.current_policy
        if parent is None:
            raise ValueError(
                f"project {project.name} has no current policy; deploy one on the "
                "registry page or pass policy=NAME"
            )
    reward_model = None
    if options.get("reward_model"):
        reward_model = Policy.objects.filter(
            name=options["reward_model"], kind=Policy.Kind.REWARD_MODEL
        ).first()
        if reward_model is None:
            raise ValueError(
                f"no registered reward model named {options['reward_model']!r}"
            )
    method = ",".join(stages)  # as asked; an implicit evaluation job is not part of it
    trains_policy = any(
        STAGES[s].produces == Policy.Kind.POLICY and STAGES[s].evaluated for s in stages
    )
    if _is_off(options.get("evaluate")):
        options["evaluate"] = False
    elif trains_policy and "evaluate" not in stages:
        if project.prompts.filter(is_held_out=True).exists():
            stages.append("evaluate")
            evaluate = dict(options.get("evaluate") or {})
            if "judge" not in evaluate and _has_judge_annotator(project):
                evaluate["judge"] = "demo"
            options["evaluate"] = evaluate
        else:
            options["evaluate"] = False
            options["evaluate_skipped"] = "the project has no held-out prompts"
    for i, stage in enumerate(stages):
        if (
            STAGES[stage].needs_reward
            and "reward" not in stages[:i]
            and reward_model is None
        ):
            raise ValueError(
                f"stage {stage} needs a reward model: put a reward stage before it "
                f"(e.g. 'reward,{stage}') or pass reward_model=NAME"
            )

    # Validate every stage's config now, so a typo fails the launch, not stage 3.
    configs = []
    for stage in stages:
        inputs = _policy_inputs(parent)
        if reward_model is not None:
            inputs.update(_reward_inputs(reward_model))
        configs.append(resolve_config(stage, options.get(stage) or {}, inputs))

    with transaction.atomic():
        snapshot = None
        if any(STAGES[s].data in ("trl", "sft") for s in stages):
            snapshot = _snapshot_for(project, options, user)
        training_round = TrainingRound.objects.create(
            project=project,
            method=method,
            snapshot=snapshot,
            parent_policy=parent,
            config=options,
            created_by=user,
        )
        for index, (stage, config) in enumerate(zip(stages, configs, strict=False)):
            TrainingJob.objects.create(
                round=training_round,
                stage=stage,
                index=index,
                config=config,
                run_dir=str(round_dir(training_round) / f"{index + 1:02d}-{stage}"),
            )
        enqueue_job(training_round.jobs.get(index=0))
    from training.tasks import schedule_reaper

    schedule_reaper()
    return training_round


def _has_judge_annotator(project: Project) -> bool:
    """Return whether the project's rankings include the demo judge's (a simulated annotator)."""
    from annotation.models import Ranking

    return Ranking.objects.filter(
        task__project=project,
        annotator__annotator_profile__is_simulated=True,
        annotator__annotator_profile__simulator__icontains="judge",
    ).exists()


def _snapshot_for(
    project: Project, options: dict, user: AbstractBaseUser | None
) -> Snapshot:
    """Return the named snapshot, or freeze a new one; refuse one without pairs."""
    from annotation.snapshots import freeze_snapshot

    if options.get("snapshot"):
        snapshot = Snapshot.objects.filter(
            project=project, name=options["snapshot"]
        ).first()
        if snapshot is None:
            raise ValueError(
                f"project {project.name} has no snapshot named {options['snapshot']!r}"
            )
    else:
        name = f"training-{timezone.now():%Y%m%d-%H%M%S-%f}"
        try:
            snapshot = freeze_snapshot(project, name, user=user)
        except ValidationError as exc:
            raise ValueError("; ".join(exc.messages)) from None
    if snapshot.row_count == 0:
        raise ValueError(
            f"snapshot {snapshot.name} of project {project.name} has no preference pairs; "
            "collect rankings (with at least two differing ranks) before training"
        )
    return snapshot


def enqueue_job(job: TrainingJob) -> None:
    """Queue the job's task on the round's queue and remember the task id."""
    from training.tasks import run_training_job

    queue = job.round.config.get("queue") or "default"
    result = run_training_job.using(queue_name=queue).enqueue(job.pk)
    TrainingJob.objects.filter(pk=job.pk).update(task_id=str(result.id))


def _inputs_for(job: TrainingJob) -> dict[str, str]:
    """Return the artifact paths this job starts from: the previous stages' outputs."""
    training_round = job.round
    inputs = _policy_inputs(training_round.parent_policy)
    reward_name = training_round.config.get("reward_model")
    if reward_name:
        inputs.update(_reward_inputs(Policy.objects.get(name=reward_name)))
    for earlier in training_round.jobs.filter(index__lt=job.index).order_by("index"):
        produces = STAGES[earlier.stage].produces
        if not produces:
            continue
        base, adapter = artifact_paths(earlier)
        if produces == Policy.Kind.REWARD_MODEL:
            inputs["reward_model_path"] = base
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


def start_job(job_id: int) -> TrainingJob | None:
    """Claim a queued job for this worker: mark it and its round running.

    Fill the job's inputs from the stages before it (the config on the row is then
    exactly what the child receives). Return None, and start nothing, when the job
    is not queued any more or its round was cancelled (its job is then cancelled).
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
        job.save()
        training_round.status = Status.RUNNING
        training_round.save(update_fields=["status"])
    return job


def prepare_run_dir(job: TrainingJob) -> Path:
    """Write config.json and the training data; clear what a stopped run left behind.

    Checkpoints and progress stay, so a resumed stage continues from its newest
    checkpoint; a half-written output and an old STOP file go.
    """
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    if not (run_dir / RESULT_FILE).exists():
        shutil.rmtree(run_dir / OUTPUT_DIR, ignore_errors=True)
    data_path = None
    fmt = STAGES[job.stage].data
    if fmt == "prompts":
        data_path = run_dir / "held-out-prompts.jsonl"
        prompts = job.round.project.prompts.filter(is_held_out=True).order_by("id")
        limit = int(job.config.get("prompts", 16))
        data_path.write_text(
            "".join(json.dumps({"prompt": p.messages}) + "\n" for p in prompts[:limit])
        )
    elif fmt:
        data_path = round_dir(job.round) / f"data-{fmt}.jsonl"
        if not data_path.exists():
            from annotation.export import export_snapshot

            export_snapshot(
                job.round.snapshot, data_path, fmt=fmt, style="conversational"
            )
    spec = get_stage(job.stage)
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


def finish_job(
    job_id: int, *, succeeded: bool, stopped: bool, error: str = ""
) -> TrainingJob:
    """Record how a job ended and move its round on.

    Success: store the result and either enqueue the next stage or, after the last
    stage, register every artifact of the round and mark it succeeded. A stop on
    request: the job is cancelled. Otherwise the job and its round fail with
    `error`. A job no longer running (the reaper decided) is left as it is.
    """
    now = timezone.now()
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        training_round = TrainingRound.objects.select_for_update().get(pk=job.round_id)
        if job.status != Status.RUNNING:
            return job
        job.finished_at = now
        job.pid = None
        if succeeded and training_round.status != Status.CANCELLED:
            result = json.loads((Path(job.run_dir) / RESULT_FILE).read_text())
            job.status = Status.SUCCEEDED
            job.output_path = str(Path(job.run_dir) / OUTPUT_DIR)
            job.last_metrics = {**job.last_metrics, **result}
            job.save()
            following = training_round.jobs.filter(index=job.index + 1).first()
            if following is not None:
                enqueue_job(following)
            else:
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
    return job


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

    snapshot = training_round.snapshot
    parent = training_round.parent_policy
    output = None
    jobs = list(training_round.jobs.order_by("index"))
    evaluation = next((j.last_metrics for j in jobs if j.stage == "evaluate"), {})
    last_policy_job = max(
        (j.index for j in jobs if STAGES[j.stage].produces == Policy.Kind.POLICY),
        default=None,
    )
    for job in jobs:
        spec = STAGES[job.stage]
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
        policy = register_policy(
            f"{training_round.project.name}-round{training_round.pk}-{job.index + 1}-{job.stage}",
            base_path=base,
            adapter_path=adapter,
            parent=parent,
            kind=spec.produces,
            config=job.config,
            metrics=metrics,
            snapshot_name=snapshot.name if snapshot else "",
            snapshot_sha256=snapshot.sha256 if snapshot else "",
        )
        TrainingJob.objects.filter(pk=job.pk).update(output_policy=policy)
        if spec.produces == Policy.Kind.POLICY:
            parent = output = policy
        elif output is None and job.index == len(jobs) - 1:
            output = policy
    training_round.output_policy = output


def cancel_round(
    training_round: TrainingRound, *, user: AbstractBaseUser | None = None
) -> TrainingRound:
    """Cancel a round: queued stages never start, a running stage is asked to stop.

    The worker sees the cancelled round at its next heartbeat, writes STOP (the
    trainer checkpoints and exits), and escalates to SIGTERM and SIGKILL if the
    stage does not stop in time. Raise ValueError for a round already finished.
    """
    now = timezone.now()
    with transaction.atomic():
        training_round = TrainingRound.objects.select_for_update().get(
            pk=training_round.pk
        )
        if training_round.status in FINISHED:
            raise ValueError(
                f"round {training_round.pk} is already {training_round.status}; nothing to cancel"
            )
        training_round.status = Status.CANCELLED
        training_round.finished_at = now
        who = f" by {user}" if user is not None else ""
        training_round.error = f"cancelled{who} at {now:%Y-%m-%d %H:%M:%S} UTC"
        training_round.save()
        training_round.jobs.filter(status=Status.QUEUED).update(
            status=Status.CANCELLED, finished_at=now
        )
    return training_round


def resume_round(
    training_round: TrainingRound, *, user: AbstractBaseUser | None = None
) -> TrainingJob:
    """Re-queue a failed or cancelled round from its first unfinished stage.

    The stage's run directory is kept, so it restarts from its last checkpoint
    (`Reporter.last_checkpoint`), not from step zero. Return the job queued. Raise
    ValueError when the round is not failed or cancelled, or a stage is still
    stopping.
    """
    with transaction.atomic():
        training_round = TrainingRound.objects.select_for_update().get(
            pk=training_round.pk
        )
        if training_round.status not in (Status.FAILED, Status.CANCELLED):
            raise ValueError(
                f"round {training_round.pk} is {training_round.status}; only a failed or "
                "cancelled round can be resumed"
            )
        if training_round.jobs.filter(status=Status.RUNNING).exists():
            raise ValueError(
                f"a stage of round {training_round.pk} is still stopping; resume it once "
                "the round page shows no running stage"
            )
        pending = list(
            training_round.jobs.exclude(status=Status.SUCCEEDED).order_by("index")
        )
        if not pending:
            raise ValueError(
                f"round {training_round.pk} has no unfinished stage to resume"
            )
        for job in pending:
            job.status, job.error, job.finished_at = Status.QUEUED, "", None
            job.save(update_fields=["status", "error", "finished_at"])
        training_round.status = Status.QUEUED
        training_round.error = ""
        training_round.finished_at = None
        training_round.save()
        enqueue_job(pending[0])
    from training.tasks import schedule_reaper

    schedule_reaper()
    return pending[0]
