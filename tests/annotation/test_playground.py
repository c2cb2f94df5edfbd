"""The playground relays a policy's streamed reply; admins add conversations to a pool."""

from __future__ import annotations

import json

import pytest

from annotation.models import Prompt
from inference.models import Policy
from tests.conftest import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_policy(tiny_model_dir) -> Policy:
    return Policy.objects.create(name="tiny", base_path=str(tiny_model_dir))


def _post(client, path: str, body: dict):
    return client.post(path, json.dumps(body), content_type="application/json")


def _events(response) -> list[dict]:
    """Return the JSON events of a server-sent-event body, checking the framing."""
    body = b"".join(response.streaming_content).decode()
    chunks = [c for c in body.split("\n\n") if c]
    assert all(c.startswith("data: ") for c in chunks), body
    return [json.loads(c[len("data: ") :]) for c in chunks]


CHAT = {
    "policy": "tiny",
    "messages": [
        {"role": "user", "content": "The blue fox"},
        {"role": "assistant", "content": "has 4 legs."},
        {"role": "user", "content": "And the red cat?"},
    ],
    "sampling": {"temperature": 1.0, "max_new_tokens": 16, "seed": 1},
}


def test_researcher_gets_the_reply_as_server_sent_events(
    inference_server, tiny_policy, researcher
):
    response = _post(login(researcher), "/api/playground/chat", CHAT)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = _events(response)
    assert events[-1]["event"] == "done", events
    tokens = [e for e in events if e["event"] == "token"]
    assert tokens and events[-1]["tokens"] == len(tokens)


def test_sampling_controls_are_validated_before_any_generation(
    inference_server, tiny_policy, researcher
):
    body = {**CHAT, "sampling": {"top_p": 1.5}}
    assert _post(login(researcher), "/api/playground/chat", body).status_code == 422
    body = {**CHAT, "sampling": {"max_new_tokens": 100_000}}
    assert _post(login(researcher), "/api/playground/chat", body).status_code == 422


def test_conversation_must_end_with_the_user(inference_server, tiny_policy, admin_user):
    body = {**CHAT, "messages": CHAT["messages"][:2]}
    response = _post(login(admin_user), "/api/playground/chat", body)
    assert response.status_code == 400
    assert "end with the user" in response.json()["detail"]


def test_unknown_policy_is_404(inference_server, tiny_policy, researcher):
    body = {**CHAT, "policy": "nope"}
    assert _post(login(researcher), "/api/playground/chat", body).status_code == 404


def test_annotators_and_strangers_may_not_chat(tiny_policy, annotator, client):
    assert _post(login(annotator), "/api/playground/chat", CHAT).status_code == 403
    assert _post(client, "/api/playground/chat", CHAT).status_code == 401


def test_no_inference_process_is_a_503_naming_the_fix(
    settings, tmp_path, tiny_policy, researcher
):
    settings.INFERENCE_SOCKET = tmp_path / "none.sock"
    response = _post(login(researcher), "/api/playground/chat", CHAT)
    assert response.status_code == 503
    assert "serve_inference" in response.json()["detail"]


def test_admin_adds_the_conversation_up_to_the_last_user_turn(project, admin_user):
    messages = CHAT["messages"] + [{"role": "assistant", "content": "It has 4."}]
    response = _post(
        login(admin_user),
        "/api/playground/pool",
        {"project": project.name, "messages": messages},
    )
    assert response.status_code == 201, response.content
    (prompt_id,) = response.json()["added"]
    assert Prompt.objects.get(pk=prompt_id).messages == CHAT["messages"]


def test_researchers_may_not_add_to_a_pool(project, researcher):
    body = {"project": project.name, "messages": CHAT["messages"]}
    assert _post(login(researcher), "/api/playground/pool", body).status_code == 403


def test_page_lists_policies_and_projects_for_admins(
    tiny_policy, project, admin_user, annotator
):
    page = login(admin_user).get("/playground/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<option value="tiny">' in html
    assert 'id="pg-project"' in html
    assert login(annotator).get("/playground/").status_code == 403
