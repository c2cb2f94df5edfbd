"""Root URLs: pages of each app, login/logout, the admin site."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from annotation import playground
from annotation.views import home
from config.api import api

urlpatterns = [
    path("", home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("api/", api.urls),
    path("data/", include("annotation.data_urls")),
    path("training/", include("training.urls")),
    # The model registry moved under /training/; old links still land on it.
    path(
        "models/",
        RedirectView.as_view(pattern_name="training:registry"),
        name="old_registry",
    ),
    path("overview/", include("annotation.overview_urls")),
    path("playground/", playground.page, name="playground"),
    path("people/", include("annotation.people_urls")),
    path("audit/", include("annotation.audit_urls")),
    path("projects/", include("annotation.project_urls")),
    path("", include("annotation.urls")),
]
