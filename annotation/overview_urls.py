"""URLs of the project overview (mounted at /overview/)."""

from django.urls import path

from annotation import overview_views

app_name = "overview"

urlpatterns = [
    path("<slug:name>/", overview_views.project_overview, name="project"),
    path("<slug:name>/publish/", overview_views.publish, name="publish"),
]
