"""The model registry's write path: register a model brought in or trained, with its lineage."""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from inference import cards, folders, sources
from inference.artifacts import atomic_dir
from inference.models import Policy

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
KINDS = {"policy": Policy.Kind.POLICY, "reward": Policy.Kind.REWARD_MODEL}
# Sent by `register_model` inside the transaction that writes the row, with `policy`,
# `actor` (who asked; None for a command) and `source_kind`. The annotation app
# records it in the audit log (annotation.audit), which this layer cannot import.
model_registered = Signal()


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
    method: str = "",
    source: str = "",
    quantization: str = "",
    now: datetime | None = None,
) -> Policy:
    """Create and return the registry row of a model whose artifacts are complete on disk.

    Refuse a name already registered and a path that does not exist. A `base_path`
    that is not on disk is accepted only in the shape of a Hugging Face hub id
    ("org/name"); an adapter must be a local folder. What the weights are
    (architecture, parameters, dtype, context length, chat template, SHA-256, size)
    is read from the folder (`inference.folders.describe`) and recorded, and the
    folder gets its model card (`inference.cards`), naming `method` (the training
    stage, or how it was brought in) beside the lineage.
    """
    if Policy.objects.filter(name=name).exists():
        raise ValidationError(
            f"a policy named {name!r} is already registered; choose another name "
            "(names are unique so that lineage stays unambiguous)"
        )
    if kind not in Policy.Kind.values:
        raise ValidationError(
            f"unknown policy kind {kind!r}; expected one of {Policy.Kind.values}"
        )
    base, adapter = str(base_path), str(adapter_path) if adapter_path else ""
    if not base:
        raise ValidationError(
            f"policy {name!r} needs a base_path (a model folder or hub id)"
        )
    if not Path(base).exists() and not _looks_like_hub_id(base):
        raise ValidationError(
            f"base_path {base!r} of policy {name!r} does not exist; build or copy the "
            "model there first (or give a hub id such as org/name)"
        )
    if adapter and not Path(adapter).exists():
        raise ValidationError(
            f"adapter_path {adapter!r} of policy {name!r} does not exist; save the "
            "adapter before registering it"
        )
    own = Path(adapter or base)
    facts = (
        folders.describe(own, Path(base) if adapter and Path(base).is_dir() else None)
        if own.is_dir()
        else {}
    )
    policy = Policy.objects.create(
        name=name,
        kind=kind,
        base_path=base,
        adapter_path=adapter,
        parent=parent,
        config=config or {},
        metrics=metrics or {},
        snapshot_name=snapshot_name,
        snapshot_sha256=snapshot_sha256,
        source=source,
        quantization=quantization,
        **facts,
    )
    cards.write_card(policy, method=method, now=now or timezone.now())
    return policy


def register_model(
    name: str,
    source: str,
    *,
    kind: str = "policy",
    parent: str = "",
    base: str = "",
    allow_pickle: bool = False,
    chat_template: str | Path = "",
    now: datetime | None = None,
    actor: AbstractBaseUser | None = None,
) -> Policy:
    """Bring a model in: land SOURCE in MODEL_DIR/<name> and register it.

    SOURCE is a Hugging Face folder, a .gguf file (converted to safetensors), a PEFT
    adapter folder (its base is the registered policy `base` names, else the one
    whose name, folder or source is the adapter's base_model_name_or_path) or a hub
    id. `kind` is "policy" or "reward"; `parent` names a registered policy. The
    folder appears whole or not at all (`atomic_dir`), and is removed again if the
    row cannot be written. Raise ValidationError (SourceError for the source) naming the
    bad value and the fix; every check that needs no conversion runs first. The row
    is written and `model_registered` sent (with `actor`, who asked: None for a
    command) in one transaction, so its audit entry commits with it.
    """
    if not NAME.match(name):
        raise ValidationError(
            f"model name {name!r} must be 1-200 letters, digits, '.', '_' or '-' and "
            "start with a letter or digit (it names the model's folder)"
        )
    if Policy.objects.filter(name=name).exists():
        raise ValidationError(
            f"a policy named {name!r} is already registered; choose another name"
        )
    if kind not in KINDS:
        raise ValidationError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    parent_row = _registered(parent, "--parent") if parent else None
    base_row = _registered(base, "--base") if base else None
    source_kind = sources.source_kind(source)
    if source_kind == "adapter" and base_row is None:
        base_row = _adapter_base(source)
    elif source_kind != "adapter" and base_row is not None:
        raise ValidationError(
            f"--base {base!r} applies only to an adapter folder, and {source!r} is a "
            f"{source_kind} source; drop --base"
        )
    final = Path(settings.MODEL_DIR) / name
    with atomic_dir(final) as tmp:
        landed = sources.land_source(
            source,
            tmp,
            allow_pickle=allow_pickle,
            chat_template=Path(chat_template) if chat_template else None,
        )
    try:
        with transaction.atomic():
            policy = register_policy(
                name,
                base_path=base_row.base_path if base_row else final,
                adapter_path=final if base_row else "",
                parent=parent_row or base_row,
                kind=KINDS[kind],
                method=f"registered from {landed.kind}",
                source=str(source),
                quantization=landed.quantization,
                now=now,
            )
            model_registered.send(
                sender=Policy, policy=policy, actor=actor, source_kind=landed.kind
            )
        return policy
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


def _registered(name: str, option: str) -> Policy:
    """Return the registered policy `name`; raise ValidationError naming the option otherwise."""
    row = Policy.objects.filter(name=name).first()
    if row is None:
        raise ValidationError(
            f"{option} {name!r} is not a registered model; register it first "
            "(manage.py register_model NAME SOURCE) or give one of the registered names"
        )
    return row


def _adapter_base(source: str) -> Policy:
    """Return the registered policy an adapter folder was trained on, by its adapter_config."""
    config = folders.read_json(Path(source).expanduser() / "adapter_config.json")
    wanted = config.get("base_model_name_or_path") or ""
    row = (
        Policy.objects.filter(adapter_path="")
        .filter(Q(name=wanted) | Q(base_path=wanted) | Q(source=wanted))
        .order_by("-created_at", "-id")
        .first()
        if wanted
        else None
    )
    if row is None:
        raise ValidationError(
            f"the adapter {source!r} was trained on {wanted or 'an unnamed base'!r} "
            "(base_model_name_or_path in adapter_config.json), which is not registered; "
            "register that base first or pass --base NAME of a registered model"
        )
    return row


def _looks_like_hub_id(value: str) -> bool:
    """Return whether value has the shape of a hub id ("org/name", not a filesystem path)."""
    parts = value.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not value.startswith((".", "~"))
        and not Path(parts[0]).exists()
    )
