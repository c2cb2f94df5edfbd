"""A stage's `bf16` option: true, false or "auto", and what each does on hardware
with and without native bfloat16 (`training.artifacts.resolve_bf16`).

Whether this machine has native bf16 is a fact of its CPU; the tests that need the
other answer replace `native_bf16` with one that gives it, so both branches run on
any machine. Nothing else is replaced: the stages train for real.
"""

from __future__ import annotations

import math

import pytest
from django.core.exceptions import ValidationError

from tests.training.ml_data import preference_records, write_jsonl
from training import artifacts, dpo, grpo, ppo, pretrain, reward, sft
from training.forms import LaunchForm
from training.progress import Reporter
from training.rounds import parse_settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path; this machine has a CUDA GPU")


def test_this_machine_says_whether_it_has_native_bf16_and_names_its_device():
    native, device = artifacts.native_bf16()
    assert isinstance(native, bool)
    assert device.startswith(("CPU", "GPU"))
    assert ("without" in device) is (not native and device.startswith("CPU"))


@pytest.mark.parametrize(("emulation_only", "native"), [(True, False), (False, True)])
def test_a_gpu_counts_as_native_only_when_it_does_not_emulate_bf16(
    monkeypatch, emulation_only, native
):
    import torch

    # torch.cuda.is_bf16_supported() says yes on a T4 or V100 unless told not to
    # count emulation; an A100 or H100 says yes either way.
    def is_bf16_supported(including_emulation=True):
        return including_emulation or not emulation_only

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    assert artifacts.native_bf16() == (native, "GPU Tesla T4")


def test_auto_trains_in_float32_on_a_cpu_that_would_emulate_bf16(
    cpu_without_native_bf16, no_cuda, capsys
):
    assert artifacts.precision_args("auto") == {"bf16": False}
    assert "bf16 auto: off, float32 (CPU (AVX2)" in capsys.readouterr().out


def test_auto_trains_in_bf16_on_a_cpu_with_amx(cpu_with_native_bf16, no_cuda, capsys):
    assert artifacts.precision_args("auto") == {"bf16": True, "use_cpu": True}
    assert "bf16 auto: on (CPU with AMX)" in capsys.readouterr().out


def test_bf16_true_on_a_cpu_without_native_bf16_is_refused_with_the_fix(
    cpu_without_native_bf16,
):
    with pytest.raises(ValueError) as raised:
        artifacts.precision_args(True)
    message = str(raised.value)
    assert "bf16 is true" in message
    assert "CPU (AVX2) without AMX or AVX-512 BF16" in message
    assert 'Set bf16 to "auto"' in message


def test_bf16_false_never_asks_the_hardware(monkeypatch):
    def fail():
        raise AssertionError("native_bf16 was asked for bf16 false")

    monkeypatch.setattr(artifacts, "native_bf16", fail)
    assert artifacts.precision_args(False) == {"bf16": False}


@pytest.mark.parametrize(
    "config_class",
    [
        sft.SFTConfig,
        dpo.DPOConfig,
        reward.RewardConfig,
        pretrain.PretrainConfig,
        grpo.GRPOConfig,
        ppo.PPOConfig,
    ],
)
def test_every_stage_takes_auto_and_refuses_other_words_naming_them(config_class):
    assert config_class(bf16="auto").bf16 == "auto"
    with pytest.raises(
        ValueError, match="bf16 must be true, false or \"auto\", got 'yes'"
    ):
        config_class(bf16="yes")


def test_settings_text_reads_auto_true_and_false_and_names_the_choices():
    assert parse_settings(["dpo.bf16=auto"], ["dpo"]) == {"dpo": {"bf16": "auto"}}
    assert parse_settings(["dpo.bf16=True"], ["dpo"]) == {"dpo": {"bf16": True}}
    assert parse_settings(["bf16=off"], ["sft", "dpo"]) == {
        "sft": {"bf16": False},
        "dpo": {"bf16": False},
    }
    with pytest.raises(
        ValidationError, match="bf16 must be one of true, false, 'auto'"
    ):
        parse_settings(["dpo.bf16=maybe"], ["dpo"])


@pytest.mark.django_db
def test_the_launch_form_offers_auto_for_bf16_and_only_for_flags_that_have_it():
    form = LaunchForm()
    assert [value for value, _ in form.fields["dpo__bf16"].choices] == [
        "",
        "true",
        "false",
        "auto",
    ]
    assert "auto" not in [value for value, _ in form.fields["dpo__use_lora"].choices]


def run_dpo(tmp_path, tiny_model_dir, bf16) -> dict:
    data = write_jsonl(tmp_path / "prefs.jsonl", preference_records(8))
    reporter = Reporter(tmp_path / "run")
    config = dpo.DPOConfig(
        base_path=str(tiny_model_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        bf16=bf16,
    )
    return dpo.train(
        config, data_path=data, output_dir=reporter.output_dir, reporter=reporter
    )


def test_a_dpo_stage_with_bf16_auto_trains_on_a_cpu_without_native_bf16(
    cpu_without_native_bf16, no_cuda, tiny_model_dir, tmp_path, capsys
):
    metrics = run_dpo(tmp_path, tiny_model_dir, "auto")

    assert math.isfinite(metrics["loss"]) is True
    assert metrics["steps"] == 2.0
    assert metrics["bf16"] == 0.0  # the job records what "auto" resolved to
    assert "bf16 auto: off, float32" in capsys.readouterr().out


def test_a_dpo_stage_with_bf16_auto_records_bf16_on_a_cpu_that_has_it(
    cpu_with_native_bf16, no_cuda, tiny_model_dir, tmp_path, capsys
):
    metrics = run_dpo(tmp_path, tiny_model_dir, "auto")

    assert math.isfinite(metrics["loss"]) is True
    assert metrics["bf16"] == 1.0
    assert "bf16 auto: on (CPU with AMX)" in capsys.readouterr().out


def test_a_dpo_stage_with_bf16_true_on_such_a_cpu_fails_before_training(
    cpu_without_native_bf16, no_cuda, tiny_model_dir, tmp_path
):
    with pytest.raises(ValueError, match="has no native bfloat16"):
        run_dpo(tmp_path, tiny_model_dir, True)
    assert not (tmp_path / "run" / "output").exists()
