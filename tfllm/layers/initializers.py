"""One initializer instance per weight."""

import keras


def clone_initializer(initializer):
    """A fresh copy of `initializer` (a name, a config or an instance) for one more weight.

    Keras 3 fixes an unseeded initializer's seed when the instance is created, so one instance
    used for several weights gives them identical values: every block of a model built with one
    `RandomNormal` would start as a copy of the first. A copy made from the config draws a seed
    of its own (from the global seed that `keras.utils.set_random_seed` sets); a seeded
    initializer keeps its seed.
    """
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())
