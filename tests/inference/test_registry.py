"""Registering a policy records its lineage and refuses duplicates and missing paths."""

import pytest

from inference.models import Policy
from inference.registry import register_policy


def test_a_registered_policy_records_parent_config_and_snapshot(db, tmp_path):
    base = register_policy("base", base_path=tmp_path)
    (tmp_path / "adapter").mkdir()
    child = register_policy(
        "child",
        base_path=tmp_path,
        adapter_path=tmp_path / "adapter",
        parent=base,
        config={"lr": 1e-3},
        metrics={"win_rate": 0.6},
        snapshot_name="snap-1",
        snapshot_sha256="ab" * 32,
    )
    row = Policy.objects.get(name="child")
    assert (row.parent, row.adapter_path, row.config, row.metrics) == (
        base,
        str(tmp_path / "adapter"),
        {"lr": 1e-3},
        {"win_rate": 0.6},
    )
    assert (child.snapshot_name, child.kind, child.status) == (
        "snap-1",
        "policy",
        "ready",
    )


def test_a_taken_name_is_refused(db, tmp_path):
    register_policy("p", base_path=tmp_path)
    with pytest.raises(ValueError, match="a policy named 'p' is already registered"):
        register_policy("p", base_path=tmp_path)


def test_a_missing_base_folder_is_refused(db, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        register_policy("p", base_path=tmp_path / "nope")
    assert Policy.objects.count() == 0


def test_a_missing_adapter_folder_is_refused(db, tmp_path):
    with pytest.raises(ValueError, match="adapter_path .* does not exist"):
        register_policy("p", base_path=tmp_path, adapter_path=tmp_path / "nope")


def test_a_hub_id_is_accepted_as_base(db):
    assert register_policy("hub", base_path="HuggingFaceTB/SmolLM2-135M").base_path == (
        "HuggingFaceTB/SmolLM2-135M"
    )
