"""Document cleaning: Unicode and whitespace normalization, deduplication, length filter."""

import hashlib
import re
import unicodedata
from typing import Optional

# Every Cc code point except the line feed and tab that text and code rely on.
# Unicode's stability policy fixes Cc to U+0000..U+001F and U+007F..U+009F.
_CONTROL_CHARS = {
    cp: None for cp in range(0x100) if unicodedata.category(chr(cp)) == "Cc" and chr(cp) not in "\n\t"
}
# Four line breaks in a row are three blank lines; keep two.
_BLANK_RUN = re.compile(r"\n{4,}")

COUNT_KEYS = (
    "documents_in",
    "kept",
    "dropped_empty",
    "dropped_too_short",
    "dropped_duplicate",
    "unicode_normalized_documents",
    "control_chars_removed",
    "whitespace_normalized_documents",
    "chars_in",
    "chars_out",
)


class Cleaner:
    """Normalizes documents and drops empty, short and repeated ones.

    Steps run in this order, each behind its switch: line breaks to "\\n"
    (part of `normalize_whitespace`, done first so that a lone "\\r" is a line
    break rather than a control character); removal of control characters; NFC
    normalization (after the removal, which can join a letter to its combining
    mark, so that cleaning twice changes nothing); the rest of whitespace
    normalization (trailing whitespace stripped on every line, three or more
    blank lines collapsed to two, blank lines at the start and end removed);
    the length filter; exact deduplication. Leading whitespace is never touched, so Python code keeps
    its indentation. With `enabled=False`, or every switch off and
    `min_chars=0`, `clean` returns its input unchanged.

    Deduplication keeps a 16-byte BLAKE2b digest per kept document, so memory
    grows by about 100 bytes per document, not with the corpus size. A
    `Cleaner` is stateful: use one per corpus.

    Args:
        enabled: master switch; `False` turns every step off.
        normalize_unicode: apply Unicode NFC normalization.
        drop_control_chars: remove characters of category Cc except "\\n" and "\\t".
        normalize_whitespace: normalize line breaks, trailing whitespace and blank lines.
        deduplicate: drop a document identical to one already kept.
        min_chars: drop documents with fewer characters than this after
            normalization; empty documents count as `dropped_empty`. 0 keeps all.

    Call arguments (`clean`):
        text: a document's text. Returns the cleaned text, or `None` when the
            document is dropped. `counts` records why.

    Example:

    >>> cleaner = Cleaner(min_chars=3)
    >>> cleaner.clean("x = 1   \\r\\n\\r\\n\\r\\n\\r\\n    y = 2\\r\\n")
    'x = 1\\n\\n\\n    y = 2'
    >>> cleaner.clean("x = 1\\n\\n\\n    y = 2") is None  # a duplicate now
    True
    >>> cleaner.counts["dropped_duplicate"]
    1
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        normalize_unicode: bool = True,
        drop_control_chars: bool = True,
        normalize_whitespace: bool = True,
        deduplicate: bool = True,
        min_chars: int = 32,
    ):
        if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
            raise ValueError(f"min_chars must be a non-negative integer. Received: min_chars={min_chars!r}")
        self.enabled = enabled
        self.normalize_unicode = normalize_unicode
        self.drop_control_chars = drop_control_chars
        self.normalize_whitespace = normalize_whitespace
        self.deduplicate = deduplicate
        self.min_chars = min_chars
        self.counts = {key: 0 for key in COUNT_KEYS}
        self._seen: set[bytes] = set()

    def get_config(self) -> dict:
        return {
            "enabled": self.enabled,
            "normalize_unicode": self.normalize_unicode,
            "drop_control_chars": self.drop_control_chars,
            "normalize_whitespace": self.normalize_whitespace,
            "deduplicate": self.deduplicate,
            "min_chars": self.min_chars,
        }

    def clean(self, text: str) -> Optional[str]:
        counts = self.counts
        counts["documents_in"] += 1
        counts["chars_in"] += len(text)
        if self.enabled:
            text = self._normalize(text)
            if not self._long_enough(text) or not self._first_seen(text):
                return None
        counts["kept"] += 1
        counts["chars_out"] += len(text)
        return text

    def _normalize(self, text: str) -> str:
        counts = self.counts
        whitespace_changed = False
        if self.normalize_whitespace:
            normalized = text.replace("\r\n", "\n").replace("\r", "\n")
            whitespace_changed = normalized != text
            text = normalized
        if self.drop_control_chars:
            length = len(text)
            text = text.translate(_CONTROL_CHARS)
            counts["control_chars_removed"] += length - len(text)
        # After control-char removal, which can join a letter to its combining mark.
        if self.normalize_unicode and not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
            counts["unicode_normalized_documents"] += 1
        if self.normalize_whitespace:
            # Line by line: an order of magnitude faster than a regex with a lookahead.
            normalized = "\n".join(line.rstrip() for line in text.split("\n"))
            normalized = _BLANK_RUN.sub("\n\n\n", normalized).strip("\n")
            # Dropping the final line break alone, as in nearly every file, is not worth counting.
            whitespace_changed = whitespace_changed or normalized != text.removesuffix("\n")
            text = normalized
        counts["whitespace_normalized_documents"] += whitespace_changed
        return text

    def _long_enough(self, text: str) -> bool:
        if not self.min_chars or len(text) >= self.min_chars:
            return True
        self.counts["dropped_empty" if not text else "dropped_too_short"] += 1
        return False

    def _first_seen(self, text: str) -> bool:
        if not self.deduplicate:
            return True
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if digest in self._seen:
            self.counts["dropped_duplicate"] += 1
            return False
        self._seen.add(digest)
        return True
