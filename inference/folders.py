"""Model folders: what one holds, read from its files without loading the weights."""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

SAFE_WEIGHTS = ("*.safetensors",)
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
# safetensors' dtype codes -> torch's names
_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def weight_files(folder: Path) -> list[Path]:
    """Return the folder's weight files in name order: safetensors if any, else pickles."""
    folder = Path(folder)
    for patterns in (SAFE_WEIGHTS, PICKLE_WEIGHTS):
        found = sorted({p for pattern in patterns for p in folder.glob(pattern)})
        if found:
            return found
    return []


def is_pickle_only(folder: Path) -> bool:
    """Return whether the folder's weights are pickles (no safetensors file)."""
    files = weight_files(folder)
    return bool(files) and all(f.suffix != ".safetensors" for f in files)


def has_chat_template(folder: Path) -> bool:
    """Return whether the tokenizer saved in the folder carries a chat template."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file() or (
        folder / "chat_template.json"
    ).is_file():
        return True
    config = read_json(folder / "tokenizer_config.json")
    return bool(config.get("chat_template"))


def describe(folder: Path, base_folder: Path | None = None) -> dict[str, Any]:
    """Return what a model folder holds, for the registry row and the model card.

    Keys: architecture, parameter_count, dtype, context_length, has_chat_template,
    weights_sha256, size_bytes (without the model card). Counts, dtype, hash and size are the folder's own
    (an adapter's weights for an adapter folder); architecture, context length and
    the chat template come from `base_folder` when the folder does not say (an
    adapter names neither). Safetensors headers are read directly, so no weights
    are loaded; pickle weights are opened with torch, tensors only.
    """
    folder = Path(folder)
    config = read_json(folder / "config.json")
    if base_folder is not None and not config:
        config = read_json(Path(base_folder) / "config.json")
    files = weight_files(folder)
    parameters, dtypes = _count_parameters(files)
    architectures = config.get("architectures") or []
    template = has_chat_template(folder) or (
        base_folder is not None and has_chat_template(base_folder)
    )
    return {
        "architecture": architectures[0] if architectures else "",
        "parameter_count": parameters if files else None,
        "dtype": dtypes.most_common(1)[0][0] if dtypes else "",
        "context_length": config.get("max_position_embeddings"),
        "has_chat_template": template,
        "weights_sha256": weights_sha256(files) if files else "",
        # The model card (README.md) is written from these facts, so it is not counted.
        "size_bytes": sum(
            f.stat().st_size
            for f in folder.rglob("*")
            if f.is_file() and f.relative_to(folder) != Path("README.md")
        ),
    }


def weights_sha256(files: list[Path]) -> str:
    """Return the SHA-256 over the files' contents, one after another in the given order."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _count_parameters(files: list[Path]) -> tuple[int, Counter]:
    """Return (parameter count, Counter of dtype -> parameters) over weight files."""
    total, dtypes = 0, Counter()
    for path in files:
        for dtype, shape in _tensor_shapes(path):
            n = 1
            for dim in shape:
                n *= dim
            total += n
            dtypes[dtype] += n
    return total, dtypes


def _tensor_shapes(path: Path) -> list[tuple[str, list[int]]]:
    """Return (dtype, shape) of every tensor in one weight file."""
    if path.suffix == ".safetensors":
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        return [
            (_DTYPES.get(t["dtype"], t["dtype"].lower()), t["shape"])
            for key, t in header.items()
            if key != "__metadata__"
        ]
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return [
        (str(t.dtype).removeprefix("torch."), list(t.shape))
        for t in state.values()
        if isinstance(t, torch.Tensor)
    ]


def read_json(path: Path) -> dict[str, Any]:
    """Return a JSON file's object, or {} when the file is missing."""
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
