"""The playground: chat with any registered policy, its reply streamed as it is generated.

The web tier only relays: `inference.client` asks the inference process
(`manage.py serve_inference`, started by `make run`) and each piece goes on to the
browser as a server-sent event (`data: {json}` lines), so no web process imports
torch. A conversation can be added to a project's prompt pool (curated as any
other prompt). It lives here, not in `inference`, because the pool is annotation's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from ninja import Field, Router, Schema, Status

from annotation.api import (
    ERRORS,
    ErrorOut,
    caller,
    require_admin,
    require_researcher,
)
from annotation.membership import get_project_for
from annotation.models import Project
from annotation.pool import add_prompts
from config.roles import ADMIN, RESEARCHER, role_required
from config.scopes import DATA, READ, scoped
from inference import client
from inference.models import Policy

router = Router(tags=["playground"])

# A streaming reply holds one web thread (gunicorn gthread): bound its tokens and time.
MAX_NEW_TOKENS = 256
MAX_SECONDS = 90.0
MAX_TURNS = 40


class ChatMessage(Schema):
    role: Literal["system", "user", "assistant"]
    content: str = Field(..., max_length=8000)


class ChatSampling(Schema):
    temperature: float = Field(0.7, ge=0, description="0 is greedy decoding.")
    top_k: int = Field(0, ge=0, description="0 turns the filter off.")
    top_p: float = Field(1.0, gt=0, le=1, description="1 turns the filter off.")
    max_new_tokens: int = Field(128, ge=1, le=MAX_NEW_TOKENS)
    seed: int = 0


class ChatIn(Schema):
    policy: str = Field(..., max_length=200, description="A registered policy's name.")
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_TURNS)
    sampling: ChatSampling = Field(default_factory=ChatSampling)


class PlaygroundPoolIn(Schema):
    project: str = Field(..., max_length=100)
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_TURNS)


class PlaygroundPoolOut(Schema):
    added: list[int]
    rejected: list[dict]
    flagged: list[dict]


def chat_policies():
    """Return the policies one can chat with: registered, with weights, of kind policy."""
    return Policy.objects.filter(
        kind=Policy.Kind.POLICY, status=Policy.Status.READY
    ).exclude(base_path="")


def request_error(request: HttpRequest, status: int, detail: str) -> HttpResponse:
    """Return the API's plain error body `{"detail": ...}` with this status."""
    from config.api import api

    return api.create_response(request, {"detail": detail}, status=status)


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def relay(events: Iterator[dict]) -> Iterator[bytes]:
    """Yield the inference process's events for this reply as server-sent events."""
    for event in events:
        yield _sse(event)


@router.post(
    "/playground/chat",
    auth=scoped(READ),
    response={200: Any, 503: ErrorOut, **ERRORS},
    summary="Stream a policy's reply to a conversation (text/event-stream)",
    openapi_extra={
        "responses": {
            "200": {
                "description": "Server-sent events, one JSON object per `data:` line: "
                '{"event": "token", "text": ...} as generated, then {"event": "done", '
                '"tokens": N, "seconds": S} or {"event": "error", "detail": ...}.',
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        }
    },
)
def chat(request: HttpRequest, payload: ChatIn) -> HttpResponse:
    """Researchers and admins: stream `policy`'s next reply to `messages`."""
    require_researcher(request)
    policy = get_object_or_404(chat_policies(), name=payload.policy)
    messages = [m.dict() for m in payload.messages]
    if messages[-1]["role"] != "user":
        raise ValidationError("the conversation must end with the user's message")
    try:
        events = client.chat(
            policy, messages, payload.sampling.dict(), total_s=MAX_SECONDS
        )
    except client.InferenceUnavailable as exc:
        return request_error(request, 503, str(exc))
    response = StreamingHttpResponse(relay(events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the pieces
    return response


@router.post(
    "/playground/pool",
    auth=scoped(DATA),
    response={201: PlaygroundPoolOut, **ERRORS},
    summary="Add a conversation to a project's prompt pool",
)
def add_to_pool(request: HttpRequest, payload: PlaygroundPoolIn) -> tuple[int, dict]:
    """Admins: curate the conversation up to its last user message into the pool."""
    require_admin(request)
    project = get_project_for(caller(request), payload.project)
    messages = [m.dict() for m in payload.messages]
    while messages and messages[-1]["role"] != "user":
        messages.pop()  # a prompt ends with what the user asked
    if not messages:
        raise ValidationError("the conversation has no user message to add")
    report = add_prompts(
        project, [messages], source="playground", actor=caller(request)
    )
    return Status(201, report.as_dict())


@role_required(RESEARCHER, ADMIN)
def page(request: HttpRequest) -> HttpResponse:
    """Show the playground: pick one or two policies, chat, add the conversation."""
    context = {
        "policies": list(chat_policies().values_list("name", flat=True)),
        "projects": list(
            Project.objects.visible_to(request.user).values_list("name", flat=True)
        ),
        "defaults": ChatSampling().dict(),
        "max_new_tokens": MAX_NEW_TOKENS,
    }
    return render(request, "annotation/playground.html", context)
