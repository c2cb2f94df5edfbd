"""Model registry pages: lineage, metrics, deploy and roll back, disk use."""

from __future__ import annotations

from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.models import Project
from config.roles import ADMIN, RESEARCHER, role_required
from inference.lineage import lineage_svg
from inference.models import Policy


@role_required(RESEARCHER, ADMIN)
def registry(request: HttpRequest) -> HttpResponse:
    """Show every registered model with its lineage, metrics and disk use.

    The round that produced a policy comes through the reverse relation
    `produced_by_jobs` (the training app stands on this one, never the reverse).
    """
    policies = list(
        Policy.objects.select_related("parent").prefetch_related(
            Prefetch("produced_by_jobs"), "current_for_projects"
        )
    )
    projects = list(
        Project.objects.visible_to(request.user).select_related("current_policy")
    )
    current_ids = {p.current_policy_id for p in projects if p.current_policy_id}
    rows = []
    for policy in policies:
        size = policy.disk_bytes()
        jobs = list(policy.produced_by_jobs.all())
        rows.append(
            {
                "policy": policy,
                "bytes": size,
                "job": jobs[0] if jobs else None,
                "metrics": sorted(
                    (k, v)
                    for k, v in policy.metrics.items()
                    if isinstance(v, (int, float))
                ),
                "current_for": [p.name for p in policy.current_for_projects.all()],
            }
        )
    context = {
        "rows": rows,
        "projects": projects,
        "graph": lineage_svg(policies, current_ids),
        # A folder shared by several rows (one base under many full-model rows) counts once.
        "total_bytes": sum(
            {
                (r["policy"].adapter_path or r["policy"].base_path): r["bytes"]
                for r in rows
            }.values()
        ),
    }
    return render(request, "inference/registry.html", context)
