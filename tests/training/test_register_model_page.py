"""Admins register a model from the registry page by a server path."""

from pathlib import Path

from django.urls import reverse

from inference.models import Policy
from tests.conftest import login

URL = reverse("training:register_model")


def test_an_admin_registers_a_server_folder_from_the_page(
    admin_user, settings, tiny_model_dir
):
    response = login(admin_user).post(
        URL,
        {"name": "tiny", "source": str(tiny_model_dir), "kind": "policy"},
        follow=True,
    )
    policy = Policy.objects.get(name="tiny")
    assert policy.base_path == str(Path(settings.MODEL_DIR) / "tiny")
    assert (
        f"Registered tiny: LlamaForCausalLM, {policy.parameter_count:,} parameters"
        in (response.content.decode())
    )


def test_a_bad_source_is_shown_with_its_fix(admin_user):
    response = login(admin_user).post(
        URL, {"name": "x", "source": "/no/such/model", "kind": "policy"}, follow=True
    )
    assert "&#x27;/no/such/model&#x27; does not exist" in response.content.decode()
    assert Policy.objects.count() == 0


def test_a_missing_field_is_a_400(admin_user):
    assert login(admin_user).post(URL, {"name": "x"}).status_code == 400


def test_a_researcher_cannot_register_from_the_page(researcher, tiny_model_dir):
    response = login(researcher).post(
        URL, {"name": "tiny", "source": str(tiny_model_dir), "kind": "policy"}
    )
    assert response.status_code == 403
    assert Policy.objects.count() == 0
