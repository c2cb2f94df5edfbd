"""The inference process streams replies piece by piece and keeps an LRU of policies."""

from __future__ import annotations

import time

import pytest

from inference import client
from inference.models import Policy
from inference.server import PolicyCache, parse_sampling


@pytest.fixture
def tiny_policy(db, tiny_model_dir) -> Policy:
    return Policy.objects.create(name="tiny", base_path=str(tiny_model_dir))


def test_chat_streams_tokens_then_done(inference_server, tiny_policy):
    sampling = {"temperature": 1.0, "max_new_tokens": 24, "seed": 3}
    messages = [{"role": "user", "content": "The red cat has"}]
    arrivals = []
    events = []
    for event in client.chat(tiny_policy, messages, sampling):
        arrivals.append(time.monotonic())
        events.append(event)
    assert events[-1]["event"] == "done", events[-1]
    tokens = [e for e in events if e["event"] == "token"]
    assert len(tokens) >= 2, events
    assert events[-1]["tokens"] == len(tokens)
    assert arrivals[0] < arrivals[-2]  # the first piece came before the last
    # Same seed, same reply: the controls reach generate.
    again = [e for e in client.chat(tiny_policy, messages, sampling)]
    assert [e.get("text") for e in again[:-1]] == [e["text"] for e in tokens]


def test_bad_sampling_comes_back_as_an_error_event(inference_server, tiny_policy):
    events = list(
        client.chat(tiny_policy, [{"role": "user", "content": "hi"}], {"top_p": 2})
    )
    assert events[-1]["event"] == "error"
    assert "top_p" in events[-1]["detail"]


def test_parse_sampling_bounds_the_reply_and_names_unknown_keys():
    assert parse_sampling({"temperature": 0}).num_candidates == 1
    with pytest.raises(ValueError, match="at most"):
        parse_sampling({"max_new_tokens": 100_000})
    with pytest.raises(ValueError, match="unknown sampling keys"):
        parse_sampling({"mix": []})


def test_cache_keeps_the_most_recently_used():
    loads = []

    def loader(base: str, adapter: str):
        loads.append(base)
        return (base, None)

    cache = PolicyCache(2, loader=loader)
    cache.get("a", "A", "")
    cache.get("b", "B", "")
    cache.get("a", "A", "")  # a is now the most recent
    cache.get("c", "C", "")  # evicts b
    assert cache.names() == ["a", "c"]
    cache.get("a", "A", "")
    assert loads == ["A", "B", "C"]


def test_ping_reports_loaded_policies(inference_server, tiny_policy):
    assert client.ping() == {"event": "pong", "loaded": []}
    list(client.chat(tiny_policy, [{"role": "user", "content": "hi"}], {}))
    assert client.ping()["loaded"] == ["tiny"]


def test_no_server_is_a_clear_error(settings, tmp_path, tiny_policy):
    settings.INFERENCE_SOCKET = tmp_path / "absent.sock"
    with pytest.raises(client.InferenceUnavailable, match="serve_inference"):
        client.chat(tiny_policy, [{"role": "user", "content": "hi"}], {})
