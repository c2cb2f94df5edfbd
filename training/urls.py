"""Pages of the training app: launch, round monitor, cancel, resume, model registry, deploy."""

from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("", views.round_list, name="rounds"),
    path("launch/", views.launch, name="launch"),
    path("rounds/<int:pk>/", views.round_detail, name="round"),
    path("rounds/<int:pk>/cancel/", views.cancel, name="cancel"),
    path("rounds/<int:pk>/resume/", views.resume, name="resume"),
    path("jobs/<int:pk>/log/", views.job_log, name="job_log"),
    path("models/", views.registry, name="registry"),
    path("policies/<int:pk>/deploy/", views.deploy, name="deploy"),
    path("rollback/", views.rollback, name="rollback"),
    path("models/register/", views.register, name="register_model"),
]
