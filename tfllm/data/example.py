"""The unit every labeled-data reader yields."""


class Example(tuple):
    """A pair read from one line, `(text, label)` or `(prompt, completion)`, unpacking as a 2-tuple.

    Args:
        first: the text or prompt.
        second: the label or completion.
        source: str, `"FILE:LINE"` of the line it was read from.

    Example:

    >>> text, label = Example("Hello.", "greeting", "train.jsonl:1")
    >>> label, Example("Hello.", "greeting", "train.jsonl:1").source
    ('greeting', 'train.jsonl:1')
    """

    def __new__(cls, first, second, source: str):
        pair = super().__new__(cls, (first, second))
        pair.source = source
        return pair

    def __getnewargs__(self):
        return (self[0], self[1], self.source)
