"""The vLLM adapter translates the same controls; it runs only where vLLM and a GPU exist."""

import importlib.util

import pytest

from inference import vllm_backend
from inference.sampling import SamplingConfig


def test_each_mix_group_becomes_one_sampling_params_with_its_own_seed():
    sampling = SamplingConfig(
        num_candidates=4,
        seed=10,
        max_new_tokens=32,
        top_p=0.9,
        mix=[
            {"count": 2, "temperature": 0.7},
            {"count": 2, "temperature": 1.0, "top_k": 50},
        ],
    )
    assert vllm_backend.sampling_params(sampling) == [
        {
            "n": 2,
            "temperature": 0.7,
            "top_k": -1,
            "top_p": 0.9,
            "max_tokens": 32,
            "seed": 10,
        },
        {
            "n": 2,
            "temperature": 1.0,
            "top_k": 50,
            "top_p": 0.9,
            "max_tokens": 32,
            "seed": 11,
        },
    ]


def test_vllm_is_unavailable_without_the_package_or_a_gpu():
    if importlib.util.find_spec("vllm") is None:
        assert vllm_backend.is_available() is False


@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"
)
def test_vllm_generates_k_candidates_per_prompt(tiny_model_dir):
    if not vllm_backend.is_available():
        pytest.skip("vLLM needs a CUDA device")
    prompts = [
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "The red cat"}],
    ]
    out = vllm_backend.generate(
        str(tiny_model_dir), "", prompts, SamplingConfig(max_new_tokens=8)
    )
    assert [len(c) for c in out] == [4, 4]
