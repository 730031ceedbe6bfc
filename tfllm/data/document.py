"""The unit every corpus reader yields."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Document:
    """One training document and where it came from.

    Args:
        text: the document's text, exactly as read (cleaning happens later).
        source: where it was read from, for error messages and statistics:
            a file path, `"file.jsonl:12"` for a line of a JSON Lines file,
            `"file.txt:40"` for a blank-line separated block starting on line
            40, or `"builtin:python-docs:topic"` for a built-in corpus.

    Example:

    >>> Document(text="Hello.", source="notes.txt")
    Document(text='Hello.', source='notes.txt')
    """

    text: str
    source: str
