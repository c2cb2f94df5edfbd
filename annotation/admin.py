"""The Django admin site for annotation rows: browse and fix, never the daily workflow.

Rankings, leases and snapshots are read-only here: they are written by
`assignment.py` and `snapshots.py`, which keep the task figures consistent.
"""

from django.contrib import admin

from annotation.models import (
    AnnotatorProfile,
    AuditEntry,
    Lease,
    Membership,
    Project,
    ProjectFigures,
    Prompt,
    Ranking,
    RankingTask,
    Response,
    Round,
    Snapshot,
    SnapshotComparison,
    SnapshotExport,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """An admin that shows rows and changes none."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    inlines = (MembershipInline,)
    list_display = (
        "name",
        "title",
        "responses_per_task",
        "overlap",
        "gold_rate",
        "current_policy",
        "archived_at",
    )
    search_fields = ("name", "title")


@admin.register(AnnotatorProfile)
class AnnotatorProfileAdmin(admin.ModelAdmin):
    list_display = (
        "user",
        "is_simulated",
        "is_paused",
        "paused_reason",
        "reinstated_at",
    )
    list_filter = ("is_simulated", "is_paused")
    search_fields = ("user__username",)


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "__str__", "is_held_out", "source")
    list_filter = ("project", "is_held_out")
    readonly_fields = ("content_hash",)


@admin.register(Round)
class RoundAdmin(ReadOnlyAdmin):
    list_display = ("project", "number", "policy", "strategy", "created_at")
    list_filter = ("project",)


class ResponseInline(admin.TabularInline):
    model = Response
    fields = ("position", "policy", "text")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(RankingTask)
class RankingTaskAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "project",
        "round",
        "ranking_count",
        "overlap",
        "agreement",
        "is_gold",
    )
    list_filter = ("project", "is_gold")
    list_select_related = ("project", "round")
    inlines = [ResponseInline]


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdmin):
    list_display = ("id", "task", "annotator", "status", "leased_at", "expires_at")
    list_filter = ("status",)
    list_select_related = ("task", "annotator")


@admin.register(Ranking)
class RankingAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "task",
        "annotator",
        "order",
        "is_skip",
        "is_current",
        "supersedes",
        "created_at",
    )
    list_filter = ("is_skip", "is_current", "task__project")
    list_select_related = ("task", "annotator")
    search_fields = ("annotator__username",)

    def get_queryset(self, request):
        """Every version, superseded ones included: the admin is for audit."""
        return Ranking.versions.select_related("task", "annotator")


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    list_display = ("name", "project", "status", "row_count", "sha256", "created_at")
    list_filter = ("project", "status")

    def get_queryset(self, request):
        """Freezes queued, running and failed too: the admin is for audit."""
        return Snapshot.any_state.select_related("project")


@admin.register(SnapshotExport)
class SnapshotExportAdmin(ReadOnlyAdmin):
    """Export builds, queued, running, done or failed (with why)."""

    list_display = (
        "snapshot",
        "fmt",
        "file_format",
        "status",
        "rows",
        "size",
        "created_at",
    )
    list_filter = ("status", "fmt", "file_format")
    list_select_related = ("snapshot",)


@admin.register(SnapshotComparison)
class SnapshotComparisonAdmin(ReadOnlyAdmin):
    """Comparisons the worker computed or computes, failed ones with why."""

    list_display = ("a", "b", "status", "created_at", "finished_at")
    list_filter = ("status",)
    list_select_related = ("a", "b")


@admin.register(ProjectFigures)
class ProjectFiguresAdmin(ReadOnlyAdmin):
    """Large projects' page figures the worker computed or computes."""

    list_display = ("project", "page", "status", "computed_at", "fingerprint")
    list_filter = ("page", "status")
    list_select_related = ("project",)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit log: read-only here as everywhere."""

    list_display = ("created_at", "actor_name", "action", "project", "object_type")
    list_filter = ("action",)
    search_fields = ("actor_name", "action", "object_id")

    def get_actions(self, request):
        # No bulk "delete selected": the log is never edited.
        return {}
