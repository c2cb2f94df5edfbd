"""Pages of the model registry."""
from django.urls import path

from inference import views  # noqa: F401

app_name = "inference"

urlpatterns: list = []
