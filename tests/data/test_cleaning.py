import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfllm.data.blocklist import Blocklist
from tfllm.data.cleaning import COUNT_KEYS, REMOVED_REASONS, Cleaner
from tfllm.data.near_duplicates import NearDuplicateFilter
from tfllm.data.quality import RULES, QualityFilter

SWITCHES = ("normalize_unicode", "drop_control_chars", "normalize_whitespace", "deduplicate", "redact_personal_data")


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


PARAGRAPH = (
    "The harbour was quiet in the early morning, when the fishing boats had already gone out and the "
    "ferry to the islands had not yet arrived. Gulls walked along the wall, and an old man sold coffee "
    "from a cart near the steps that lead down to the water."
)


def blocklist(tmp_path, action="drop"):
    path = tmp_path / "blocklist.txt"
    path.write_text("ferry\nold man\n")
    return Blocklist(str(path), action=action)


def test_personal_data_is_redacted_before_the_length_filter_and_counted():
    cleaner = Cleaner(min_chars=10)
    assert cleaner.clean("Mail me: ada@example.org  \r\n") == "Mail me: <EMAIL>"
    # Only a placeholder left: shorter than min_chars once redacted.
    assert cleaner.clean("a@b.example") is None
    assert cleaner.counts["personal_data"] == {"secret": 0, "email": 2, "payment_card": 0, "ip_address": 0, "phone": 0}
    assert cleaner.counts["dropped_too_short"] == 1
    assert [sample["redactions"] for sample in cleaner.removed["personal_data"]] == [{"email": 1}, {"email": 1}]
    assert "ada@example.org" not in str(cleaner.removed)


def test_blocklist_drop_and_mask(tmp_path):
    dropping = Cleaner(min_chars=0, blocklist=blocklist(tmp_path))
    assert dropping.clean(PARAGRAPH) is None
    assert dropping.clean("A quiet harbour.") == "A quiet harbour."
    assert dropping.counts["blocklist"] == {"dropped": 1, "masked": 0}
    assert dropping.removed["blocklist"][0]["phrase"] == "ferry"
    masking = Cleaner(min_chars=0, blocklist=blocklist(tmp_path, "mask"))
    assert "the <BLOCKED> to the islands" in masking.clean(PARAGRAPH)
    assert masking.counts["blocklist"] == {"dropped": 0, "masked": 2}
    assert masking.removed["blocklist"][0]["masked"] == 2


def test_quality_drops_are_counted_by_rule():
    cleaner = Cleaner(min_chars=0, quality=QualityFilter(min_words=20))
    assert cleaner.clean(PARAGRAPH) == PARAGRAPH
    assert cleaner.clean("Too few words here.") is None
    assert cleaner.clean("x = 1\n" * 30) is None
    assert cleaner.counts["quality"] == {**{rule: 0 for rule in RULES}, "min_words": 1, "mean_word_length": 1}
    assert [s["rule"] for s in cleaner.removed["quality"]] == ["min_words", "mean_word_length"]


def test_near_duplicates_after_exact_ones():
    cleaner = Cleaner(min_chars=0, near_duplicates=NearDuplicateFilter(threshold=0.8, ngram=3))
    near_copy = PARAGRAPH.replace("early morning", "early evening")
    outputs = [cleaner.clean(text) for text in (PARAGRAPH, PARAGRAPH, near_copy, "Something else entirely.")]
    assert outputs == [PARAGRAPH, None, None, "Something else entirely."]
    assert cleaner.counts["dropped_duplicate"] == 1 and cleaner.counts["near_duplicate"] == 1
    (sample,) = cleaner.removed["near_duplicate"]
    assert sample["document"] == 2 and sample["similar_to"] == 0 and 0.8 <= sample["jaccard"] <= 1.0


def test_removed_samples_are_bounded_per_reason_and_per_quality_rule():
    cleaner = Cleaner(min_chars=0, quality=QualityFilter(min_words=3), max_removed_samples=2)
    for i in range(5):
        cleaner.clean(f"short {i}")
        cleaner.clean(f"{i}x " * 10 + "\n" + f"line {i}")  # mean word length 2.2
        cleaner.clean(f"server 8.8.8.{i} is {'up' if i % 2 else 'down'} today.")
    assert [s["rule"] for s in cleaner.removed["quality"]] == ["min_words", "mean_word_length"] * 2
    assert len(cleaner.removed["personal_data"]) == 2
    assert cleaner.counts["quality"]["min_words"] == 5 and cleaner.counts["personal_data"]["ip_address"] == 5


def test_counts_add_up_with_every_step_on(tmp_path):
    cleaner = Cleaner(
        min_chars=10,
        blocklist=blocklist(tmp_path),
        quality=QualityFilter(min_words=5),
        near_duplicates=NearDuplicateFilter(ngram=2),
    )
    allowed = PARAGRAPH.replace("ferry", "boat").replace("old man", "old woman")
    # Kept, blocklisted, empty, too short, low quality, duplicate, near duplicate.
    texts = [allowed, PARAGRAPH, "", "tiny", "four words only here", allowed, allowed + " Then it rained."]
    for text in texts:
        cleaner.clean(text)
    c = cleaner.counts
    dropped = (c["dropped_empty"] + c["dropped_too_short"] + c["dropped_duplicate"] + c["near_duplicate"]
               + sum(c["quality"].values()) + c["blocklist"]["dropped"])
    assert c["kept"] == 1 and c["kept"] + dropped == c["documents_in"] == len(texts)
    assert all(count == 1 for count in (c["blocklist"]["dropped"], c["dropped_empty"], c["dropped_too_short"],
                                        c["quality"]["min_words"], c["dropped_duplicate"], c["near_duplicate"]))
    assert set(c) == set(COUNT_KEYS) and set(cleaner.removed) == set(REMOVED_REASONS)
    assert json.loads(json.dumps(c)) == c


def test_get_config_names_every_step(tmp_path):
    config = Cleaner(blocklist=blocklist(tmp_path), near_duplicates=NearDuplicateFilter()).get_config()
    assert config["redact_personal_data"] is True and config["quality"] is None
    assert config["blocklist"]["action"] == "drop" and config["near_duplicates"]["threshold"] == 0.8
    assert config["max_removed_samples"] == 20
    json.dumps(config)


def test_disabled_cleaner_runs_no_step(tmp_path):
    cleaner = Cleaner(enabled=False, blocklist=blocklist(tmp_path), quality=QualityFilter())
    assert cleaner.clean("ferry to 8.8.8.8") == "ferry to 8.8.8.8"
    assert not any(cleaner.removed.values())
