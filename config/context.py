"""Template context: the roles of the signed-in user, for navigation."""

from django.http import HttpRequest

from config.roles import is_admin, is_annotator, is_researcher


def roles(request: HttpRequest) -> dict:
    """Expose role predicates to every template."""
    user = request.user
    return {
        "user_is_admin": is_admin(user),
        "user_is_researcher": is_researcher(user),
        "user_is_annotator": is_annotator(user),
    }
