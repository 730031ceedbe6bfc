"""Document cleaning: normalization, personal-data redaction, blocklist, length and quality
filters, exact and near deduplication."""

import hashlib
import json
import os
import re
import unicodedata
from typing import Optional

from tfllm.data.blocklist import Blocklist
from tfllm.data.near_duplicates import NearDuplicateFilter
from tfllm.data.personal_data import KINDS, redact_personal_data
from tfllm.data.quality import RULES, QualityFilter

# Every Cc code point except the line feed and tab that text and code rely on.
# Unicode's stability policy fixes Cc to U+0000..U+001F and U+007F..U+009F.
_CONTROL_CHARS = {
    cp: None for cp in range(0x100) if unicodedata.category(chr(cp)) == "Cc" and chr(cp) not in "\n\t"
}
# `str.translate` has a fast path for ASCII text only: on a document with one character that is
# not ASCII it costs 40x a search for a control character (830 against 19 us for 5.7 KB), so
# documents are searched first and translated only when they hold one.
_CONTROL_CHAR = re.compile("[" + "".join(re.escape(chr(cp)) for cp in _CONTROL_CHARS) + "]")
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
    "personal_data",
    "blocklist",
    "quality",
    "near_duplicate",
)
# The steps whose removals (or, for personal data and a masking blocklist, changes) are sampled
# for review into `removed/<reason>.jsonl` of a prepared corpus.
REMOVED_REASONS = ("personal_data", "blocklist", "quality", "near_duplicate")
REMOVED_DIR = "removed"
# A sample's text is cut here: enough to judge it, and 20 samples of a 1 MB file stay small.
_SAMPLE_CHARS = 2000


