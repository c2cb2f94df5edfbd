"""A pretrain stage in a round: launched on a project's corpus, then optionally sft on
uploaded demonstrations; a real worker trains both and registers them with lineage."""

from __future__ import annotations

import json
import random

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.corpora import create_corpus
from annotation.models import Corpus, Snapshot
from inference.cards import read_card_metadata
from inference.models import Policy
from tests.conftest import login
from tests.training.conftest import wait_for
from training.forms import LaunchForm, launchable_stages
from training.models import Status, TrainingRound
from training.tasks import launch


def documents(n: int, seed: int = 0) -> str:
    """Return `n` JSONL documents about the tiny model's animals."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        facts = [
            f"The {rng.choice(('red', 'blue', 'green', 'small', 'big'))} "
            f"{rng.choice(('cat', 'dog', 'bird', 'fox'))} has {rng.randint(2, 8)} legs "
            f"and likes {rng.choice(('apples', 'fish', 'seeds'))}."
            for _ in range(rng.randint(3, 5))
        ]
        lines.append(json.dumps({"text": " ".join(facts)}))
    return "\n".join(lines) + "\n"


def demonstrations(n: int) -> str:
    rows = [
        {
            "prompt": f"What does the {colour} cat like, number {i}?",
            "completion": f"The {colour} cat likes fish, answer {i}.",
        }
        for i, colour in enumerate(("red", "blue", "green", "small", "big") * n)
    ][:n]
    return "\n".join(json.dumps(r) for r in rows) + "\n"


@pytest.fixture
def base(db, tiny_model_dir) -> Policy:
    return Policy.objects.create(name="tiny-base", base_path=str(tiny_model_dir))


@pytest.fixture
def corpora(project) -> tuple[Corpus, Corpus]:
    text = create_corpus(
        project, "animals", SimpleUploadedFile("a.jsonl", documents(60).encode())
    )
    demos = create_corpus(
        project,
        "demos",
        SimpleUploadedFile("d.jsonl", demonstrations(20).encode()),
        kind="demonstrations",
    )
    return text, demos


def test_pretrain_is_on_the_launch_form_through_the_registry(db):
    form = LaunchForm()
    assert "pretrain" in launchable_stages()
    assert "pretrain__eval_fraction" in form.fields
    assert "pretrain__base_path" not in form.fields  # set by the platform
    assert {"corpus", "demonstrations"} <= set(form.fields)


def test_a_pretrain_round_reads_its_corpus_and_freezes_no_snapshot(
    project, admin_user, base, corpora
):
    training_round = launch(
        project,
        "pretrain",
        user=admin_user,
        options={"policy": "tiny-base", "corpus": "animals"},
    )
    assert training_round.corpus == corpora[0]
    assert training_round.snapshot is None
    assert Snapshot.objects.count() == 0
    assert [j.stage for j in training_round.jobs.all()] == ["pretrain"]


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("pretrain", {}, "stage pretrain needs a corpus"),
        ("pretrain", {"corpus": "demos"}, "has no pre-training text corpus named"),
        ("pretrain", {"corpus": "nope"}, "has no pre-training text corpus named"),
        ("sft", {"corpus": "animals"}, "corpus='animals' is read by no stage"),
        (
            "pretrain,sft",
            {"corpus": "animals", "demonstrations": "animals"},
            "has no demonstrations (prompt/completion) corpus named 'animals'",
        ),
    ],
)
def test_launch_refuses_a_missing_or_wrong_corpus(
    project, admin_user, base, corpora, method, options, message
):
    with pytest.raises(ValidationError) as error:
        launch(
            project, method, user=admin_user, options={"policy": "tiny-base", **options}
        )
    assert message in error.value.messages[0]
    assert TrainingRound.objects.count() == 0


def test_the_api_launches_a_pretrain_round_and_names_its_corpus(
    project, admin_user, base, corpora
):
    response = login(admin_user).post(
        f"/api/projects/{project.name}/training-rounds",
        {
            "method": "pretrain",
            "options": {"policy": "tiny-base", "corpus": "animals"},
        },
        content_type="application/json",
    )
    body = response.json()
    assert response.status_code == 201, body
    assert (body["corpus"], body["corpus_sha256"]) == ("animals", corpora[0].sha256)


@pytest.mark.slow
def test_a_worker_pretrains_then_fine_tunes_on_demonstrations_and_registers_lineage(
    project, admin_user, base, corpora, start_worker
):
    text, demos = corpora
    start_worker()
    client = login(admin_user)
    response = client.post(
        reverse("training:launch"),
        {
            "project": project.name,
            "method": "pretrain,sft",
            "policy": "tiny-base",
            "corpus": "animals",
            "demonstrations": "demos",
            "queue": "default",
            "pretrain__max_steps": "4",
            "pretrain__max_length": "32",
            "pretrain__per_device_train_batch_size": "4",
            "sft__max_steps": "2",
            "sft__per_device_train_batch_size": "4",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    training_round = TrainingRound.objects.get()
    wait_for(
        lambda: TrainingRound.objects.get().status in (Status.SUCCEEDED, Status.FAILED),
        timeout=300,
        what="the round to finish",
    )
    training_round.refresh_from_db()
    assert training_round.status == Status.SUCCEEDED, training_round.error
    pretrained, fine_tuned = (
        training_round.jobs.get(stage=s).output_policy for s in ("pretrain", "sft")
    )
    assert (pretrained.parent, fine_tuned.parent) == (base, pretrained)
    assert (pretrained.snapshot_name, pretrained.snapshot_sha256) == (
        "corpus:animals",
        text.sha256,
    )
    assert pretrained.config["corpus"] == text.lineage()
    assert pretrained.config["corpus"]["filters"]["near_duplicate_jaccard"] == 0.8
    assert pretrained.metrics["eval_perplexity"] > 0
    assert (fine_tuned.snapshot_name, fine_tuned.snapshot_sha256) == (
        "corpus:demos",
        demos.sha256,
    )
    assert training_round.output_policy == fine_tuned
    card = read_card_metadata(pretrained.base_path)["feedback_loop"]
    assert (card["snapshot"], card["snapshot_sha256"], card["method"]) == (
        "corpus:animals",
        text.sha256,
        "pretrain",
    )
