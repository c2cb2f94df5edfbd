"""URLs of the audit log (mounted at /audit/): read-only, no edit or delete."""

from django.urls import path

from annotation import audit_views

app_name = "audit"

urlpatterns = [
    path("", audit_views.log, name="log"),
    path("export/", audit_views.export, name="export"),
]
