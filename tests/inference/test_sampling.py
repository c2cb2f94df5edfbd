"""Sampling controls are validated once and translated in one function per backend."""

import pytest

from inference.sampling import SamplingConfig, backend_kwargs


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
        ({"top_p": 0}, "top_p must be in (0, 1], got 0"),
        (
            {"temperature": -0.1},
            "temperature must be a number >= 0 (0 is greedy), got -0.1",
        ),
        ({"top_k": -1}, "top_k must be an integer >= 0 (0 turns it off), got -1"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer, got 0"),
        ({"num_candidates": 0}, "num_candidates must be a positive integer, got 0"),
        (
            {"num_candidates": 4, "mix": [{"count": 2, "temperature": 0.7}]},
            "the mix's counts add up to 2 but num_candidates is 4; make them equal",
        ),
        (
            {"num_candidates": 2, "mix": [{"count": 2, "beam": 3}]},
            "mix group 0 has unknown keys ['beam']",
        ),
        (
            {"num_candidates": 2, "mix": [{"count": 2, "top_p": 2.0}]},
            "mix group 0: top_p must be in (0, 1], got 2.0",
        ),
    ],
)
def test_out_of_range_controls_are_refused_with_the_value_named(kwargs, message):
    with pytest.raises(ValueError) as excinfo:
        SamplingConfig(**kwargs)
    assert message in str(excinfo.value)


def test_transformers_kwargs_always_pass_top_k_so_the_implicit_50_never_applies():
    group = SamplingConfig(temperature=0.8, top_p=0.9).groups()[0]
    assert backend_kwargs(group, 32, "transformers") == {
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 0,
        "top_p": 0.9,
        "max_new_tokens": 32,
    }


def test_temperature_zero_means_greedy_decoding():
    group = SamplingConfig(temperature=0, num_candidates=1).groups()[0]
    assert backend_kwargs(group, 16, "transformers") == {
        "do_sample": False,
        "max_new_tokens": 16,
    }


@pytest.mark.parametrize("top_k, expected", [(0, -1), (40, 40)])
def test_vllm_kwargs_mean_the_same_controls(top_k, expected):
    group = SamplingConfig(
        temperature=0.7, top_k=top_k, top_p=0.95, num_candidates=3
    ).groups()[0]
    assert backend_kwargs(group, 64, "vllm") == {
        "n": 3,
        "temperature": 0.7,
        "top_k": expected,
        "top_p": 0.95,
        "max_tokens": 64,
    }


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown generation backend 'tgi'"):
        backend_kwargs(SamplingConfig().groups()[0], 8, "tgi")


def test_a_mix_splits_candidates_into_groups_that_inherit_unset_controls():
    config = SamplingConfig(
        top_p=0.9,
        num_candidates=4,
        mix=[
            {"count": 2, "temperature": 0.7},
            {"count": 2, "temperature": 1.0, "top_k": 20},
        ],
    )
    assert config.groups() == [
        {"count": 2, "temperature": 0.7, "top_k": 0, "top_p": 0.9},
        {"count": 2, "temperature": 1.0, "top_k": 20, "top_p": 0.9},
    ]
    settings = config.candidate_settings()
    assert [s["temperature"] for s in settings] == [0.7, 0.7, 1.0, 1.0]
    assert settings[3] == {
        "temperature": 1.0,
        "top_k": 20,
        "top_p": 0.9,
        "max_new_tokens": 64,
        "seed": 0,
    }


def test_config_round_trips_through_a_dict_and_refuses_unknown_keys():
    config = SamplingConfig(
        temperature=0.5, seed=7, num_candidates=2, mix=[{"count": 2}]
    )
    assert SamplingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown sampling keys \['beams'\]"):
        SamplingConfig.from_dict({"beams": 2})
