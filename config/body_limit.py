"""The request-body cap: a body over MAX_REQUEST_BYTES gets 413 before anything reads it."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class RejectLargeBodies:
    """Answer 413 for a declared Content-Length over settings.MAX_REQUEST_BYTES.

    First in MIDDLEWARE: the CSRF check reads a POST's form data, and Django would spool
    a multipart upload to disk before any login check. A body without Content-Length
    is not read by Django at all (WSGI), so the declared length is the whole question.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        cap = settings.MAX_REQUEST_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django treats an unreadable length as no body
        if length > cap:
            message = (
                f"the request body is {length} bytes, over the {cap}-byte limit "
                "(MAX_REQUEST_BYTES); send a smaller file or split it"
            )
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain")
        return self.get_response(request)
