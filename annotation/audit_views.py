"""The audit log pages: read and filter the entries, download them; nothing edits them."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from annotation.audit import (
    FILTERS,
    export_lines,
    filter_entries,
    page_of,
    readable_entries,
)
from annotation.membership import visible_projects
from annotation.models import AuditEntry
from config.forms import outcome, refusal_text
from config.roles import ADMIN, RESEARCHER, role_required


def _text(value: object) -> str:
    return "—" if value is None else json.dumps(value, ensure_ascii=False)


@require_GET
@role_required(RESEARCHER, ADMIN)
def log(request: HttpRequest) -> HttpResponse:
    """List entries newest first, filtered by actor, action, project and dates."""
    params = {key: request.GET.get(key, "").strip() for key in FILTERS}
    page, refused = outcome(
        lambda: page_of(
            filter_entries(readable_entries(request.user), params),
            request.GET.get("before"),
        )
    )
    rows, following = page or ([], None)
    error = refusal_text(refused) if refused else ""
    for entry in rows:  # shown as JSON, as the export writes them
        entry.before_text = _text(entry.before)
        entry.after_text = _text(entry.after)
    query = urlencode({k: v for k, v in params.items() if v})
    return render(
        request,
        "annotation/audit.html",
        {
            "params": params,
            "rows": rows,
            "following": following,
            "query": query,
            "error": error,
            "projects": visible_projects(request.user).order_by("name"),
            "actions": AuditEntry.objects.order_by("action")
            .values_list("action", flat=True)
            .distinct(),
        },
        status=400 if error else 200,
    )


@require_GET
@role_required(RESEARCHER, ADMIN)
def export(request: HttpRequest) -> HttpResponse:
    """Download the filtered entries as JSON lines (`?format=jsonl`) or CSV."""
    params = {key: request.GET.get(key, "").strip() for key in FILTERS}
    fmt = request.GET.get("format", "jsonl")
    lines, refused = outcome(
        lambda: export_lines(
            filter_entries(readable_entries(request.user), params), fmt
        )
    )
    if refused:
        return HttpResponse(refusal_text(refused), status=400)
    response = StreamingHttpResponse(
        lines,
        content_type="text/csv" if fmt == "csv" else "application/x-ndjson",
    )
    response["Content-Disposition"] = f'attachment; filename="audit.{fmt}"'
    return response
