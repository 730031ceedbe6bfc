"""Range checks of the sampler arguments: the boundaries are accepted, the rest refused."""

import pytest

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
