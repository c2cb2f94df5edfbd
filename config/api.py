"""The REST API: one NinjaAPI at /api/ with session or token auth and plain 4xx bodies.

OpenAPI 3.1 at /api/openapi.json, browsable docs at /api/docs. Every operation
authenticates by a per-user token (`Authorization: Bearer fl_...`) holding the scope
the operation declares (config/scopes.py) or by the Django session (with CSRF on unsafe
methods), then checks the caller's role on the server.
Errors always have the body `{"detail": ...}`: 400 bad input, 401 no credentials,
403 a missing right, 404 nothing there, 409 a conflict with the current state.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI

from config.scopes import UNDECLARED

api = NinjaAPI(
    title="Feedback loop API",
    version="1",
    description=(
        "Projects, prompts, rounds, ranking tasks, snapshots, exports, imports, policies "
        "and training rounds of the human-feedback platform."
    ),
    auth=UNDECLARED,
    urls_namespace="api",
)


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return api.create_response(request, {"detail": "; ".join(exc.messages)}, status=400)


@api.exception_handler(PermissionDenied)
def on_permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(
        request,
        {"detail": str(exc) or "You do not have the role this needs."},
        status=403,
    )


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return api.create_response(
        request, {"detail": str(exc) or "Not found."}, status=404
    )


from annotation.api import router as annotation_router  # noqa: E402
from annotation.playground import router as playground_router  # noqa: E402
from inference.api import router as inference_router  # noqa: E402
from training.api import router as training_router  # noqa: E402

api.add_router("/", annotation_router)
api.add_router("/", playground_router)
api.add_router("/", inference_router)
api.add_router("/", training_router)
