"""Annotation pages: thin views that check the role and call one workflow function."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.models import Project


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Show the projects and where each role goes next."""
    return render(request, "home.html", {"projects": Project.objects.all()})
