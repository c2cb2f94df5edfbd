"""Training rounds: launch a pipeline of stages, cancel it, resume it.

A round freezes a snapshot and creates one `TrainingJob` per stage with its
resolved config, the first one queued. Each stage's output is the next one's
input: a policy stage (sft, dpo, ppo, grpo, rloo) hands its artifact on as the
policy, a reward stage hands its artifact on as the reward model of the online
stages (training/jobs.py runs that lifecycle). The functions here only write the
database: the caller puts the queued job on the task queue (training/tasks.py
`launch` and `resume` do both in one transaction).

Invariants kept by the functions here and in training/jobs.py: a round is
`running` while one of its jobs runs; at most one job of a round is queued or
running at a time; a job's `config` is the resolved config its child process
received.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.audit import record
from annotation.models import Corpus, Project, Ranking, Snapshot
from inference.judges import default_judge_name
from inference.models import Policy
from training.jobs import (
    ensemble_inputs,
    judge_inputs,
    policy_inputs,
    reward_inputs,
    round_dir,
)
from training.models import FINISHED, Status, TrainingJob, TrainingRound
from training.reward import MAX_ENSEMBLE
from training.stages import (
    STAGES,
    coerce,
    config_class,
    implicit_stages,
    parse_method,
    resolve_config,
)

# Options of the round itself; everything else configures stages.
ROUND_OPTIONS = {
    "queue": "Tasks API queue: 'default' (CPU worker) or 'gpu' (a GPU host's worker).",
    "accelerate": "Accelerate config in platform/accelerate/ ('' runs one plain process).",
    "policy": "Registered policy to start from (default: the project's current policy).",
    "reward_model": "Registered reward model for ppo/grpo/rloo without a reward stage.",
    "reward_ensemble": "Registered reward models (comma-separated) whose scores PPO, "
    "GRPO or RLOO averages with its own reward model's, each normalised on its own.",
    "snapshot": "Existing snapshot to train on (default: freeze a new one of all rankings).",
    "corpus": "The project's pre-training corpus (data pages) for a pretrain stage.",
    "demonstrations": "The project's uploaded demonstrations for an sft stage "
    "(default: the snapshot's rewrites and top-ranked responses).",
    "stop_grace_seconds": "Seconds a stage gets to stop after STOP before SIGTERM.",
    "evaluate": "false skips the evaluation stage (the policy then cannot be deployed).",
}
DEFAULT_STOP_GRACE_SECONDS = 30.0


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
            raise ValidationError(f"settings are key=value, got {pair!r}")
        if key in ROUND_OPTIONS:
            options[key] = value
            continue
        stage, dot, field = key.partition(".")
        targets = [stage] if dot else stages
        field = field if dot else key
        matched = False
        for target in targets:
            if target not in stages and target not in implicit_stages():
                raise ValidationError(
                    f"{key!r} names stage {target!r}, which is not in the pipeline {stages}"
                )
            names = {f.name for f in dataclasses.fields(config_class(target))}
            if field in names:
                options.setdefault(target, {})[field] = coerce(
                    config_class(target), field, value
                )
                matched = True
        if not matched:
            raise ValidationError(
                f"no stage of {stages} has an option {field!r}; round options are "
                f"{sorted(ROUND_OPTIONS)}, stage options e.g. dpo.beta (see the launch page)"
            )
    return options


def _is_off(value: Any) -> bool:
    return value is False or (
        isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}
    )


def _round_options(options: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the launch options with the round's own options checked and filled.

    Raise ValidationError naming a queue, accelerate config or grace period that is bad.
    """
    from training.supervisor import accelerate_configs

    options = dict(options)
    queue = options.get("queue") or "default"
    queues = settings.TASKS["default"].get("QUEUES", ["default"])
    if queue not in queues:
        raise ValidationError(f"queue must be one of {queues}, got {queue!r}")
    options["queue"] = queue
    accelerate = options.get("accelerate") or ""
    if accelerate and accelerate not in accelerate_configs():
        raise ValidationError(
            f"accelerate config {accelerate!r} does not exist; expected one of "
            f"{accelerate_configs()} or '' for a single plain process"
        )
    options["accelerate"] = accelerate
    grace = float(options.get("stop_grace_seconds") or DEFAULT_STOP_GRACE_SECONDS)
    if grace <= 0:
        raise ValidationError(f"stop_grace_seconds must be > 0, got {grace}")
    options["stop_grace_seconds"] = grace
    ensemble = options.get("reward_ensemble") or []
    if isinstance(ensemble, str):
        ensemble = [name.strip() for name in ensemble.split(",") if name.strip()]
    if not isinstance(ensemble, list) or not all(
        isinstance(name, str) for name in ensemble
    ):
        raise ValidationError(
            f"reward_ensemble must be a list of registered reward model names, got "
            f"{ensemble!r}"
        )
    if len(ensemble) > MAX_ENSEMBLE - 1:
        raise ValidationError(
            f"reward_ensemble names {len(ensemble)} reward models; at most "
            f"{MAX_ENSEMBLE - 1} join the stage's own"
        )
    if ensemble:
        options["reward_ensemble"] = ensemble
    else:
        options.pop("reward_ensemble", None)
    return options


