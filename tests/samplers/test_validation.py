"""Range checks of the generation settings: the boundaries are accepted, the rest refused."""

import pytest
import tensorflow as tf

from tfllm.samplers import validation


@pytest.mark.parametrize(
    "check, good, bad",
    [
        (validation.check_temperature, [0, 0.0, 1e-6, 3], [-1e-9, float("nan"), "1", None, True]),
        (validation.check_seed, [None, 0, 2**31 - 1], [-1, 2**31, 2.0, False]),
        (validation.check_top_k, [1, 50], [0, -1, 1.0, True, None]),
        (validation.check_top_p, [1, 1.0, 1e-9], [0, -0.5, 1.0001, float("nan"), None]),
        (validation.check_num_beams, [1, 8], [0, 1.5, True]),
        (validation.check_length_penalty, [-1.0, 0, 2.5], [float("nan"), None, "1.0"]),
    ],
)
def test_boundaries(check, good, bad):
    for value in good:
        check(value)
    for value in bad:
        with pytest.raises(ValueError, match=r"Received: \w+="):
            check(value)


def test_max_new_tokens_depends_on_the_context():
    for value in (1, 23):
        validation.check_setting("max_new_tokens", value, max_length=24)
    for value in (0, 24, 1.0, True):
        with pytest.raises(ValueError, match=r"max_new_tokens must be an integer in \[1, 23\] for a 24-token context"):
            validation.check_setting("max_new_tokens", value, max_length=24)
    with pytest.raises(ValueError, match="pass max_length"):
        validation.check_setting("max_new_tokens", 4)


def test_each_caller_sees_the_same_requirement_under_its_own_name():
    with pytest.raises(ValueError) as parameter:
        validation.check_top_k(0, name="k")
    assert str(parameter.value) == "k must be an integer >= 1. Received: k=0"
    expected = "--top-k 0 is invalid: top_k must be an integer >= 1; pass a valid value"
    assert validation.flag_error("top_k", 0) == expected
    assert validation.flag_error("top_k", 3) is None
    _, message = validation.request_check("top_k", tf.constant(-1))
    assert message == "top_k must be >= 0 (0 turns it off). Received: top_k ="


@pytest.mark.parametrize(
    "setting, good, bad",
    [
        ("temperature", [0.0, 2.5], [-1e-6, float("inf"), float("nan")]),
        ("top_k", [0, 5], [-1]),
        ("top_p", [1e-6, 1.0], [0.0, 1.0001, float("nan")]),
        ("max_new_tokens", [1, 23], [0, 24, -(10**6)]),
    ],
)
def test_request_boundaries_follow_the_serving_conventions(setting, good, bad):
    dtype = tf.int32 if isinstance(good[0], int) else tf.float32
    for values, expected in ((good, True), (bad, False)):
        for value in values:
            condition, _ = validation.request_check(setting, tf.constant(value, dtype), max_length=24)
            assert bool(condition) is expected, (setting, value)


def test_a_request_seed_is_never_refused_and_beams_are_not_requested():
    assert validation.request_check("seed", tf.constant(-5)) is None
    with pytest.raises(ValueError, match="a serving request does not set num_beams"):
        validation.request_check("num_beams", tf.constant(1))
