"""Constructor-argument checks that several layers share, with one wording each."""


def check_positive_size(arg_name, value):
    """Raises a `ValueError` unless `value`, the size `arg_name`, is above 0.

    Any number compares (a NumPy integer from a shape too); `None`, an unset size, is refused
    with the same message.
    """
    if value is None or value <= 0:
        raise ValueError(f"{arg_name} must be a positive integer. Received: {arg_name}={value}")
