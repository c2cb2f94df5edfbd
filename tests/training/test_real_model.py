"""The real model through the whole loop once: SmolLM2-135M-Instruct publishes, is
ranked, trains two DPO steps with LoRA, and its successor loads, answers and says
where it came from (issue 10 acceptance).

The conversion from GGUF runs once per session (the `smollm2` fixture).
"""

from pathlib import Path

import pytest

from annotation.assignment import RankingSubmission, next_task, submit_ranking
from annotation.models import Project, Ranking
from annotation.pool import add_prompts
from annotation.rounds import publish_round
from inference.cards import read_card_metadata
from inference.generation import generate_for_policy
from inference.models import Policy
from inference.registry import register_policy
from inference.sampling import SamplingConfig
from tests.conftest import make_user
from training.loop import drain_round
from training.tasks import launch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_smollm2_publishes_is_ranked_trains_dpo_with_lora_and_its_successor_answers(
    db, settings, tmp_path, smollm2
):
    settings.MODEL_DIR = tmp_path / "models"
    settings.RUN_DIR = tmp_path / "runs"
    base = register_policy(
        "smollm2", base_path=smollm2["folder"], source=str(smollm2["gguf"])
    )
    project = Project.objects.create(
        name="real",
        title="Real model",
        responses_per_task=2,
        overlap=1,
        gold_rate=0,
        current_policy=base,
    )
    add_prompts(
        project,
        [
            "Name a fruit that is yellow.",
            "Write one short sentence about the sea.",
            "What is the capital of Italy?",
        ],
        source="test",
    )
    sampling = SamplingConfig(num_candidates=2, max_new_tokens=12, seed=0)
    round_ = publish_round(project, n_prompts=2, sampling=sampling)
    assert round_.tasks.count() == 2

    annotator = make_user("ranker", "annotator", projects=(project,))
    for _ in range(2):
        lease = next_task(project, annotator)
        submit_ranking(lease, annotator, RankingSubmission(order=[[1], [2]]))
    assert Ranking.objects.filter(task__project=project).count() == 2

    admin = make_user("boss", "admin")
    training_round = launch(
        project,
        "dpo",
        user=admin,
        options={
            "dpo": {
                "use_lora": True,
                "max_steps": 2,
                "per_device_train_batch_size": 1,
                "max_length": 96,
                "save_steps": 100,
            },
            "evaluate": {"prompts": 1, "max_new_tokens": 4, "diversity_samples": 1},
        },
    )
    drain_round(training_round, poll_seconds=0.2)
    training_round.refresh_from_db()
    assert training_round.status == "succeeded", training_round.error

    successor = Policy.objects.get(parent=base, kind=Policy.Kind.POLICY)
    assert successor.adapter_path != ""
    [[text]] = generate_for_policy(
        successor.base_path,
        successor.adapter_path,
        [[{"role": "user", "content": "What is the capital of France?"}]],
        SamplingConfig(num_candidates=1, temperature=0.0, max_new_tokens=8),
    )
    assert text.strip() != ""
    card = read_card_metadata(Path(successor.adapter_path))["feedback_loop"]
    snapshot = training_round.snapshot
    assert (card["parent"], card["snapshot"], card["snapshot_sha256"]) == (
        "smollm2",
        snapshot.name,
        snapshot.sha256,
    )


def test_setup_real_registers_smollm2_creates_the_project_and_publishes_round_1_once(
    db, settings, tmp_path, smollm2
):
    from io import StringIO

    from django.contrib.auth.models import User
    from django.core.management import call_command

    from annotation.models import AuditEntry, Response
    from demo.project import DEMO_USERS
    from inference.instructions import TOPICS, parse_constraints, split_of

    settings.MODEL_DIR = tmp_path / "models"
    args = ["setup_real", "--prompts=4", "--held-out=2", "--dev=3", "--publish=4"]
    args += ["--max-new-tokens=8", f"--source={smollm2['folder']}"]
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())

    project = Project.objects.get(name="real")
    policy = Policy.objects.get(name="smollm2-135m-instruct")
    assert project.current_policy == policy
    assert policy.architecture == "LlamaForCausalLM"
    assert AuditEntry.objects.filter(action="model.register").count() == 1
    assert set(project.members.values_list("username", flat=True)) == set(DEMO_USERS)
    pool = project.prompts.filter(is_held_out=False)
    held_out = project.prompts.filter(is_held_out=True)
    assert (pool.count(), held_out.count()) == (4, 5)
    splits = {"dev": "instructions:dev", "test": "instructions:test"}
    for split, source in splits.items():
        prompts = held_out.filter(eval_split=split)
        assert set(prompts.values_list("source", flat=True)) == {source}
        for prompt in prompts:
            request = prompt.messages[-1]["content"]
            [topic] = [t for t in TOPICS if t in request]
            kinds = [c.kind for c in parse_constraints(request)]
            assert split_of(kinds, topic) == split
    for prompt in project.prompts.all():
        assert parse_constraints(prompt.messages[-1]["content"])
    [round_] = project.rounds.all()
    assert round_.tasks.count() == 4
    responses = Response.objects.filter(task__round=round_)
    assert responses.count() == 16
    assert set(responses.values_list("policy", flat=True)) == {policy.pk}
    assert sum(bool(r.text.strip()) for r in responses) >= 12
    lines = out.getvalue().splitlines()
    assert "published real round 1: 4 tasks by smollm2-135m-instruct" in lines
    assert "held out 3 dev-split requests of real for choosing settings" in lines

    # Again: everything is in place, nothing changes.
    again = StringIO()
    call_command(*args, stdout=again, stderr=StringIO())
    assert again.getvalue().strip() == "real is set up already; nothing to do"
    assert (project.rounds.count(), Response.objects.count()) == (1, 16)
    assert User.objects.filter(username__in=DEMO_USERS).count() == len(DEMO_USERS)


