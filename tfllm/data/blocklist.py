"""Blocklist: drop documents that contain listed words or phrases, or mask those spans."""

import re
from typing import Optional

from tfllm.errors import UserError
from tfllm.files import read_user_file

ACTIONS = ("drop", "mask")
MASK = "<BLOCKED>"


class Blocklist:
    """Finds whole-word, case-insensitive occurrences of the phrases listed in a file.

    The file holds one word or phrase per line; blank lines and lines starting with `#` are
    skipped, and a phrase's words match across any run of whitespace. "Whole word" means no
    letter, digit or underscore touches the match on either side: blocking "ass" leaves
    "class" and "assert" alone.

    All phrases compile into one regular expression shaped as a trie of their characters
    (`(?:a(?:bc|d)|x)` rather than `abc|ad|x`), so the regex engine follows one path per
    position instead of trying every phrase in turn, as the plain alternation would; its cost
    hardly grows with the number of phrases (bench/bench_cleaning.py measures both).

    With `action="drop"` a document with any match is dropped; with `action="mask"` each match
    is replaced by `<BLOCKED>`, a placeholder in the style of the personal-data ones
    (`<EMAIL>`) that a tokenizer keeps as one visible unit, unlike a run of █ as long as the
    word, which would leak its length.

    Args:
        path: the blocklist file.
        action: "drop" or "mask".

    Raises:
        UserError: the file cannot be read, or lists no phrase; the message names `data.blocklist`.

    Example:

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("# words to mask\\nass\\nfoo bar\\n")
    >>> Blocklist(f.name, action="mask").mask("class ASS, Foo  bar!")
    ('class <BLOCKED>, <BLOCKED>!', 2)
    """

    def __init__(self, path: str, *, action: str = "drop"):
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}. Received: action={action!r}")
        self.path = path
        self.action = action
        phrases = read_phrases(path)
        pattern = r"(?<!\w)" + _trie_pattern(phrases) + r"(?!\w)"
        # Matched against the lowercased text: `re.IGNORECASE` makes the search several times slower.
        self._pattern = re.compile(pattern)
        self._ignorecase_pattern = re.compile(pattern, re.IGNORECASE)

    def get_config(self) -> dict:
        return {"path": self.path, "action": self.action}

    def search(self, text: str) -> Optional[str]:
        """The first blocked phrase in `text`, as written there, or `None`."""
        pattern, lowered = self._lowered(text)
        match = pattern.search(lowered)
        return None if match is None else text[match.start() : match.end()]

    def mask(self, text: str) -> tuple:
        """`(masked_text, number_of_spans_masked)`."""
        pattern, lowered = self._lowered(text)
        parts, end = [], 0
        for match in pattern.finditer(lowered):
            parts += [text[end : match.start()], MASK]
            end = match.end()
        return "".join(parts) + text[end:], len(parts) // 2

    def _lowered(self, text):
        lowered = text.lower()
        # A few characters lowercase to two ("İ"), which would shift every later position.
        if len(lowered) != len(text):
            return self._ignorecase_pattern, text
        return self._pattern, lowered


def read_phrases(path: str) -> list:
    """The phrases of a blocklist file, lowercased and with single spaces."""
    lines = read_user_file(path, "data.blocklist", "give a UTF-8 file of words or phrases, one per line, or set "
                           "data.blocklist to null").splitlines()
    phrases = {" ".join(line.lower().split()) for line in lines if line.strip() and not line.lstrip().startswith("#")}
    if not phrases:
        raise UserError(
            f"data.blocklist={path!r} lists no word or phrase (only blank and # comment lines); "
            "add one per line, or set data.blocklist to null."
        )
    return sorted(phrases)


def _trie_pattern(phrases: list) -> str:
    """A regex matching exactly `phrases`, factored by common prefixes, longest alternative first."""
    trie: dict = {}
    for phrase in phrases:
        node = trie
        for char in phrase:
            node = node.setdefault(char, {})
        node[""] = {}  # the end of a phrase
    return _node_pattern(trie)


def _node_pattern(node: dict) -> str:
    branches = []
    for char in sorted(c for c in node if c):
        # A space in a phrase matches any run of whitespace in the text.
        branches.append((r"\s+" if char == " " else re.escape(char)) + _node_pattern(node[char]))
    ends_here = "" in node
    if not branches:
        return ""
    pattern = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    # Longest first: the optional continuation is tried before stopping at the shorter phrase.
    return f"(?:{pattern})?" if ends_here else pattern
