"""Background jobs of the annotation app: publishing a round (generation needs torch),
importing preference data, freezing snapshots, building their exports, comparing
them and computing a large project's page figures (a large file, freeze, export,
comparison or project must not hold a web process)."""

from __future__ import annotations

from django_tasks import task


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
