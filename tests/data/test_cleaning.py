import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfllm.data.cleaning import COUNT_KEYS, Cleaner

SWITCHES = ("normalize_unicode", "drop_control_chars", "normalize_whitespace", "deduplicate")


def only(switch=None, min_chars=0):
    """A cleaner with one switch on (or none) and no length filter."""
    return Cleaner(**{name: name == switch for name in SWITCHES}, min_chars=min_chars)


def test_normalize_unicode_composes_to_nfc():
    cleaner = only("normalize_unicode")
    assert cleaner.clean("cafe\u0301 \u212b") == "caf\u00e9 \u00c5"
    assert cleaner.clean("already nfc") == "already nfc"
    assert cleaner.counts["unicode_normalized_documents"] == 1


def test_drop_control_chars_keeps_newline_and_tab():
    cleaner = only("drop_control_chars")
    assert cleaner.clean("a\x00b\x07c\td\ne\x7f\x85f\x1b[0m") == "abc\td\nef[0m"
    assert cleaner.counts["control_chars_removed"] == 5


def test_normalize_whitespace():
    cleaner = only("normalize_whitespace")
    text = "\n\n  \nline one   \r\n\tindented\t\r\n\r\n\r\n\r\n\r\n    code\rlast \u00a0\n\n"
    assert cleaner.clean(text) == "line one\n\tindented\n\n\n    code\nlast"
    assert cleaner.clean("a\n\n\nb") == "a\n\n\nb"  # two blank lines stay
    assert cleaner.clean("a final line break\n") == "a final line break"
    assert cleaner.counts["whitespace_normalized_documents"] == 1  # the final line break is not counted


def test_indentation_is_preserved():
    code = "\n\n    def f(x):\n        if x:\n\t\treturn 1  \n\n\n\n\n        return 2\n"
    expected = "    def f(x):\n        if x:\n\t\treturn 1\n\n\n        return 2"
    assert Cleaner(min_chars=0).clean(code) == expected


def test_all_steps_run_in_order():
    # The NUL separates "e" from its accent, so NFC must come after control-char removal.
    assert Cleaner(min_chars=0).clean("caf e\x00\u0301  \r\n") == "caf \u00e9"


def test_min_chars_drops_short_and_empty_documents():
    cleaner = Cleaner(min_chars=6)
    assert cleaner.clean("long enough") == "long enough"
    assert cleaner.clean("short") is None
    assert cleaner.clean("\n   \n\x00") is None
    assert cleaner.clean("") is None
    assert {k: cleaner.counts[k] for k in ("kept", "dropped_too_short", "dropped_empty")} == {
        "kept": 1,
        "dropped_too_short": 1,
        "dropped_empty": 2,
    }


def test_duplicates_after_normalization_are_dropped_and_counted():
    cleaner = Cleaner(min_chars=0)
    outputs = [cleaner.clean(t) for t in ["same text", "other", "same text  \r\n", "same\x00 text", "other"]]
    assert outputs == ["same text", "other", None, None, None]
    assert cleaner.counts["dropped_duplicate"] == 3
    assert cleaner.counts["kept"] == 2
    assert only().clean("same text") == "same text"


def test_counts_add_up_and_serialize_to_json():
    cleaner = Cleaner(min_chars=4)
    for text in ["keep me", "keep me", "no", "", "x\x01yzw"]:
        cleaner.clean(text)
    counts = json.loads(json.dumps(cleaner.counts))
    assert set(counts) == set(COUNT_KEYS)
    dropped = counts["dropped_empty"] + counts["dropped_too_short"] + counts["dropped_duplicate"]
    assert counts["kept"] + dropped == counts["documents_in"] == 5
    assert counts["chars_in"] == 7 + 7 + 2 + 0 + 5
    assert counts["chars_out"] == 7 + 4


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_all_off_is_identity(text):
    assert Cleaner(enabled=False).clean(text) == text
    assert only().clean(text) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", " ", "\t", "\n", "\r", "\x00", "\x85", "e", "\u0301", "\u212b"])))
def test_cleaning_twice_changes_nothing(text):
    once = Cleaner(deduplicate=False, min_chars=0).clean(text)
    assert Cleaner(deduplicate=False, min_chars=0).clean(once) == once
    assert once == once.strip("\n") and "\r" not in once and "\n\n\n\n" not in once


def test_negative_min_chars_is_refused():
    with pytest.raises(ValueError, match="min_chars must be a non-negative integer. Received: min_chars=-1"):
        Cleaner(min_chars=-1)
