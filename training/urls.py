"""Pages of the training app: launch, round monitor, cancel."""
from django.urls import path

from training import views  # noqa: F401

app_name = "training"

urlpatterns: list = []
