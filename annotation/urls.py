"""Pages of the annotation app: workspace, review, data pages."""
from django.urls import path

from annotation import views  # noqa: F401

app_name = "annotation"

urlpatterns: list = [
    # workspace (annotators)
    # review, dashboard (researchers/admins)
    # snapshots, export, import (researchers)
]
