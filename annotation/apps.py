from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _create_role_groups(**kwargs) -> None:
    from config.roles import ensure_groups

    ensure_groups()


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self) -> None:
        # Like Django's own permissions: the role groups exist in every migrated database.
        post_migrate.connect(_create_role_groups, sender=self)
        # Every registration, by command, page or API, gets its audit entry.
        from annotation.audit import record_model_registration
        from inference.registry import model_registered

        model_registered.connect(
            record_model_registration, dispatch_uid="audit-model-register"
        )