def _starting_models(
    project: Project, options: dict[str, Any]
) -> tuple[Policy, Policy | None]:
    """Return the policy the round starts from and the registered reward model, if named.

    Raise ValidationError when a named one is not registered, or no policy is named and
    the project has no current one.
    """
    if options.get("policy"):
        parent = Policy.objects.filter(
            name=options["policy"], kind=Policy.Kind.POLICY
        ).first()
        if parent is None:
            raise ValidationError(
                f"no registered policy named {options['policy']!r}; see the registry page"
            )
    else:
        parent = project.current_policy
        if parent is None:
            raise ValidationError(
                f"project {project.name} has no current policy; deploy one on the "
                "registry page or pass policy=NAME"
            )
    reward_model = None
    if options.get("reward_model"):
        reward_model = Policy.objects.filter(
            name=options["reward_model"], kind=Policy.Kind.REWARD_MODEL
        ).first()
        if reward_model is None:
            raise ValidationError(
                f"no registered reward model named {options['reward_model']!r}"
            )
    return parent, reward_model


def _check_reward_stages(
    stages: list[str], options: dict[str, Any], reward_model: Policy | None
) -> None:
    """Refuse a stage that needs a reward model when nothing gives it one: no stage
    before it trains one, no reward_model option names one, and its own options name
    no judge to score with (GRPO, RLOO: a verifiable reward). Refuse a judged stage
    after a reward stage too: the reward model would be trained for nothing."""
    for i, stage in enumerate(stages):
        if not STAGES[stage].needs_reward:
            continue
        trained = any(
            STAGES[s].produces == Policy.Kind.REWARD_MODEL for s in stages[:i]
        )
        judge = (options.get(stage) or {}).get("judge")
        if judge and trained:
            raise ValidationError(
                f"stage {stage} takes its reward from judge {judge!r}, so the reward "
                f"stage before it would train a reward model nothing uses: drop it "
                f"(e.g. '{stage}' for 'reward,{stage}')"
            )
        if not (judge or trained or reward_model):
            raise ValidationError(
                f"stage {stage} needs a reward model: put a reward stage before it "
                f"(e.g. 'reward,{stage}') or pass reward_model=NAME"
            )


