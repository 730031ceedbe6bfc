"""The unit every labeled-data reader yields, and the seeded train/validation split of a list of them."""

import math
import random


class Example(tuple):
    """A pair read from one line, `(text, label)`, `(prompt, completion)` or `(source, target)`,
    unpacking as a 2-tuple.

    Args:
        first: the text, prompt or source.
        second: the label, completion or target.
        source: str, `"FILE:LINE"` of the line it was read from.
        group: optional, what the example shares with others that must stay on one side of a
            train/validation split (the module a built-in function comes from); None for none.

    Example:

    >>> text, label = Example("Hello.", "greeting", "train.jsonl:1")
    >>> label, Example("Hello.", "greeting", "train.jsonl:1").source
    ('greeting', 'train.jsonl:1')
    """

    def __new__(cls, first, second, source: str, group=None):
        pair = super().__new__(cls, (first, second))
        pair.source = source
        pair.group = group
        return pair

    def __getnewargs__(self):
        return (self[0], self[1], self.source, self.group)


def split_examples(examples: list, val_fraction: float, seed: int) -> tuple:
    """`(train, val)`: a seeded split that gives validation at least `val_fraction` of `examples`.

    Whole groups are shuffled with `seed` and go to validation until it holds
    `ceil(len(examples) * val_fraction)` examples, so that no group is on both sides: a model
    must not be validated on functions of the modules it trained on. An example without a group
    is a group of its own, so without groups this is a seeded shuffle of the examples whose first
    `ceil(...)` go to validation.

    Either side may come back empty (a `val_fraction` of 0 or 1, a single group); the caller
    says what to do about it.
    """
    n_val = math.ceil(len(examples) * val_fraction) if val_fraction > 0 else 0
    groups = {}  # key -> its examples, in first-seen order (so the split depends on the seed only)
    for i, example in enumerate(examples):
        key = ("group", example.group) if example.group is not None else ("example", i)
        groups.setdefault(key, []).append(example)
    shuffled = list(groups.values())
    random.Random(seed).shuffle(shuffled)
    train, val = [], []
    for members in shuffled:
        (val if len(val) < n_val else train).extend(members)
    return train, val
