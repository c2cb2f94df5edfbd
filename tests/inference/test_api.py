"""The registry API registers a model from a server path (admins) and reports what it is."""

from pathlib import Path

from tests.conftest import login


def test_an_admin_registers_a_server_folder(admin_user, settings, tiny_model_dir):
    response = login(admin_user).post(
        "/api/policies",
        {"name": "tiny", "source": str(tiny_model_dir)},
        content_type="application/json",
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["base_path"], body["architecture"], body["dtype"]) == (
        "tiny",
        str(Path(settings.MODEL_DIR) / "tiny"),
        "LlamaForCausalLM",
        "float32",
    )
    assert body["has_chat_template"] is True


def test_a_bad_source_is_a_400_naming_it(admin_user):
    response = login(admin_user).post(
        "/api/policies",
        {"name": "x", "source": "/no/such/model"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "'/no/such/model' does not exist" in response.json()["detail"]


def test_a_researcher_cannot_register(researcher, tiny_model_dir):
    response = login(researcher).post(
        "/api/policies",
        {"name": "tiny", "source": str(tiny_model_dir)},
        content_type="application/json",
    )
    assert response.status_code == 403
