import numpy as np
import pytest

from tfllm.layers.validation import check_positive_size


@pytest.mark.parametrize("value", [1, 16, np.int64(8)])
def test_accepts_a_positive_size(value):
    check_positive_size("hidden_dim", value)


@pytest.mark.parametrize("value", [0, -3, None])
def test_refuses_a_size_below_one_naming_it(value):
    with pytest.raises(ValueError, match=rf"^hidden_dim must be a positive integer\. Received: hidden_dim={value}$"):
        check_positive_size("hidden_dim", value)
