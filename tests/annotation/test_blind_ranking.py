"""Nothing an annotator sees tells which policy wrote a response (issue 12, item 2).

Rounds are published with two policies; an annotator then works through every task
by the workspace page and the API. What they are shown must carry no response id,
no policy name, no generation time, an order of responses unrelated to the policy,
and markup that depends only on a response's handle and text.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter

import pytest
from django.urls import reverse

from annotation.models import Handles, Project, Prompt, RankingTask, Response
from annotation.rounds import publish_round
from inference.registry import register_policy
from inference.sampling import SamplingConfig
from tests.annotation.factories import make_policy
from tests.conftest import login

ROUNDS, PROMPTS_PER_ROUND = 3, 8
# A standalone number: not part of a word or a token such as the CSRF token.
NUMBER = re.compile(r"(?<![A-Za-z0-9])\d+(?![A-Za-z0-9])")
RESPONSE_CARD = re.compile(r'<li class="response card".*?</li>', re.S)
CHIP = re.compile(r'<li class="chip".*?</li>', re.S)


@pytest.fixture
def published(project, annotator, tiny_model_dir):
    """Three rounds of a new policy against its parent, one candidate each."""
    # Response ids far above any handle, task, lease or count: a leaked id is seen.
    filler = Project.objects.create(name="filler")
    task = RankingTask.objects.create(
        project=filler, prompt=Prompt.objects.create(project=filler, messages="x")
    )
    Response.objects.bulk_create(
        Response(task=task, policy=make_policy(), text="x") for _ in range(1_000)
    )
    new = register_policy("tiny-new", base_path=tiny_model_dir)
    old = register_policy("tiny-old", base_path=tiny_model_dir)
    for i in range(ROUNDS * PROMPTS_PER_ROUND):
        Prompt.objects.create(project=project, messages=f"Tell me about cat {i}.")
    project.gold_rate = 0
    project.save()
    for seed in range(ROUNDS):
        publish_round(
            project,
            policy=new,
            earlier_policies=[old],
            n_prompts=PROMPTS_PER_ROUND,
            sampling=SamplingConfig(num_candidates=1, max_new_tokens=4, seed=seed),
            seed=seed,
        )
    return project, old


def _work_through(project, annotator) -> list[tuple[RankingTask, str, dict]]:
    """Lease, look at and rank every task as the annotator; return what they saw."""
    client = login(annotator)
    workspace = reverse("annotation:annotate", args=[project.name])
    seen = []
    while True:
        lease = client.post(f"/api/projects/{project.name}/next-task")
        if lease.status_code == 204:
            return seen
        lease = lease.json()
        page = client.get(workspace).content.decode()
        task = RankingTask.objects.get(pk=lease["task"]["id"])
        seen.append((task, page, lease))
        order = [[r["handle"]] for r in reversed(lease["task"]["responses"])]
        answer = client.post(
            f"/api/leases/{lease['id']}/ranking",
            {"order": order, "unsafe": [1], "aspect_ratings": {}},
            content_type="application/json",
        )
        assert answer.status_code == 201, answer.content
        assert answer.json()["order"] == order


def _numbers(text: str) -> set[int]:
    return {int(n) for n in NUMBER.findall(text)}


def _json_ints(value) -> set[int]:
    if isinstance(value, dict):
        return set().union(*(_json_ints(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_json_ints(v) for v in value))
    if isinstance(value, str):
        return _numbers(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return {value}
    return set()


def test_annotators_see_no_response_id_policy_or_generation_time(published, annotator):
    project, _ = published
    seen = _work_through(project, annotator)
    assert len(seen) == ROUNDS * PROMPTS_PER_ROUND
    ids = set(
        Response.objects.filter(task__project=project).values_list("pk", flat=True)
    )
    assert min(ids) > 1_000
    client = login(annotator)
    history = client.get(reverse("annotation:history", args=[project.name]))
    mine = client.get("/api/my/rankings?limit=100").json()
    for task, page, lease in seen:
        responses = list(task.responses.all())
        stamps = {r.created_at.isoformat() for r in responses}
        assert not _numbers(page) & ids
        assert not _json_ints(lease) & ids
        assert [sorted(r) for r in lease["task"]["responses"]] == [
            ["handle", "id", "text"]
        ] * 2
        assert {r["id"] for r in lease["task"]["responses"]} == {None}
        for text in (page, json.dumps(lease)):
            assert "tiny-new" not in text and "tiny-old" not in text
            assert not any(stamp in text for stamp in stamps)
    assert not _numbers(history.content.decode()) & ids
    assert not _json_ints(mine) & ids
    assert {tuple(map(tuple, r["order"])) for r in mine["items"]} == {((2,), (1,))}


def test_the_older_policy_is_not_shown_at_any_one_place(published, annotator):
    project, old = published
    seen = _work_through(project, annotator)
    where_old = Counter()
    for task, _, lease in seen:
        handles = Handles.of_task(task.pk)
        (old_response,) = task.responses.filter(policy=old)
        where_old[handles.handle(old_response.pk)] += 1
        # The API lists the task's responses in handle order, texts as stored.
        assert [r["text"] for r in lease["task"]["responses"]] == [
            Response.objects.get(pk=rid).text for rid in handles.ids
        ]
    assert sorted(where_old) == [1, 2]
    assert max(where_old.values()) <= 0.75 * len(seen), where_old


def test_markup_depends_only_on_a_responses_handle_and_text(published, annotator):
    project, old = published
    seen = _work_through(project, annotator)
    by_handle: dict[tuple[str, int], dict[str, set[str]]] = {}
    for task, page, _ in seen:
        texts = [html.escape(r.text) for r in task.responses.order_by("position", "id")]
        authors = [r.policy.name for r in task.responses.order_by("position", "id")]
        for kind, pattern in (("card", RESPONSE_CARD), ("chip", CHIP)):
            blocks = pattern.findall(page)
            assert len(blocks) == len(texts)
            for handle, (block, text, author) in enumerate(
                zip(blocks, texts, authors, strict=True), start=1
            ):
                # A chip shows the text cut to 60 characters: blank it from its tag.
                block = re.sub(
                    r'(class="chip-text">).*?(</span>)', r"\1\2", block, flags=re.S
                )
                block = block.replace(text, "TEXT")
                found = by_handle.setdefault((kind, handle), {})
                found.setdefault(author, set()).add(block)
    for (kind, handle), found in by_handle.items():
        assert set(found) == {"tiny-new", "tiny-old"}, (kind, handle)
        variants = set().union(*found.values())
        assert len(variants) == 1, (kind, handle, variants)
        assert "policy" not in next(iter(variants)).lower()
