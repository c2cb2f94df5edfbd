"""The pages' side of the error convention: a workflow's ValidationError becomes a form error.

User-fixable input raises Django's `ValidationError` everywhere; the
API maps it to a 400 once (config/api.py) and pages map it here, so no view
catches it by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest

T = TypeVar("T")


def act(
    target: forms.Form | HttpRequest, action: Callable[..., T], *args, **kwargs
) -> T | None:
    """Return `action(*args, **kwargs)`, or None when it refuses the user's input.

    A `ValidationError` it raises becomes a non-field error of the form `target`,
    or, for a page without a form (a button that posts), an error message for the
    request `target` to show after its redirect.
    """
    try:
        return action(*args, **kwargs)
    except ValidationError as exc:
        if isinstance(target, forms.BaseForm):
            target.add_error(None, exc)
        else:
            messages.error(target, "; ".join(exc.messages))
        return None


def outcome(
    action: Callable[..., T], *args, **kwargs
) -> tuple[T | None, ValidationError | None]:
    """Return `(action(*args, **kwargs), None)`, or `(None, the refusal)`.

    For a page that shows a refusal inline (a filter it cannot read, a download it
    cannot make) with the status it chooses; `act` is for forms and buttons.
    """
    try:
        return action(*args, **kwargs), None
    except ValidationError as exc:
        return None, exc


def refusal_text(exc: ValidationError) -> str:
    """Return a refusal's messages as one line."""
    return "; ".join(exc.messages)
