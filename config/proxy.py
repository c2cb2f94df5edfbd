"""The client's address, as the TLS proxy in front of the web tier reports it."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """Return the client's IP address for login throttling.

    Behind the compose proxy (FORWARDED_CLIENT_IP=1) every connection comes from the
    proxy, which appends the client's address to X-Forwarded-For: the last entry is
    the one it saw. Without that setting the header is the client's to forge, so the
    socket's address is used.
    """
    if settings.FORWARDED_CLIENT_IP:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.META.get("REMOTE_ADDR")