class Cleaner:
    """Normalizes documents, redacts personal data, and drops empty, short, blocklisted,
    low-quality and repeated ones.

    Steps run in this order, each behind its switch: line breaks to "\\n"
    (part of `normalize_whitespace`, done first so that a lone "\\r" is a line
    break rather than a control character); removal of control characters; NFC
    normalization (after the removal, which can join a letter to its combining
    mark, so that cleaning twice changes nothing); the rest of whitespace
    normalization (trailing whitespace stripped on every line, three or more
    blank lines collapsed to two, blank lines at the start and end removed);
    personal-data redaction; the blocklist; the length filter; the quality
    filter; exact deduplication; near-duplicate removal. Leading whitespace is
    never touched, so Python code keeps its indentation. With `enabled=False`,
    or every switch off and `min_chars=0`, `clean` returns its input unchanged.

    Redaction and masking come before the filters, so that the length filter
    sees the text that is kept and deduplication compares what is written; the
    cheap filters come before the expensive near-duplicate search.

    Deduplication keeps a 16-byte BLAKE2b digest per kept document, so memory
    grows by about 100 bytes per document, not with the corpus size (near
    deduplication adds about 2 KB). A `Cleaner` is stateful: use one per corpus.

    `counts` holds, besides the flat counts of the steps above, per reason:
    `personal_data` (redactions per kind, see `tfllm.data.personal_data.KINDS`),
    `blocklist` (`dropped` documents, `masked` spans), `quality` (documents
    dropped per rule, the first failed one; see `tfllm.data.quality.RULES`) and
    `near_duplicate` (documents dropped). `removed` holds the first
    `max_removed_samples` documents per reason (per rule for `quality`) that
    were dropped, or changed by redaction or masking, as `save_removed` writes them.

    Args:
        enabled: master switch; `False` turns every step off.
        normalize_unicode: apply Unicode NFC normalization.
        drop_control_chars: remove characters of category Cc except "\\n" and "\\t".
        normalize_whitespace: normalize line breaks, trailing whitespace and blank lines.
        deduplicate: drop a document identical to one already kept.
        min_chars: drop documents with fewer characters than this after
            normalization; empty documents count as `dropped_empty`. 0 keeps all.
        redact_personal_data: replace e-mail addresses, phone numbers, IP
            addresses, payment cards and secrets by placeholders
            (`tfllm.data.personal_data`).
        blocklist: a `Blocklist` that drops or masks listed phrases, or `None`.
        quality: a `QualityFilter`, or `None` for no quality filter.
        near_duplicates: a `NearDuplicateFilter` (stateful, like the `Cleaner`),
            or `None` to keep near-duplicates.
        max_removed_samples: documents kept in `removed` per reason (and rule).

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
        redact_personal_data: bool = True,
        blocklist: Optional[Blocklist] = None,
        quality: Optional[QualityFilter] = None,
        near_duplicates: Optional[NearDuplicateFilter] = None,
        max_removed_samples: int = 20,
    ):
        if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
            raise ValueError(f"min_chars must be a non-negative integer. Received: min_chars={min_chars!r}")
        if max_removed_samples < 0:
            raise ValueError(
                f"max_removed_samples must be 0 or more. Received: max_removed_samples={max_removed_samples!r}"
            )
        self.enabled = enabled
        self.normalize_unicode = normalize_unicode
        self.drop_control_chars = drop_control_chars
        self.normalize_whitespace = normalize_whitespace
        self.deduplicate = deduplicate
        self.min_chars = min_chars
        self.redact_personal_data = redact_personal_data
        self.blocklist = blocklist
        self.quality = quality
        self.near_duplicates = near_duplicates
        self.max_removed_samples = max_removed_samples
        self.counts = {key: 0 for key in COUNT_KEYS}
        self.counts.update(
            personal_data={kind: 0 for kind in KINDS},
            blocklist={"dropped": 0, "masked": 0},
            quality={rule: 0 for rule in RULES},
        )
        self.removed = {reason: [] for reason in REMOVED_REASONS}
        self._seen: set[bytes] = set()

    def get_config(self) -> dict:
        return {
            "enabled": self.enabled,
            "normalize_unicode": self.normalize_unicode,
            "drop_control_chars": self.drop_control_chars,
            "normalize_whitespace": self.normalize_whitespace,
            "deduplicate": self.deduplicate,
            "min_chars": self.min_chars,
            "redact_personal_data": self.redact_personal_data,
            "blocklist": _config(self.blocklist),
            "quality": _config(self.quality),
            "near_duplicates": _config(self.near_duplicates),
            "max_removed_samples": self.max_removed_samples,
        }

    def clean(self, text: str) -> Optional[str]:
        counts = self.counts
        index = counts["documents_in"]
        counts["documents_in"] += 1
        counts["chars_in"] += len(text)
        if self.enabled:
            text = self._redact(self._normalize(text), index)
            text = self._apply_blocklist(text, index)
            if (
                text is None
                or not self._long_enough(text)
                or not self._good_enough(text, index)
                or not self._first_seen(text)
                or not self._not_near_duplicate(text, index)
            ):
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
            if _CONTROL_CHAR.search(text):
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

    def _redact(self, text: str, index: int) -> str:
        if not self.redact_personal_data:
            return text
        text, redactions = redact_personal_data(text)
        if redactions:
            for kind, count in redactions.items():
                self.counts["personal_data"][kind] += count
            self._sample("personal_data", text, index, redactions=redactions)
        return text

    def _apply_blocklist(self, text: str, index: int) -> Optional[str]:
        if self.blocklist is None:
            return text
        if self.blocklist.action == "mask":
            text, masked = self.blocklist.mask(text)
            if masked:
                self.counts["blocklist"]["masked"] += masked
                self._sample("blocklist", text, index, masked=masked)
            return text
        phrase = self.blocklist.search(text)
        if phrase is None:
            return text
        self.counts["blocklist"]["dropped"] += 1
        self._sample("blocklist", text, index, phrase=phrase)
        return None

    def _good_enough(self, text: str, index: int) -> bool:
        if self.quality is None:
            return True
        rule = self.quality.failed_rule(text)
        if rule is None:
            return True
        self.counts["quality"][rule] += 1
        self._sample("quality", text, index, rule=rule)
        return False

    def _not_near_duplicate(self, text: str, index: int) -> bool:
        if self.near_duplicates is None:
            return True
        found = self.near_duplicates.check(text, key=index)
        if found is None:
            return True
        self.counts["near_duplicate"] += 1
        self._sample("near_duplicate", text, index, similar_to=found[0], jaccard=round(found[1], 4))
        return False

    def _sample(self, reason: str, text: str, index: int, **details) -> None:
        samples = self.removed[reason]
        if reason == "quality":
            # The first few of each rule, so that a common rule does not hide a rare one.
            if sum(sample["rule"] == details["rule"] for sample in samples) >= self.max_removed_samples:
                return
        elif len(samples) >= self.max_removed_samples:
            return
        samples.append({"document": index, **details, "chars": len(text), "text": text[:_SAMPLE_CHARS]})

    def save_removed(self, directory: str) -> None:
        """Writes `directory/removed/<reason>.jsonl` for each reason with samples, one JSON object
        per line: `document` (its position among the documents read, from 0), the reason's
        details, `chars` and `text` (cut at 2,000 characters; redacted and masked already)."""
        reasons = [reason for reason in REMOVED_REASONS if self.removed[reason]]
        if not reasons:
            return
        os.makedirs(os.path.join(directory, REMOVED_DIR), exist_ok=True)
        for reason in reasons:
            with open(os.path.join(directory, REMOVED_DIR, f"{reason}.jsonl"), "w", encoding="utf-8") as f:
                for sample in self.removed[reason]:
                    f.write(json.dumps(sample, ensure_ascii=False) + "\n")


def _config(step) -> Optional[dict]:
    return None if step is None else step.get_config()
