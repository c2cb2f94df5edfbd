from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Model registry and generation"

    def ready(self) -> None:
        from inference.judges import register_judge

        # The verifiable-instructions family's checker (inference.instructions),
        # asked for by name: the only app judge (the demo's) stays the default.
        register_judge("instructions", "inference.instructions:JUDGE", named_only=True)
