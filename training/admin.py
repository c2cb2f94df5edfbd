"""Django admin views of training rounds, their jobs and deployments (read-mostly)."""

from django.contrib import admin

from training.models import Deployment, TrainingJob, TrainingRound


class TrainingJobInline(admin.TabularInline):
    model = TrainingJob
    extra = 0
    fields = (
        "index",
        "stage",
        "status",
        "step",
        "total_steps",
        "heartbeat_at",
        "output_policy",
    )
    readonly_fields = fields
    can_delete = False


@admin.register(TrainingRound)
class TrainingRoundAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "project",
        "method",
        "status",
        "parent_policy",
        "output_policy",
        "created_at",
    )
    list_filter = ("status", "project")
    readonly_fields = (
        "snapshot",
        "parent_policy",
        "output_policy",
        "config",
        "error",
        "created_by",
        "created_at",
        "finished_at",
    )
    inlines = [TrainingJobInline]


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "round",
        "index",
        "stage",
        "status",
        "step",
        "total_steps",
        "heartbeat_at",
    )
    list_filter = ("status", "stage")
    readonly_fields = (
        "config",
        "history",
        "last_metrics",
        "error",
        "run_dir",
        "task_id",
        "pid",
    )


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = (
        "project",
        "policy",
        "previous",
        "is_rollback",
        "deployed_by",
        "created_at",
    )
    list_filter = ("project",)
