"""Background jobs of the annotation app: publishing a round (generation needs torch),
importing preference data, freezing snapshots, building their exports, comparing
them and computing a large project's page figures (a large file, freeze, export,
comparison or project must not hold a web process)."""

from __future__ import annotations

import logging

from django_tasks import task

from config import task_queue

logger = logging.getLogger(__name__)


@task()
def publish_round_task(
    project_id: int,
    n_prompts: int,
    strategy: str,
    temperature: float,
    seed: int,
    earlier: bool,
) -> int:
    """Generate candidates with the deployed policy and publish a round; return its number.

    With `earlier`, one candidate per task comes from the deployed policy's parent, so
    human comparisons between policies accumulate.
    """
    from annotation.models import Project
    from annotation.rounds import publish_round
    from inference.sampling import SamplingConfig

    project = Project.objects.select_related("current_policy").get(pk=project_id)
    parent = project.current_policy.parent if project.current_policy else None
    earlier_policies = [parent] if earlier and parent is not None else []
    sampling = SamplingConfig(
        temperature=temperature,
        num_candidates=project.responses_per_task - len(earlier_policies),
        seed=seed,
    )
    round_ = publish_round(
        project,
        n_prompts=n_prompts,
        sampling=sampling,
        strategy=strategy,
        seed=seed,
        earlier_policies=earlier_policies,
    )
    return round_.number


@task()
def import_task(report_id: int) -> None:
    """Import a queued upload (see `annotation.importing.run_import`)."""
    from annotation.importing import run_import

    run_import(report_id)


@task()
def freeze_task(snapshot_id: int) -> None:
    """Freeze a queued snapshot (see `annotation.snapshots.run_freeze`)."""
    from annotation.snapshots import run_freeze

    run_freeze(snapshot_id)


@task()
def export_task(export_id: int) -> None:
    """Build a queued snapshot export (see `annotation.export.run_export`)."""
    from annotation.export import run_export

    run_export(export_id)


@task()
def compare_task(comparison_id: int) -> None:
    """Compare two snapshots (see `annotation.snapshots.run_comparison`)."""
    from annotation.snapshots import run_comparison

    run_comparison(comparison_id)


@task()
def figures_task(figures_id: int) -> None:
    """Compute a project page's figures (see `annotation.figures.run_figures`)."""
    from annotation.figures import run_figures

    run_figures(figures_id)


def requeue_lost_rows() -> list[str]:
    """Queue again every queued import, freeze, export, comparison and page-figures
    row that a broker holds no task for (queued while it was away, or lost with its
    data); return them as 'Model pk'. The database queue loses none: there this does
    nothing. A row's task delivered twice does nothing the second time
    (`config.workers.claim`), so one queued just now and on its way is harmless. A
    training round's snapshot is left to the round's first stage, which freezes it.
    """
    if task_queue.uses_database():
        return []
    from annotation.models import (
        ImportReport,
        ProjectFigures,
        Snapshot,
        SnapshotComparison,
        SnapshotExport,
    )

    rows = [
        (ImportReport.objects.all(), import_task),
        (Snapshot.any_state.filter(rounds__isnull=True), freeze_task),
        (SnapshotExport.objects.all(), export_task),
        (SnapshotComparison.objects.all(), compare_task),
        (ProjectFigures.objects.all(), figures_task),
    ]
    held = task_queue.held()
    requeued = []
    for queryset, row_task in rows:
        queued = queryset.filter(status="queued").order_by("pk")
        for pk in queued.values_list("pk", flat=True)[: task_queue.SCAN_LIMIT]:
            if (row_task.module_path, (pk,)) not in held:
                row_task.enqueue(pk)
                requeued.append(f"{queryset.model.__name__} {pk}")
    if requeued:
        logger.warning("queued again, their task lost: %s", ", ".join(requeued))
    return requeued
