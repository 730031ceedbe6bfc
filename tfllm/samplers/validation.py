"""Argument checks shared by the samplers and `get_sampler`.

Each check raises `ValueError` naming the parameter, the allowed range and the value received,
so a bad generation setting fails when the sampler is built, not deep inside a traced loop.
"""

import numbers

# Stateless random ops compile under XLA only with int32 seeds.
MAX_SEED = 2**31 - 1


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_temperature(temperature):
    if not _is_real(temperature) or not temperature >= 0:
        raise ValueError(
            "temperature must be a number >= 0 (0 picks the most probable token). "
            f"Received: temperature={temperature!r}"
        )


def check_seed(seed):
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= MAX_SEED):
        raise ValueError(
            f"seed must be None or an integer in [0, {MAX_SEED}]. Received: seed={seed!r}"
        )


def check_top_k(top_k, name="top_k"):
    if not _is_int(top_k) or top_k < 1:
        raise ValueError(f"{name} must be an integer >= 1. Received: {name}={top_k!r}")


def check_top_p(top_p, name="top_p"):
    if not _is_real(top_p) or not 0 < top_p <= 1:
        raise ValueError(f"{name} must be a number with 0 < {name} <= 1. Received: {name}={top_p!r}")


def check_num_beams(num_beams):
    if not _is_int(num_beams) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1. Received: num_beams={num_beams!r}")


def check_length_penalty(length_penalty):
    if not _is_real(length_penalty) or length_penalty != length_penalty:
        raise ValueError(
            f"length_penalty must be a real number (0 ranks beams by total log-probability). "
            f"Received: length_penalty={length_penalty!r}"
        )
