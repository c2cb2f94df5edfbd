"""The model-registry part of the REST API: registered policies and reward models.

Inference is the bottom layer, so this module checks roles with `config.roles`
directly instead of importing the annotation API's helpers.
"""

from datetime import datetime
from typing import Any, Literal

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from ninja import Field, Router, Schema
from ninja.pagination import LimitOffsetPagination, paginate

from config.roles import is_researcher
from inference.models import Policy

router = Router()


class ErrorOut(Schema):
    detail: Any = Field(..., description="What went wrong and how to fix it.")


ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}


class PolicyOut(Schema):
    id: int
    name: str
    kind: str
    status: str
    base_path: str
    adapter_path: str
    parent: str | None
    snapshot_name: str
    snapshot_sha256: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime

    @staticmethod
    def resolve_parent(obj: Policy) -> str | None:
        return obj.parent.name if obj.parent_id else None


def _require_researcher(request: HttpRequest) -> None:
    if not is_researcher(request.auth):
        raise PermissionDenied("this operation needs the researcher or admin role")


@router.get("/policies", response={200: list[PolicyOut], **ERRORS}, tags=["policies"])
@paginate(LimitOffsetPagination)
def list_policies(
    request: HttpRequest,
    kind: Literal["policy", "reward_model", "imported"] | None = None,
    status: Literal["ready", "archived"] | None = None,
) -> QuerySet:
    """List registered models, oldest first (researchers, admins)."""
    _require_researcher(request)
    policies = Policy.objects.select_related("parent").order_by("created_at", "id")
    if kind:
        policies = policies.filter(kind=kind)
    if status:
        policies = policies.filter(status=status)
    return policies


@router.get(
    "/policies/{policy_id}", response={200: PolicyOut, **ERRORS}, tags=["policies"]
)
def get_policy(request: HttpRequest, policy_id: int):
    """Return one registered model with its lineage fields (researchers, admins)."""
    _require_researcher(request)
    policy = Policy.objects.select_related("parent").filter(pk=policy_id).first()
    if policy is None:
        raise Http404(f"no policy {policy_id}")
    return policy