def test_run_loop_on_the_real_project_reports_strict_constraint_accuracy(
    db, settings, tmp_path, smollm2
):
    """The README's real-model loop command, at micro size: `setup_real`, then
    `run_loop --project real --judge instructions` trains a DPO round with LoRA, and
    its JSON line carries the judge's strict constraint accuracy for the policy and
    for SmolLM2 itself, on the split asked for (issue 11, part 3)."""
    import json
    from io import StringIO

    from django.core.management import call_command

    settings.MODEL_DIR = tmp_path / "models"
    settings.RUN_DIR = tmp_path / "runs"
    setup = ["setup_real", "--prompts=6", "--held-out=2", "--dev=2", "--publish=1"]
    setup += ["--k=2", "--max-new-tokens=4", f"--source={smollm2['folder']}"]
    call_command(*setup, stdout=StringIO(), stderr=StringIO())
    out = StringIO()
    call_command(
        "run_loop",
        "--project=real",
        "--judge=instructions",
        "--rounds=1",
        "--prompts=2",
        "--candidates=3",
        "--eval-prompts=2",
        "--eval-samples=2",
        "--max-new-tokens=6",
        "--split=dev",
        "--seeds=1",
        "--rewrites=1",
        '--train={"dpo": {"max_steps": 1, "per_device_train_batch_size": 1, '
        '"max_length": 96, "save_steps": 100}}',
        stdout=out,
        stderr=StringIO(),
    )
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["seeds"] == [0]
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert 0.0 <= summary["accuracy_sft"] <= 1.0
    # Loose (IFEval's relaxations) forgives what strict does not, never the reverse.
    assert summary["accuracy"] <= summary["loose_accuracy"] <= 1.0
    assert summary["accuracy_sft"] <= summary["loose_accuracy_sft"] <= 1.0
    assert "gain" in out.getvalue() and "loosely" in out.getvalue()
    # Substance is a floor on top of strict accuracy, never more lenient than it.
    assert summary["substantive_accuracy"] <= summary["accuracy"]
    assert summary["substantive_accuracy_sft"] <= summary["accuracy_sft"]
    assert summary["words"] > 0 and summary["words_sft"] > 0
    assert "substantive answers only" in out.getvalue()
    project = Project.objects.get(name="real")
    policy = project.current_policy
    assert policy.parent.name == "smollm2-135m-instruct"
    # --rewrites: 6-token candidates follow few constraints, so annotators wrote
    # repaired rewrites, and the round's DPO data has each chosen over all 3 candidates.
    snapshot = project.snapshots.get(name__startswith="loop-dpo-round2")
    assert snapshot.rewrite_rule == "chosen" and snapshot.stats["rewrites"] >= 1
    assert snapshot.stats["rewrite_pairs"] == 3 * snapshot.stats["rewrites"]
    data = next(settings.RUN_DIR.glob("round-*/data-trl.jsonl")).read_text()
    rows = [json.loads(line) for line in data.splitlines()]
    assert len(rows) == snapshot.row_count
    from inference.instructions import JUDGE

    for row in rows:
        if row["chosen_policy"] == "rewrite":
            assert JUDGE.correct(row["prompt"], row["chosen"][0]["content"])
    assert (policy.metrics["eval_split"], policy.metrics["eval_prompts"]) == ("dev", 2)
