"""Deploying a policy: making it the project's current policy, and rolling that back.

`publish_round` samples from the project's current policy when no policy is named,
so deploying is what sends a trained policy back into the labelling loop. Every
change is a `Deployment` row; rolling back deploys the policy the newest one
replaced.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.audit import record
from annotation.models import Project
from inference.models import Policy
from training.models import Deployment


def is_evaluated(policy: Policy) -> bool:
    """Return whether the policy carries evaluation results (the evaluate stage's or a win rate)."""
    metrics = policy.metrics or {}
    return bool(metrics.get("evaluated")) or any("win_rate" in key for key in metrics)


def check_deployable(policy: Policy, *, served: bool = False) -> None:
    """Raise ValidationError naming the reason a policy cannot serve a project.

    A trained policy (one with a parent) must have been evaluated against its
    parent, unless it `served` the project before (a rollback restores it); a root
    policy (a base or SFT model brought in) has nothing to be compared with and is
    deployable as it is.
    """
    if policy.kind != Policy.Kind.POLICY:
        raise ValidationError(
            f"{policy.name} is a {policy.get_kind_display().lower()}, not a policy; "
            "deploy a policy that generates responses"
        )
    if policy.status != Policy.Status.READY:
        raise ValidationError(
            f"{policy.name} is {policy.status}; only a ready policy can be deployed"
        )
    if not policy.has_weights():
        raise ValidationError(
            f"{policy.name} has no weights to load; register its base_path first"
        )
    if policy.parent_id is not None and not served and not is_evaluated(policy):
        raise ValidationError(
            f"{policy.name} has not been evaluated against its parent {policy.parent}; "
            "train it in a round with evaluation on (the default) or store its win rate first"
        )


def deploy_policy(
    project: Project,
    policy: Policy,
    *,
    user: AbstractBaseUser | None,
    is_rollback: bool = False,
) -> Deployment:
    """Make `policy` the project's current policy and record the deployment.

    Raise ValidationError when the policy is not a ready policy with weights, or is
    already current. A rollback may restore a policy that served the project before
    even if it was never evaluated (the demo's SFT policy, set up by `make run`).
    """
    served = (
        is_rollback
        and Deployment.objects.filter(project=project, previous=policy).exists()
    )
    check_deployable(policy, served=served)
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project.pk)
        if project.current_policy_id == policy.pk:
            raise ValidationError(
                f"{policy.name} is already the current policy of {project.name}"
            )
        deployment = Deployment.objects.create(
            project=project,
            policy=policy,
            previous=project.current_policy,
            is_rollback=is_rollback,
            deployed_by=user,
        )
        project.current_policy = policy
        project.save(update_fields=["current_policy"])
        action = "deployment.rollback" if is_rollback else "deployment.deploy"
        record(
            user,
            action,
            obj=deployment,
            before={"policy": deployment.previous and deployment.previous.name},
            after={"policy": policy.name},
        )
    return deployment


def rollback_policy(project: Project, *, user: AbstractBaseUser | None) -> Deployment:
    """Deploy again the policy that the newest deployment replaced.

    Raise ValidationError when the project has no earlier policy to return to.
    """
    newest = (
        Deployment.objects.filter(project=project)
        .order_by("-created_at", "-id")
        .first()
    )
    if newest is None or newest.previous is None:
        raise ValidationError(
            f"project {project.name} has no earlier deployed policy to roll back to; "
            "deploy one from the registry instead"
        )
    return deploy_policy(project, newest.previous, user=user, is_rollback=True)
