"""The stage registry: one home for the stages, their configs, trainers and pipelines."""

from __future__ import annotations

import dataclasses

import pytest

from inference.models import Policy
from tests.training.sleep_stage import SLEEP, SleepConfig
from tests.training.sleep_stage import train as train_sleep
from training.forms import LaunchForm, launchable_stages
from training.stage import load_trainer
from training.stages import (
    PIPELINES,
    STAGES,
    get_stage,
    import_object,
    register,
)


def test_an_unknown_stage_names_the_registered_ones():
    with pytest.raises(ValueError) as error:
        get_stage("warp")

    message = str(error.value)
    assert message.startswith("unknown stage 'warp'; expected one of ")
    for name in ("dpo", "evaluate", "ppo", "reward", "sft", "sleep"):
        assert repr(name) in message


def test_every_registered_stage_loads_its_config_and_trainer():
    for spec in STAGES.values():
        config = spec.config_class()
        assert dataclasses.is_dataclass(config), spec.name
        assert callable(spec.train_function()), spec.name
        assert spec.produces in ("", *Policy.Kind.values), spec.name


def test_every_named_pipeline_is_made_of_registered_stages():
    for name, pipeline in PIPELINES.items():
        assert all(stage in STAGES for stage in pipeline.split(",")), name


def test_the_test_stage_is_registered_by_the_tests_and_hidden_from_the_launch_form(
    db,
):
    assert STAGES["sleep"] is SLEEP
    assert SLEEP.trainer == "tests.training.sleep_stage.train"
    assert "sleep" not in launchable_stages()
    assert not any(name.startswith("sleep__") for name in LaunchForm().fields)
    assert "dpo" in launchable_stages()


def test_a_second_stage_under_a_taken_name_is_refused():
    other = dataclasses.replace(SLEEP, trainer="somewhere.else.train")

    with pytest.raises(ValueError, match="a different stage named 'sleep'"):
        register(other)
    assert register(SLEEP) is SLEEP  # the same spec again is fine
    assert STAGES["sleep"] is SLEEP


def test_the_child_imports_the_trainer_the_envelope_names():
    by_path = load_trainer(
        {
            "stage": "unregistered",
            "config_class": SLEEP.config,
            "trainer": SLEEP.trainer,
        }
    )
    by_name = load_trainer({"stage": "sleep"})

    assert by_path == by_name == (SleepConfig, train_sleep)
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        load_trainer({"stage": "nope"})


def test_a_bad_dotted_path_says_what_is_missing():
    with pytest.raises(ImportError, match="module training.dpo has no 'Nope'"):
        import_object("training.dpo.Nope")
    with pytest.raises(ValueError, match="expected a dotted path"):
        import_object("nodots")


def test_an_evaluate_stage_that_names_a_judge_needs_its_path():
    # The GRPO config refuses the same (tests/training/test_grpo.py); one check serves both.
    from training.stage import EvaluateConfig

    with pytest.raises(ValueError, match="judge 'demo' has no judge_path; launch the"):
        EvaluateConfig(judge="demo")
    assert EvaluateConfig(judge="demo", judge_path="inference.judges:x").judge == "demo"
