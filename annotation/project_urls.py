"""URLs of the admins' project management pages (mounted at /projects/)."""

from django.urls import path

from annotation import project_views

app_name = "projects"

urlpatterns = [
    path("", project_views.projects, name="projects"),
    path("new/", project_views.new_project, name="new"),
    path("<slug:name>/archive/", project_views.archive, name="archive"),
    path("<slug:name>/prompts/", project_views.prompts, name="prompts"),
    path("<slug:name>/prompts/held/", project_views.held, name="held"),
]
