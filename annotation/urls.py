"""Pages of the annotation app: workspace, review, gold, settings, dashboard."""

from django.urls import path

from annotation import history_views, views

app_name = "annotation"

urlpatterns: list = [
    # workspace (annotators)
    path("projects/<slug:name>/annotate/", views.annotate, name="annotate"),
    path("projects/<slug:name>/annotate/submit/", views.submit, name="submit"),
    path("projects/<slug:name>/annotate/skip/", views.skip, name="skip"),
    path("projects/<slug:name>/history/", history_views.history, name="history"),
    path(
        "projects/<slug:name>/history/<int:ranking_id>/",
        history_views.revise,
        name="revise",
    ),
    # review (researchers and admins)
    path("projects/<slug:name>/review/", views.review, name="review"),
    path(
        "projects/<slug:name>/review/<int:task_id>/",
        views.review_task,
        name="review_task",
    ),
    # quality and settings (admins)
    path("projects/<slug:name>/gold/", views.gold, name="gold"),
    path(
        "projects/<slug:name>/gold/<int:task_id>/unmark/", views.unmark, name="unmark"
    ),
    path(
        "projects/<slug:name>/annotators/<int:user_id>/reinstate/",
        views.reinstate_annotator,
        name="reinstate",
    ),
    path("projects/<slug:name>/settings/", views.project_settings, name="settings"),
    path("projects/<slug:name>/dashboard/", views.dashboard, name="dashboard"),
    # snapshots, export, import (researchers)
]
