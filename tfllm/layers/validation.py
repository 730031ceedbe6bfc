"""Constructor-argument checks that several layers share, with one wording each."""


def check_positive_size(arg_name, value):
    """Raises a `ValueError` unless `value`, the size `arg_name`, is above 0.

    Any number compares (a NumPy integer from a shape too); `None`, an unset size, is refused
    with the same message.
    """
    if value is None or value <= 0:
        raise ValueError(f"{arg_name} must be a positive integer. Received: {arg_name}={value}")


def check_heads_and_dropout(num_heads, hidden_dim, dropout):
    """Raises a `ValueError` unless `num_heads` is positive and divides `hidden_dim`, and
    `dropout` is a rate in [0, 1): the arguments every attention layer shares."""
    if num_heads <= 0 or hidden_dim <= 0 or hidden_dim % num_heads != 0:
        raise ValueError(
            "num_heads must be positive and divide hidden_dim. "
            f"Received: num_heads={num_heads}, hidden_dim={hidden_dim}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
