"""The model registry: every policy and reward model the platform can load."""

from __future__ import annotations

from pathlib import Path

from django.db import models


class Policy(models.Model):
    """A registered model: a base (folder or hub id) plus an optional LoRA adapter.

    Lineage: `parent` is the policy it was trained from; the training round that
    produced it (training app) names the snapshot, and `snapshot_sha256` and `config`
    are copied here so the registry row alone says what made the weights.
    """

    class Kind(models.TextChoices):
        POLICY = "policy", "Policy"
        REWARD_MODEL = "reward_model", "Reward model"
        IMPORTED = "imported", "Imported (no weights)"

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        ARCHIVED = "archived", "Archived"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.POLICY)
    base_path = models.CharField(
        max_length=500,
        blank=True,
        help_text="A Hugging Face model folder or hub id holding the base weights.",
    )
    adapter_path = models.CharField(
        max_length=500, blank=True, help_text="A PEFT (LoRA) adapter folder, if any."
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    snapshot_name = models.CharField(max_length=200, blank=True)
    snapshot_sha256 = models.CharField(
        max_length=64,
        blank=True,
        help_text="SHA-256 of the data snapshot it learned from.",
    )
    config = models.JSONField(
        default=dict, blank=True, help_text="The resolved config that produced it."
    )
    metrics = models.JSONField(
        default=dict, blank=True, help_text="Evaluation results (win rate, KL, ...)."
    )
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.READY
    )
    # What the weights are, read from the folder at registration (inference.folders).
    source = models.CharField(
        max_length=500,
        blank=True,
        help_text="What it was registered from: a folder, GGUF file or hub id.",
    )
    quantization = models.CharField(
        max_length=100,
        blank=True,
        help_text="The quantisation it was converted from (e.g. GGUF Q4_1), if any.",
    )
    architecture = models.CharField(max_length=200, blank=True)
    parameter_count = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Parameters in the weights this row owns (an adapter's own).",
    )
    dtype = models.CharField(max_length=20, blank=True)
    context_length = models.IntegerField(null=True, blank=True)
    has_chat_template = models.BooleanField(
        null=True,
        blank=True,
        help_text="Whether its tokenizer renders chats; unknown for older rows.",
    )
    weights_sha256 = models.CharField(
        max_length=64,
        blank=True,
        help_text="SHA-256 over its weight files, in name order.",
    )
    size_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="Size of its folder on disk."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name

    def has_weights(self) -> bool:
        """Return whether this row points at loadable weights."""
        return bool(self.base_path) and self.kind != self.Kind.IMPORTED

    def disk_bytes(self) -> int:
        """Return the size of the artifact folders this row owns on disk."""
        total = 0
        for raw in (self.adapter_path,) if self.adapter_path else (self.base_path,):
            path = Path(raw)
            if path.is_dir():
                total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return total
