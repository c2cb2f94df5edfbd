"""URLs of the people pages (mounted at /people/): people, invitations, passwords."""

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from annotation import people_views
from annotation.people import password_link_tokens

app_name = "people"

urlpatterns = [
    path("", people_views.people, name="people"),
    path("<int:user_id>/", people_views.person, name="person"),
    path("<int:user_id>/reset-link/", people_views.reset_link, name="reset_link"),
    path(
        "set-password/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            token_generator=password_link_tokens,
            template_name="people/set_password.html",
            post_reset_login=True,
            post_reset_login_backend="django.contrib.auth.backends.ModelBackend",
            success_url=reverse_lazy("home"),
        ),
        name="set_password",
    ),
    path(
        "password/",
        auth_views.PasswordChangeView.as_view(
            template_name="people/password_change.html",
            success_url=reverse_lazy("people:password_changed"),
        ),
        name="password_change",
    ),
    path(
        "password/changed/",
        auth_views.PasswordChangeDoneView.as_view(
            template_name="people/password_changed.html"
        ),
        name="password_changed",
    ),
]
