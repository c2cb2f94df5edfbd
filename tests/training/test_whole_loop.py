"""The whole feedback loop on micro models, in one test, with a real worker process.

build -> publish a round -> three annotators rank over HTTP -> export -> launch a
DPO round -> the worker trains and evaluates it -> the new policy is registered
with its lineage -> deployed -> the next round is generated from it.
"""

from __future__ import annotations

import json
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotation.models import Lease, Ranking, Round
from demo.project import create_demo_project
from inference.models import Policy
from tests.conftest import login, make_user
from training.deployment import deploy_policy
from training.models import Status, TrainingRound

pytestmark = pytest.mark.slow


def rank_everything_over_http(user, project_name: str) -> int:
    """Take tasks through the workspace until none is left; rank by display position."""
    client = login(user)
    submitted = 0
    while True:
        page = client.post(
            reverse("annotation:annotate", args=[project_name]), follow=True
        )
        assert page.status_code == 200
        lease = Lease.objects.filter(annotator=user, status=Lease.Status.ACTIVE).first()
        if lease is None:
            return submitted
        # The page names responses by handle, 1..K in display order.
        order = [[handle] for handle in range(1, lease.task.responses.count() + 1)]
        response = client.post(
            reverse("annotation:submit", args=[project_name]),
            {"lease": lease.pk, "order": json.dumps(order)},
        )
        assert response.status_code == 303, response.content.decode()[:500]
        submitted += 1


def test_the_whole_loop_runs_on_micro_models_with_a_real_worker(
    run_root, start_worker, admin_user
):
    started = time.monotonic()
    start_worker()  # boots while the models build
    call_command("build_demo_models", "--preset", "micro", stdout=StringIO())
    sft = Policy.objects.get(name="demo-sft")
    project, _ = create_demo_project(seed=0)
    project.current_policy = sft
    project.save()

    call_command(
        "publish_round",
        "--project",
        "demo",
        "--policy",
        "demo-sft",
        "--prompts",
        "3",
        "--k",
        "4",
        "--max-new-tokens",
        "12",
        stdout=StringIO(),
    )
    annotators = [
        make_user(f"annotator{i}", "annotator", projects=[project]) for i in (1, 2, 3)
    ]
    assert [rank_everything_over_http(user, "demo") for user in annotators] == [3, 3, 3]
    assert Ranking.objects.count() == 9

    export = run_root / "export.jsonl"
    call_command(
        "export_preferences",
        "--project",
        "demo",
        "--out",
        str(export),
        stdout=StringIO(),
    )
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(rows) == 9 * 6  # 4 distinct ranks give 6 ordered pairs per ranking
    assert rows[0]["chosen"][0]["role"] == "assistant"

    out = StringIO()
    call_command(
        "launch_round",
        "--project",
        "demo",
        "--method",
        "dpo",
        "--set",
        "dpo.max_steps=2",
        "--set",
        "dpo.max_length=96",
        "--set",
        "evaluate.prompts=2",
        "--set",
        "evaluate.max_new_tokens=12",
        "--set",
        "evaluate.diversity_samples=2",
        "--user",
        admin_user.username,
        "--wait",
        "--poll",
        "0.5",
        stdout=out,
    )

    training_round = TrainingRound.objects.get()
    policy = training_round.output_policy
    assert training_round.status == Status.SUCCEEDED
    assert (policy.parent, policy.base_path) == (sft, sft.base_path)
    assert (Path(policy.adapter_path) / "adapter_config.json").is_file()
    assert policy.snapshot_sha256 == training_round.snapshot.sha256
    assert training_round.snapshot.row_count == 54
    assert list(training_round.jobs.values_list("stage", flat=True)) == [
        "dpo",
        "evaluate",
    ]
    # The precision the stage ran in reaches the job row (float32: the default).
    assert training_round.jobs.get(stage="dpo").last_metrics["bf16"] == 0.0
    assert policy.metrics["evaluated"] == 1.0
    assert policy.metrics["prompts"] == 2.0
    assert {"kl_to_parent", "distinct_2", "self_bleu", "parent_distinct_2"} <= set(
        policy.metrics
    )

    deploy_policy(project, policy, user=admin_user)
    call_command(
        "publish_round",
        "--project",
        "demo",
        "--prompts",
        "2",
        "--k",
        "4",
        "--max-new-tokens",
        "12",
        stdout=StringIO(),
    )
    second = Round.objects.get(project=project, number=2)
    assert second.policy == policy
    assert set(second.tasks.values_list("responses__policy__name", flat=True)) == {
        policy.name
    }
    print(
        f"whole loop: {time.monotonic() - started:.1f} s"
    )  # the budget is 90 s on a quiet CPU
