"""Model cards: the README.md with YAML metadata, as on the Hugging Face hub, in every model folder."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from inference.models import Policy

CARD_FILE = "README.md"


def card_folder(policy: Policy) -> Path | None:
    """Return the folder a policy's card belongs in: its adapter's, else its base's.

    None when the row owns no folder of the platform's: a hub id, an imported row,
    or a folder outside MODEL_DIR and RUN_DIR (a user's own, whose README is theirs).
    """
    from django.conf import settings

    if not policy.has_weights():
        return None
    folder = Path(policy.adapter_path or policy.base_path).resolve()
    roots = [Path(settings.MODEL_DIR).resolve(), Path(settings.RUN_DIR).resolve()]
    if folder.is_dir() and any(folder.is_relative_to(root) for root in roots):
        return folder
    return None


def write_card(policy: Policy, *, method: str = "", now: datetime) -> Path | None:
    """Write (or rewrite) the policy's model card; return its path, None without a folder."""
    folder = card_folder(policy)
    if folder is None:
        return None
    path = folder / CARD_FILE
    path.write_text(render_card(policy, method=method, now=now))
    return path


def card_metadata(policy: Policy, *, method: str, now: datetime) -> dict[str, Any]:
    """Return the card's YAML metadata: the hub's keys plus this platform's lineage."""
    parent = policy.parent.name if policy.parent_id else None
    hub_base = policy.source if _is_hub_id(policy.source) else None
    return {
        "library_name": "peft" if policy.adapter_path else "transformers",
        "pipeline_tag": "text-generation"
        if policy.kind == Policy.Kind.POLICY
        else "text-classification",
        "base_model": parent or hub_base,
        "tags": ["feedback-loop", str(policy.kind)] + ([method] if method else []),
        "model_name": policy.name,
        "feedback_loop": {
            "name": policy.name,
            "kind": str(policy.kind),
            "parent": parent,
            "snapshot": policy.snapshot_name or None,
            "snapshot_sha256": policy.snapshot_sha256 or None,
            "method": method or None,
            "source": policy.source or None,
            "quantization": policy.quantization or None,
            "architecture": policy.architecture or None,
            "parameter_count": policy.parameter_count,
            "dtype": policy.dtype or None,
            "context_length": policy.context_length,
            "has_chat_template": policy.has_chat_template,
            "weights_sha256": policy.weights_sha256 or None,
            "size_bytes": policy.size_bytes,
            "metrics": policy.metrics or {},
            "date": now.isoformat(timespec="seconds"),
        },
    }


def render_card(policy: Policy, *, method: str, now: datetime) -> str:
    """Return the card's text: YAML front matter, then the same facts for people."""
    meta = card_metadata(policy, method=method, now=now)
    facts = meta["feedback_loop"]
    rows = [
        ("Kind", policy.get_kind_display()),
        ("Parent", facts["parent"] or "none (brought in)"),
        ("Registered from", facts["source"] or "a training round"),
        ("Quantisation converted from", facts["quantization"] or "none"),
        ("Snapshot", _snapshot(policy)),
        ("Method", method or "registered"),
        ("Architecture", facts["architecture"] or "unknown"),
        ("Parameters", _number(facts["parameter_count"])),
        ("Dtype", facts["dtype"] or "unknown"),
        ("Context length", _number(facts["context_length"])),
        (
            "Chat template",
            {True: "yes", False: "no", None: "unknown"}[facts["has_chat_template"]],
        ),
        ("Weights SHA-256", facts["weights_sha256"] or "none"),
        ("Size on disk", _number(facts["size_bytes"], " bytes")),
        ("Date", facts["date"]),
    ]
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {policy.name}",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {label} | {value} |" for label, value in rows],
    ]
    if policy.metrics:
        lines += ["", "## Evaluation", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in sorted(policy.metrics.items())]
    if policy.config:
        lines += ["", "## Resolved config", "", "```json"]
        lines += [json.dumps(policy.config, indent=2, sort_keys=True, default=str)]
        lines += ["```"]
    return "\n".join(lines) + "\n"


def read_card_metadata(folder: Path) -> dict[str, Any]:
    """Return the YAML metadata of the card in a folder."""
    text = (Path(folder) / CARD_FILE).read_text()
    _, front, _ = text.split("---\n", 2)
    return yaml.safe_load(front)


def _snapshot(policy: Policy) -> str:
    if not policy.snapshot_name and not policy.snapshot_sha256:
        return "none"
    return f"{policy.snapshot_name} (SHA-256 {policy.snapshot_sha256})"


def _number(value: int | None, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:,}{unit}"


def _is_hub_id(value: str) -> bool:
    from inference.sources import HUB_ID

    return bool(value) and not Path(value).exists() and bool(HUB_ID.match(value))
