"""Pages for researchers' data work: snapshots, downloads, imports, corpora, API tokens."""

from django.urls import path

from annotation import data_views, manager_views

app_name = "data"

urlpatterns = [
    path("projects/<slug:name>/snapshots/", data_views.snapshots, name="snapshots"),
    path("snapshots/<int:snapshot_id>/", data_views.snapshot, name="snapshot"),
    path(
        "snapshots/<int:snapshot_id>/diff/",
        data_views.snapshot_diff,
        name="snapshot_diff",
    ),
    path("snapshots/<int:snapshot_id>/download/", data_views.download, name="download"),
    path("exports/<int:export_id>/", data_views.export, name="export"),
    path("projects/<slug:name>/tasks/", manager_views.tasks, name="manager"),
    path(
        "projects/<slug:name>/tasks/<int:task_id>/",
        manager_views.task,
        name="manager_task",
    ),
    path(
        "projects/<slug:name>/tasks/snapshot/",
        manager_views.freeze,
        name="manager_freeze",
    ),
    path("projects/<slug:name>/imports/", data_views.imports, name="imports"),
    path("imports/<int:report_id>/", data_views.import_report, name="import_report"),
    path("projects/<slug:name>/corpora/", data_views.corpora, name="corpora"),
    path(
        "projects/<slug:name>/corpora/<slug:corpus>/",
        data_views.corpus,
        name="corpus",
    ),
    path("tokens/", data_views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", data_views.revoke, name="revoke"),
]
