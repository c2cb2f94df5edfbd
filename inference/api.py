"""The model-registry part of the REST API: registered policies and reward models.

Inference is the bottom layer, so this module checks roles with `config.roles`
directly instead of importing the annotation API's helpers.
"""

from datetime import datetime
from typing import Any, Literal

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.pagination import LimitOffsetPagination, paginate

from config.roles import is_admin, is_researcher
from config.scopes import ADMIN, READ, scoped
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
    source: str
    quantization: str
    architecture: str
    parameter_count: int | None
    dtype: str
    context_length: int | None
    has_chat_template: bool | None
    weights_sha256: str
    size_bytes: int | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime

    @staticmethod
    def resolve_parent(obj: Policy) -> str | None:
        return obj.parent.name if obj.parent_id else None


def _require_researcher(request: HttpRequest) -> None:
    if not is_researcher(request.auth):
        raise PermissionDenied("this operation needs the researcher or admin role")


class RegisterModelIn(Schema):
    name: str = Field(
        ..., max_length=200, description="Unique name; also the model's folder name."
    )
    source: str = Field(
        ...,
        max_length=1_000,
        description="A path on the server (Hugging Face folder, .gguf file, PEFT "
        "adapter folder) or a hub id.",
    )
    kind: Literal["policy", "reward"] = "policy"
    parent: str = Field(
        "", max_length=200, description="A registered model it was derived from."
    )
    base: str = Field(
        "",
        max_length=200,
        description="For an adapter: the registered model it sits on.",
    )
    allow_pickle: bool = Field(
        False, description="Accept pickle-only (.bin) weights from a trusted source."
    )
    chat_template: str = Field(
        "",
        max_length=1_000,
        description="A Jinja chat-template file on the server, if it has none.",
    )


@router.post(
    "/policies",
    auth=scoped(ADMIN),
    response={201: PolicyOut, **ERRORS},
    tags=["policies"],
)
def register(request: HttpRequest, payload: RegisterModelIn):
    """Register a model from a server path or hub id (admins); converts GGUF files.

    Runs in the request: copying a folder takes seconds, converting a GGUF file
    tens of seconds on a CPU.
    """
    from inference.registry import register_model

    if not is_admin(request.auth):
        raise PermissionDenied("registering a model needs the admin role")
    policy = register_model(
        payload.name,
        payload.source,
        kind=payload.kind,
        parent=payload.parent,
        base=payload.base,
        allow_pickle=payload.allow_pickle,
        chat_template=payload.chat_template,
        actor=request.auth,
    )
    return Status(201, policy)


@router.get(
    "/policies",
    auth=scoped(READ),
    response={200: list[PolicyOut], **ERRORS},
    tags=["policies"],
)
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
    "/policies/{policy_id}",
    auth=scoped(READ),
    response={200: PolicyOut, **ERRORS},
    tags=["policies"],
)
def get_policy(request: HttpRequest, policy_id: int):
    """Return one registered model with its lineage fields (researchers, admins)."""
    _require_researcher(request)
    policy = Policy.objects.select_related("parent").filter(pk=policy_id).first()
    if policy is None:
        raise Http404(f"no policy {policy_id}")
    return policy