def _ensemble_for(stages: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """Return the input naming the round option `reward_ensemble`'s folders.

    Raise ValidationError when a name is no registered merged reward model, or the
    pipeline has no stage that scores with reward models.
    """
    ensemble = ensemble_inputs(options.get("reward_ensemble") or [])
    if ensemble and not any(
        "reward_ensemble_paths" in {f.name for f in dataclasses.fields(config_class(s))}
        for s in stages
    ):
        raise ValidationError(
            f"reward_ensemble is for a stage that scores with reward models (ppo, grpo, "
            f"rloo); "
            f"the pipeline {stages} has none"
        )
    return ensemble


def _stage_configs(
    stages: list[str],
    options: dict[str, Any],
    parent: Policy,
    reward_model: Policy | None,
) -> list[dict[str, Any]]:
    """Return every stage's resolved config, validated now so that a typo fails the
    launch, not stage 3; raise ValidationError naming a bad value."""
    ensemble = _ensemble_for(stages, options)
    configs = []
    for stage in stages:
        inputs = policy_inputs(parent)
        if reward_model is not None:
            inputs.update(reward_inputs(reward_model))
        inputs.update(ensemble)
        inputs.update(judge_inputs(options.get(stage) or {}))
        configs.append(resolve_config(stage, options.get(stage) or {}, inputs))
    _check_ensemble_size(stages, configs, ensemble)
    return configs


def _check_ensemble_size(
    stages: list[str], configs: list[dict[str, Any]], ensemble: dict[str, Any]
) -> None:
    """Refuse more reward models than an ensemble holds: the named ones plus the last
    reward stage's `ensemble_size` (or the one registered reward model)."""
    trained = [
        config.get("ensemble_size", 1)
        for stage, config in zip(stages, configs, strict=True)
        if STAGES[stage].produces == Policy.Kind.REWARD_MODEL
    ]
    members = len(ensemble.get("reward_ensemble_paths", [])) + (
        trained[-1] if trained else 1
    )
    if members > MAX_ENSEMBLE:
        raise ValidationError(
            f"the reward stage's ensemble_size and reward_ensemble make {members} reward "
            f"models; an ensemble has at most {MAX_ENSEMBLE}"
        )


def launch_round(
    project: Project,
    method: str,
    *,
    user: AbstractBaseUser | None,
    options: dict[str, Any] | None = None,
) -> TrainingRound:
    """Freeze a snapshot, create the round and one job per stage, the first one queued.

    Raise ValidationError with a message for the user when the method, an option or a
    config value is bad, no starting policy is known, or the snapshot has no pairs.
    Everything is written in one transaction, so a refused launch leaves no
    snapshot or round behind. The caller queues the first job's task
    (`training.tasks.launch` does both in one transaction).
    """
    stages = parse_method(method)
    options = _round_options(options or {})
    parent, reward_model = _starting_models(project, options)
    method = ",".join(stages)  # as asked; an implicit evaluation job is not part of it
    trains_policy = any(
        STAGES[s].produces == Policy.Kind.POLICY and STAGES[s].evaluated for s in stages
    )
    if _is_off(options.get("evaluate")):
        options["evaluate"] = False
    elif trains_policy and "evaluate" not in stages:
        if project.prompts.filter(is_held_out=True, eval_split="test").exists():
            stages.append("evaluate")
            evaluate = dict(options.get("evaluate") or {})
            if "judge" not in evaluate and (judge := _annotators_judge(project)):
                evaluate["judge"] = judge
            options["evaluate"] = evaluate
        else:
            options["evaluate"] = False
            options["evaluate_skipped"] = "the project has no held-out test prompts"
    _check_reward_stages(stages, options, reward_model)
    configs = _stage_configs(stages, options, parent, reward_model)

    corpus, demonstrations = _corpora_for(project, stages, options)
    with transaction.atomic():
        snapshot = None
        if any(
            STAGES[s].data == "trl" or (STAGES[s].data == "sft" and not demonstrations)
            for s in stages
        ):
            snapshot = _snapshot_for(project, options, user)
        training_round = TrainingRound.objects.create(
            project=project,
            method=method,
            snapshot=snapshot,
            corpus=corpus,
            demonstrations=demonstrations,
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
        record(
            user,
            "round.launch",
            obj=training_round,
            after={"method": method, "stages": stages, "config": options},
        )
    return training_round


def _annotators_judge(project: Project) -> str | None:
    """Return the judge to evaluate with when simulated judge annotators ranked here.

    A judge annotator that names its judge ("judge:instructions", possibly inside a
    noisy wrapper) gives that name when it is the only one named; one that says only
    "judge" ranked with the default judge (`inference.judges`). None when no judge
    annotator ranked in the project, or when the judge is ambiguous.
    """
    import re

    from annotation.models import Ranking
    from annotation.simulated import JudgeAnnotator

    simulators = set(
        Ranking.objects.filter(
            task__project=project,
            annotator__annotator_profile__is_simulated=True,
            annotator__annotator_profile__simulator__icontains=JudgeAnnotator.simulator,
        ).values_list("annotator__annotator_profile__simulator", flat=True)
    )
    if not simulators:
        return None
    named = {m for s in simulators for m in re.findall(r"\bjudge:([\w.-]+)", s)}
    if any(not re.search(r"\bjudge:", s) for s in simulators):
        named.add(default_judge_name() or "")
    return named.pop() if len(named) == 1 and "" not in named else None


def _corpora_for(
    project: Project, stages: list[str], options: dict[str, Any]
) -> tuple[Corpus | None, Corpus | None]:
    """Return the pre-training corpus and the demonstrations the launch options name.

    Raise ValidationError when a pretrain stage has no corpus, a named one is not
    the project's or not of its kind, or one is named with no stage to read it.
    """
    found = []
    for option, kind, data in (
        ("corpus", Corpus.Kind.TEXT, "corpus"),
        ("demonstrations", Corpus.Kind.DEMONSTRATIONS, "sft"),
    ):
        name = options.get(option) or ""
        readers = [s for s in stages if STAGES[s].data == data]
        if not name:
            if data == "corpus" and readers:
                raise ValidationError(
                    f"stage {readers[0]} needs a corpus: upload one on the project's "
                    "corpus page and pass corpus=NAME"
                )
            found.append(None)
            continue
        if not readers:
            raise ValidationError(
                f"{option}={name!r} is read by no stage of {stages}; add a "
                f"{'pretrain' if data == 'corpus' else 'sft'} stage or leave it out"
            )
        corpus = Corpus.objects.filter(project=project, name=name).first()
        if corpus is None or corpus.kind != kind:
            raise ValidationError(
                f"project {project.name} has no {Corpus.Kind(kind).label.lower()} "
                f"corpus named {name!r}; see its corpus page"
            )
        found.append(corpus)
    return found[0], found[1]


def _snapshot_for(
    project: Project, options: dict, user: AbstractBaseUser | None
) -> Snapshot:
    """Return the named snapshot, or queue a new one of every ranking, which the
    round's first job freezes in the worker (`training.jobs.freeze_round_snapshot`:
    a launch is a web request, and a large freeze must not hold one); refuse a
    snapshot without pairs, or a project without rankings."""
    from annotation.snapshots import not_frozen, queue_freeze

    if options.get("snapshot"):
        snapshot = Snapshot.any_state.filter(
            project=project, name=options["snapshot"]
        ).first()
        if snapshot is None:
            raise ValidationError(
                f"project {project.name} has no snapshot named {options['snapshot']!r}"
            )
        if snapshot.status != Snapshot.Status.DONE:
            raise ValidationError(
                not_frozen(snapshot, "launch the round once its page says done")
            )
    else:
        if not Ranking.objects.filter(task__project=project, is_skip=False).exists():
            raise ValidationError(no_pairs(project, "a new snapshot"))
        name = f"training-{timezone.now():%Y%m%d-%H%M%S-%f}"
        return queue_freeze(project, name, user=user, enqueue=False)
    if snapshot.row_count == 0:
        raise ValidationError(no_pairs(project, f"snapshot {snapshot.name}"))
    return snapshot


def no_pairs(project: Project, what: str) -> str:
    """Say that a round has no preference pairs to train on, and what gives some."""
    return (
        f"{what} of project {project.name} has no preference pairs; collect rankings "
        "(with at least two differing ranks) before training"
    )


def cancel_round(
    training_round: TrainingRound, *, user: AbstractBaseUser | None = None
) -> TrainingRound:
    """Cancel a round: queued stages never start, a running stage is asked to stop.

    The worker sees the cancelled round at its next heartbeat, writes STOP (the
    trainer checkpoints and exits), and escalates to SIGTERM and SIGKILL if the
    stage does not stop in time. Raise ValidationError for a round already finished.
    """
    now = timezone.now()
    with transaction.atomic():
        training_round = TrainingRound.objects.select_for_update().get(
            pk=training_round.pk
        )
        if training_round.status in FINISHED:
            raise ValidationError(
                f"round {training_round.pk} is already {training_round.status}; nothing to cancel"
            )
        before = {"status": training_round.status}
        training_round.status = Status.CANCELLED
        training_round.finished_at = now
        who = f" by {user}" if user is not None else ""
        training_round.error = f"cancelled{who} at {now:%Y-%m-%d %H:%M:%S} UTC"
        training_round.save()
        training_round.jobs.filter(status=Status.QUEUED).update(
            status=Status.CANCELLED, finished_at=now
        )
        record(
            user,
            "round.cancel",
            obj=training_round,
            before=before,
            after={"status": Status.CANCELLED},
        )
    return training_round


def resume_round(
    training_round: TrainingRound, *, user: AbstractBaseUser | None = None
) -> TrainingJob:
    """Re-queue a failed or cancelled round from its first unfinished stage.

    The stage's run directory is kept, so it restarts from its last checkpoint
    (`Reporter.last_checkpoint`), not from step zero. Return the job to queue (the
    caller queues its task: `training.tasks.resume`). Raise ValidationError when the
    round is not failed or cancelled, or a stage is still stopping.
    """
    with transaction.atomic():
        training_round = TrainingRound.objects.select_for_update().get(
            pk=training_round.pk
        )
        if training_round.status not in (Status.FAILED, Status.CANCELLED):
            raise ValidationError(
                f"round {training_round.pk} is {training_round.status}; only a failed or "
                "cancelled round can be resumed"
            )
        if training_round.jobs.filter(status=Status.RUNNING).exists():
            raise ValidationError(
                f"a stage of round {training_round.pk} is still stopping; resume it once "
                "the round page shows no running stage"
            )
        pending = list(
            training_round.jobs.exclude(status=Status.SUCCEEDED).order_by("index")
        )
        if not pending:
            raise ValidationError(
                f"round {training_round.pk} has no unfinished stage to resume"
            )
        for job in pending:
            job.status, job.error, job.finished_at = Status.QUEUED, "", None
            job.save(update_fields=["status", "error", "finished_at"])
        before = {"status": training_round.status}
        training_round.status = Status.QUEUED
        training_round.error = ""
        training_round.finished_at = None
        training_round.save()
        record(
            user,
            "round.resume",
            obj=training_round,
            before=before,
            after={"status": Status.QUEUED, "from_stage": pending[0].stage},
        )
    return pending[0]
