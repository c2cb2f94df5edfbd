"""Refuse API input the database cannot store or the server cannot walk: NUL characters,
lone surrogates, NaN and Infinity, JSON nested deeper than MAX_JSON_DEPTH."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

# No API body needs more (a prompt is a list of messages: depth 3).
MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """Return how deeply lists and objects nest in a JSON value (a scalar is 0)."""
    depth, level = 0, [value]
    while level:
        level = [
            item
            for v in level
            if isinstance(v, dict | list)
            for item in (v.values() if isinstance(v, dict) else v)
        ]
        depth += 1
    return depth - 1


def unstorable_text(value: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    """Yield (path, problem) for every value in a JSON value that cannot be stored.

    PostgreSQL text and JSON refuse NUL (U+0000); no database can encode a lone UTF-16
    surrogate as UTF-8; JSON has no NaN or Infinity (Python's parser accepts them) and
    no number or duration of ours is one.
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
    elif isinstance(value, float) and not math.isfinite(value):
        yield where, "is not a finite number (NaN or Infinity)"
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
            try:
                raw = (
                    request.body if request.content_type == "application/json" else b""
                )
            except RequestDataTooBig:
                return JsonResponse(
                    {
                        "detail": "the request body is over "
                        f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes; send less "
                        "per request"
                    },
                    status=400,
                )
            if not problems and raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None  # malformed JSON: the API itself answers that
                except RecursionError:
                    body, problems = None, [("$", "nests too deeply to read")]
                if not problems and json_depth(body) > MAX_JSON_DEPTH:
                    problems = [("$", f"nests deeper than {MAX_JSON_DEPTH} levels")]
                problems = problems or list(unstorable_text(body))
            if problems:
                where, problem = problems[0]
                return JsonResponse(
                    {
                        "detail": f"the JSON at {where} {problem}; no request of this "
                        "API needs that: send the documented shape"
                        if problem.startswith("nests")
                        else f"{'value' if 'finite' in problem else 'text'} at {where} "
                        f"{problem}; remove it and send the request again"
                    },
                    status=400,
                )
        return self.get_response(request)
