"""Saving a trained artifact and reading a trainer's inputs, shared by every trainer.

Plain Python, no Django. Torch, transformers and PEFT are imported inside the
functions so that the web process can import the trainers' config classes.

An artifact folder holds the weights (a full model, or a LoRA adapter whose
`adapter_config.json` names its base), the tokenizer, and `training_config.json`:
the resolved config that made it. Weights never travel without their settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

from training.trl_args import check_trl_args

TRAINING_CONFIG_FILE = "training_config.json"

C = TypeVar("C")


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build the config dataclass `cls` from a dict, refusing keys it does not know."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} option(s) {unknown}; "
            f"expected some of {sorted(names)} (fix the spelling or remove them)"
        )
    return cls(**data)


def check_range(
    name: str,
    value: float,
    low: float | None,
    high: float | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ValueError naming `name` and `value` when it lies outside the range."""
    ok = True
    if low is not None:
        ok = ok and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        if high is None:
            want = f"> {low}" if low_open else f">= {low}"
        elif low is None:
            want = f"< {high}" if high_open else f"<= {high}"
        else:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            want = f"in {left}{low}, {high}{right}"
        raise ValueError(f"{name} must be {want}, got {value}")


class StageConfig:
    """A stage's config dataclass, read from and written as the plain dict a
    training job stores (`TrainingJob.config`) and an artifact keeps (`training_config.json`)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build a config from a dict, refusing unknown keys."""
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain JSON-ready values."""
        return dataclasses.asdict(self)


@dataclass
class TrainerConfig(StageConfig):
    """The fields and checks that the stages trained by a TRL trainer share (SFT,
    DPO, reward, pre-training): the starting model and a LoRA adapter come first;
    a subclass adds its own fields after them, among which the ones checked here
    (learning_rate, num_train_epochs, max_steps, per_device_train_batch_size,
    gradient_accumulation_steps, max_length, warmup_steps, save_steps,
    logging_steps, bf16, trl_args: each with its stage's own default and help), names its
    stage in METHOD (the key `check_trl_args` knows) and, when it has checks of its
    own, calls `super().__post_init__()` from its `__post_init__`."""

    METHOD: ClassVar[str] = ""

    base_path: str = field(
        default="",
        metadata={"help": "Folder or hub id of the starting model's base."},
    )
    adapter_path: str = field(
        default="",
        metadata={"help": "The starting model's LoRA adapter folder, if it has one."},
    )
    use_lora: bool = field(
        default=False, metadata={"help": "Train a LoRA adapter instead of all weights."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank of a new adapter."})
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA scaling numerator of a new adapter."}
    )
    lora_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the LoRA branch."}
    )

    def __post_init__(self) -> None:
        """Check the fields every such stage has, each against its range, and
        `trl_args` against the stage's TRL config."""
        check_range("lora_r", self.lora_r, 1, None)
        check_range("lora_alpha", self.lora_alpha, 1, None)
        check_range("lora_dropout", self.lora_dropout, 0, 1, high_open=True)
        check_bf16(self.bf16)
        check_range("learning_rate", self.learning_rate, 0, None, low_open=True)
        check_range("num_train_epochs", self.num_train_epochs, 0, None, low_open=True)
        if self.max_steps != -1:
            check_range("max_steps", self.max_steps, 1, None)
        check_range(
            "per_device_train_batch_size", self.per_device_train_batch_size, 1, None
        )
        check_range(
            "gradient_accumulation_steps", self.gradient_accumulation_steps, 1, None
        )
        check_range("max_length", self.max_length, 8, None)
        check_range("warmup_steps", self.warmup_steps, 0, None)
        check_range("save_steps", self.save_steps, 1, None)
        check_range("logging_steps", self.logging_steps, 1, None)
        check_trl_args(
            self.METHOD, self.trl_args, {f.name for f in dataclasses.fields(self)}
        )


def read_jsonl(path: Path | str, required: tuple[str, ...] = ()) -> list[dict]:
    """Return the records of a JSONL file, checking that each has the `required` keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {path} does not exist; pass an exported JSONL file"
        )
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(
                    f"{path}:{number} lacks column(s) {missing}; expected {list(required)} "
                    "(export the snapshot in TRL's format)"
                )
            rows.append(row)
    if not rows:
        raise ValueError(
            f"data file {path} has no records; export a non-empty snapshot"
        )
    return rows


# A stage's `bf16` option: on, off, or "auto" (on where the hardware runs it natively).
Precision = bool | Literal["auto"]

BF16_HELP = (
    'bf16 mixed precision: true, false, or "auto" (bf16 where the hardware runs it '
    "natively: a GPU with bf16, or a CPU with AMX or AVX-512 BF16; float32 elsewhere)."
)


def bf16_field() -> Any:
    """Return the dataclass field of a stage's `bf16` option (off by default)."""
    return field(
        default=False, metadata={"help": BF16_HELP, "extra_choices": ("auto",)}
    )


def check_bf16(value: Any) -> None:
    """Raise ValueError naming `value` unless it is true, false or "auto"."""
    if not (isinstance(value, bool) or value == "auto"):
        raise ValueError(f'bf16 must be true, false or "auto", got {value!r}')


def native_bf16() -> tuple[bool, str]:
    """Return (whether this machine runs bfloat16 matmuls natively, its device in words).

    A GPU does from compute capability 8.0 (`inference.loading.gpu_dtype`: a T4 or
    V100 only emulates it). A CPU does with AMX or AVX-512 BF16; without them
    PyTorch emulates bfloat16, and slowly: on an AVX2 AMD EPYC a bf16 matmul ran 1.2
    GFLOPS on one thread against float32's 82 (`bench/cpu_bf16.py` measures it).
    """
    import torch

    if torch.cuda.is_available():
        from inference.loading import gpu_dtype

        return gpu_dtype() is torch.bfloat16, f"GPU {torch.cuda.get_device_name()}"
    features = [
        name
        for name, probe in (
            ("AMX", "_is_amx_tile_supported"),
            ("AVX-512 BF16", "_is_avx512_bf16_supported"),
        )
        if getattr(torch.cpu, probe, lambda: False)()
    ]
    if features:
        return True, f"CPU with {' and '.join(features)}"
    capability = torch.backends.cpu.get_cpu_capability()
    return False, f"CPU ({capability}) without AMX or AVX-512 BF16"


def resolve_bf16(value: Precision) -> bool:
    """Return whether a stage with option `bf16` = `value` trains in bf16 on this machine.

    "auto" is bf16 where the hardware has it natively and float32 elsewhere (the
    stage log says which). `true` where it has not is refused, as transformers
    refuses it on a GPU without bf16: emulated, it would hold the worker for many
    times float32's time.
    """
    check_bf16(value)
    if value is False:
        return False
    native, device = native_bf16()
    if value == "auto":
        print(f"bf16 auto: {'on' if native else 'off, float32'} ({device})", flush=True)
        return native
    if not native:
        raise ValueError(
            f"bf16 is true, but this machine's {device} has no native bfloat16: "
            "PyTorch would emulate it, dozens of times slower than float32 (1.2 "
            'against 82 GFLOPS a thread on an AVX2 CPU). Set bf16 to "auto" (bf16 only '
            "where the hardware has it) or false."
        )
    return True


def precision_args(bf16: Precision) -> dict[str, Any]:
    """Return the TrainingArguments fields that set a stage's precision.

    bf16 works on a GPU and on a CPU: transformers refuses it on a machine without
    CUDA unless told to train on the CPU, where PyTorch's autocast runs the matmuls
    in bfloat16 (with AMX: 0.61x the CPU time of float32 for SmolLM2's DPO stage,
    `bench/cpu_bf16.py`). `resolve_bf16` says whether bf16 is on here.
    """
    import torch

    on = resolve_bf16(bf16)
    if on and not torch.cuda.is_available():
        return {"bf16": True, "use_cpu": True}
    return {"bf16": on}


def lora_config(r: int, alpha: int, dropout: float, task_type: str = "CAUSAL_LM"):
    """Return a `LoraConfig` on every linear projection of the transformer blocks."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules="all-linear",
        task_type=task_type,
    )


def save_artifact(model, tokenizer, output_dir: Path, config: dict[str, Any]) -> Path:
    """Save weights, tokenizer and `training_config.json` into `output_dir`.

    A PEFT model saves only its trained adapter ("default"), never the frozen
    reference copy DPO adds beside it. The tokenizer is saved right-padded.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(output_dir, selected_adapters=["default"])
    else:
        model.save_pretrained(output_dir)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(output_dir)
    (output_dir / TRAINING_CONFIG_FILE).write_text(
        json.dumps(config, indent=2, sort_keys=True)
    )
    return output_dir


def final_metrics(trainer, reporter) -> dict[str, float]:
    """Return the last logged value of every numeric metric of a Trainer run.

    Plus `bf16`: 1.0 when the run trained in bf16, 0.0 in float32, so that the job
    records what a `"auto"` setting resolved to on the machine that ran it; `steps`,
    the optimiser steps taken; and `stopped`: 1.0 when a stop was asked (the stage
    then returns without saving an artifact), else 0.0.
    """
    metrics: dict[str, float] = {}
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[key] = float(value)
    metrics["bf16"] = float(bool(trainer.args.bf16))
    metrics["steps"] = float(trainer.state.global_step)
    metrics["stopped"] = float(reporter.should_stop())
    return metrics


def train_to_end(trainer, resume_from: Path | None, reporter) -> dict[str, float]:
    """Train `trainer` (on from the checkpoint `resume_from` when given) until it ends
    or a stop is asked; return its `final_metrics`. SFT, DPO, GRPO/RLOO and
    pre-training run their trainer through it; the reward stage, whose `_fit` also
    trains the ensemble's extra members, trains there and calls `final_metrics`."""
    trainer.train(resume_from_checkpoint=resume_checkpoint(resume_from))
    return final_metrics(trainer, reporter)


def resume_checkpoint(resume_from: Path | None) -> str | None:
    """Return the checkpoint folder as a string for `Trainer.train`, checking it exists."""
    if resume_from is None:
        return None
    if not Path(resume_from).is_dir():
        raise FileNotFoundError(
            f"resume_from {resume_from} is not a checkpoint folder; "
            "pass Reporter.last_checkpoint() or None to start from zero"
        )
    return str(resume_from)
