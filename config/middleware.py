"""Refuse API input the database cannot store: NUL characters and lone surrogates."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse


def unstorable_text(value: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    """Yield (path, problem) for every string in a JSON value that cannot be stored.

    PostgreSQL text and JSON refuse NUL (U+0000); no database can encode a lone UTF-16
    surrogate as UTF-8.
    """
    if isinstance(value, str):
        if "\x00" in value:
            yield where, "contains a NUL character (\\u0000)"
        else:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                yield (
                    where,
                    "contains a lone surrogate, which is not valid Unicode text",
                )
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from unstorable_text(key, f"{where} key")
            yield from unstorable_text(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from unstorable_text(item, f"{where}[{i}]")


class RejectUnstorableText:
    """Answer 400 for an API request whose JSON body or query holds unstorable text."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            problems = list(unstorable_text(dict(request.GET.lists()), "query"))
            if (
                not problems
                and request.content_type == "application/json"
                and request.body
            ):
                try:
                    body = json.loads(request.body)
                except ValueError:
                    body = None  # malformed JSON: the API itself answers that
                problems = list(unstorable_text(body))
            if problems:
                where, problem = problems[0]
                return JsonResponse(
                    {
                        "detail": f"text at {where} {problem}; remove it and send the request again"
                    },
                    status=400,
                )
        return self.get_response(request)
