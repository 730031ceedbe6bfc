"""`get_sampler` (tfllm/samplers/__init__.py): strategy names to configured samplers."""

import pytest

from tfllm.samplers import (
    BeamSampler,
    GreedySampler,
    RandomSampler,
    TopKSampler,
    TopPSampler,
    get_sampler,
)


@pytest.mark.parametrize(
    "strategy, kwargs, cls, config",
    [
        ("greedy", {"temperature": 0.5, "top_k": 3}, GreedySampler, {}),
        ("sample", {"temperature": 0.8, "seed": 1}, RandomSampler, {"temperature": 0.8, "seed": 1}),
        ("sample", {"top_k": 5, "seed": 2}, TopKSampler, {"k": 5, "temperature": 1.0, "seed": 2}),
        ("sample", {"top_p": 0.9}, TopPSampler, {"p": 0.9, "k": None, "temperature": 1, "seed": None}),
        (
            "sample",
            {"top_k": 20, "top_p": 0.8, "temperature": 0.0},
            TopPSampler,
            {"p": 0.8, "k": 20, "temperature": 0.0, "seed": None},
        ),
        (
            "beam",
            {"num_beams": 3, "length_penalty": 0.6},
            BeamSampler,
            {"num_beams": 3, "length_penalty": 0.6, "return_all_beams": False},
        ),
    ],
)
def test_strategies_map_to_configured_samplers(strategy, kwargs, cls, config):
    sampler = get_sampler(strategy, **kwargs)
    assert type(sampler) is cls
    assert sampler.get_config() == config


@pytest.mark.parametrize(
    "strategy, kwargs, message",
    [
        ("nucleus", {}, r"one of \('greedy', 'sample', 'beam'\). Received: strategy='nucleus'"),
        ("sample", {"temperature": -1.0}, r"temperature must be a number >= 0.*temperature=-1.0"),
        ("sample", {"top_k": 0}, r"top_k must be an integer >= 1. Received: top_k=0"),
        ("sample", {"top_p": 0.0}, r"top_p must be a number with 0 < top_p <= 1. Received: top_p=0.0"),
        ("sample", {"top_p": 1.01}, r"top_p must be a number with 0 < top_p <= 1"),
        ("beam", {"num_beams": 0}, r"num_beams must be an integer >= 1. Received: num_beams=0"),
        ("greedy", {"num_beams": -1}, r"num_beams must be an integer >= 1"),
        ("sample", {"seed": "7"}, r"seed must be None or an integer in \[0, 2147483647\]"),
        ("beam", {"length_penalty": None}, r"length_penalty must be a real number"),
    ],
)
def test_bad_values_name_the_parameter_and_its_range(strategy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_sampler(strategy, **kwargs)
