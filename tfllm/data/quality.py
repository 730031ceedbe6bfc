"""Document quality heuristics of Gopher (Rae et al., 2021) and C4 (Raffel et al., 2020)."""

from collections import Counter
from typing import Optional

# The thresholds `QualityFilter` takes; each is the config key `data.quality_<name>`.
SETTINGS = ("min_words", "min_mean_word_length", "max_mean_word_length", "max_symbol_ratio", "min_punctuated_lines",
            "max_duplicate_lines", "max_top_2gram", "max_top_3gram", "max_top_4gram")
RULES = (
    "min_words",
    "mean_word_length",
    "symbol_ratio",
    "punctuated_lines",
    "duplicate_lines",
    "top_2gram",
    "top_3gram",
    "top_4gram",
)
# C4 keeps lines that end in terminal punctuation (a closing quote counts).
_TERMINAL = (".", "!", "?", '"', "'", "\u201d", "\u2019")


class QualityFilter:
    """Names the first quality rule a document fails, in the order of `RULES`.

    Words are the whitespace-separated tokens of the document; lines are its non-blank lines.
    The rules (`min_words=0`, `min_punctuated_lines=0` and a `max_` fraction of 1 turn theirs off):

    - `min_words`: fewer than `min_words` words.
    - `mean_word_length`: mean word length (characters) outside
      [`min_mean_word_length`, `max_mean_word_length`].
    - `symbol_ratio`: more than `max_symbol_ratio` hash signs and ellipses ("...", "…") per word.
    - `punctuated_lines`: a smaller share of lines ending in terminal punctuation than
      `min_punctuated_lines` (C4 keeps only such lines; FineWeb applies 0.12 per document).
    - `duplicate_lines`: a larger share of lines repeating an earlier line than
      `max_duplicate_lines`.
    - `top_2gram`, `top_3gram`, `top_4gram`: the most frequent repeated word 2-, 3- or 4-gram
      (lowercased) covers more than `max_top_2gram` / `max_top_3gram` / `max_top_4gram` of the characters
      of all words, counting each occurrence (Gopher's repetition rule).

    The defaults are Gopher's thresholds and FineWeb's share of punctuated lines. They are
    tuned for web prose: code fails most of them (short identifiers, few full stops, `#`
    comments, repeated lines such as `}` or `return None`).

    Args:
        min_words, min_mean_word_length, max_mean_word_length, max_symbol_ratio,
        min_punctuated_lines, max_duplicate_lines, max_top_2gram, max_top_3gram,
        max_top_4gram: the thresholds above.

    Call arguments (`failed_rule`):
        text: a document. Returns the name of the first failed rule, or `None`.

    Example:

    >>> QualityFilter().failed_rule("Too short to be a web page.")
    'min_words'
    """

    def __init__(
        self,
        *,
        min_words: int = 50,
        min_mean_word_length: float = 3.0,
        max_mean_word_length: float = 10.0,
        max_symbol_ratio: float = 0.1,
        min_punctuated_lines: float = 0.12,
        max_duplicate_lines: float = 0.3,
        max_top_2gram: float = 0.20,
        max_top_3gram: float = 0.18,
        max_top_4gram: float = 0.16,
    ):
        fractions = {
            "min_punctuated_lines": min_punctuated_lines,
            "max_duplicate_lines": max_duplicate_lines,
            "max_top_2gram": max_top_2gram,
            "max_top_3gram": max_top_3gram,
            "max_top_4gram": max_top_4gram,
        }
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1]. Received: {name}={value!r}")
        if min(min_words, min_mean_word_length, max_symbol_ratio) < 0 or max_mean_word_length < min_mean_word_length:
            raise ValueError(
                "min_words, min_mean_word_length and max_symbol_ratio must be non-negative and "
                "max_mean_word_length at least min_mean_word_length. Received: "
                f"min_words={min_words!r}, min_mean_word_length={min_mean_word_length!r}, "
                f"max_mean_word_length={max_mean_word_length!r}, max_symbol_ratio={max_symbol_ratio!r}"
            )
        self.min_words = min_words
        self.min_mean_word_length = min_mean_word_length
        self.max_mean_word_length = max_mean_word_length
        self.max_symbol_ratio = max_symbol_ratio
        self.min_punctuated_lines = min_punctuated_lines
        self.max_duplicate_lines = max_duplicate_lines
        self.max_top_2gram = max_top_2gram
        self.max_top_3gram = max_top_3gram
        self.max_top_4gram = max_top_4gram

    def get_config(self) -> dict:
        return {name: getattr(self, name) for name in SETTINGS}

    def failed_rule(self, text: str) -> Optional[str]:
        words = text.split()
        if len(words) < self.min_words:
            return "min_words"
        if not words:
            return None
        word_chars = sum(map(len, words))
        if not self.min_mean_word_length <= word_chars / len(words) <= self.max_mean_word_length:
            return "mean_word_length"
        symbols = text.count("#") + text.count("...") + text.count("\u2026")
        if symbols / len(words) > self.max_symbol_ratio:
            return "symbol_ratio"
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        if sum(line.endswith(_TERMINAL) for line in lines) < self.min_punctuated_lines * len(lines):
            return "punctuated_lines"
        if len(lines) - len(set(lines)) > self.max_duplicate_lines * len(lines):
            return "duplicate_lines"
        lowered = [word.lower() for word in words]
        for n, limit in ((2, self.max_top_2gram), (3, self.max_top_3gram), (4, self.max_top_4gram)):
            if limit < 1.0 and _top_ngram_chars(lowered, n) > limit * word_chars:
                return f"top_{n}gram"
        return None


def _top_ngram_chars(words: list, n: int) -> int:
    """Characters of words covered by the most frequent n-gram, times its count; 0 when no n-gram
    repeats (in a short text any n-gram covers much of it)."""
    if len(words) < n:
        return 0
    ((ngram, count),) = Counter(zip(*(words[i:] for i in range(n)))).most_common(1)
    return count * sum(map(len, ngram)) if count > 1 else 0
