"""The training app's configuration: registers the extra stages the settings name."""

import importlib

from django.apps import AppConfig
from django.conf import settings


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        """Import the modules of `TRAINING_STAGE_MODULES`; each registers its stages."""
        for module in getattr(settings, "TRAINING_STAGE_MODULES", []):
            importlib.import_module(module)
