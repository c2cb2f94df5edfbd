"""The model registry's write path: register a trained or built policy with its lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference.models import Policy


def register_policy(
    name: str,
    *,
    base_path: str | Path,
    adapter_path: str | Path = "",
    parent: Policy | None = None,
    kind: str = Policy.Kind.POLICY,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    snapshot_name: str = "",
    snapshot_sha256: str = "",
) -> Policy:
    """Create and return the registry row of a model whose artifacts are complete on disk.

    Refuse a name already registered and a path that does not exist. A `base_path`
    that is not on disk is accepted only in the shape of a Hugging Face hub id
    ("org/name"); an adapter must be a local folder.
    """
    if Policy.objects.filter(name=name).exists():
        raise ValueError(
            f"a policy named {name!r} is already registered; choose another name "
            "(names are unique so that lineage stays unambiguous)"
        )
    if kind not in Policy.Kind.values:
        raise ValueError(
            f"unknown policy kind {kind!r}; expected one of {Policy.Kind.values}"
        )
    base, adapter = str(base_path), str(adapter_path) if adapter_path else ""
    if not base:
        raise ValueError(
            f"policy {name!r} needs a base_path (a model folder or hub id)"
        )
    if not Path(base).exists() and not _looks_like_hub_id(base):
        raise ValueError(
            f"base_path {base!r} of policy {name!r} does not exist; build or copy the "
            "model there first (or give a hub id such as org/name)"
        )
    if adapter and not Path(adapter).exists():
        raise ValueError(
            f"adapter_path {adapter!r} of policy {name!r} does not exist; save the "
            "adapter before registering it"
        )
    return Policy.objects.create(
        name=name,
        kind=kind,
        base_path=base,
        adapter_path=adapter,
        parent=parent,
        config=config or {},
        metrics=metrics or {},
        snapshot_name=snapshot_name,
        snapshot_sha256=snapshot_sha256,
    )


def _looks_like_hub_id(value: str) -> bool:
    """Return whether value has the shape of a hub id ("org/name", not a filesystem path)."""
    parts = value.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not value.startswith((".", "~"))
        and not Path(parts[0]).exists()
    )
