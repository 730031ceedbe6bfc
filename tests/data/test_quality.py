import pytest

from tfllm.data.quality import RULES, QualityFilter

PROSE = (
    "The river rises in the hills to the north of the town and reaches the sea after a journey of "
    "about forty miles. For most of the year it is slow and brown, and children fish from the old "
    "stone bridge near the market. In early spring, when the snow melts on the high ground, the "
    "water can climb over the lower meadows within a single night.\n"
    "Farmers along the valley have learned to move their animals to higher fields as soon as the "
    "first warning comes. The town council built a new flood wall ten years ago, and since then the "
    "streets near the church have stayed dry, although the cellars still fill now and then."
)


def words(n, word="word"):
    return " ".join([word] * n)


def repeated(ngram, times):
    """PROSE, then `ngram` `times` times, each followed by another word of PROSE."""
    return PROSE + " " + " ".join(f"{ngram} {word}" for word in PROSE.split()[:times])


def test_normal_prose_passes_every_rule():
    assert QualityFilter().failed_rule(PROSE) is None


@pytest.mark.parametrize(
    "rule, text",
    [
        ("min_words", "A perfectly fine sentence, but far too short to keep."),
        # Mean word length 2: "an", "is", "of"...
        ("mean_word_length", " ".join(["an is of to it we"] * 12) + "."),
        ("mean_word_length", " ".join(["extraordinarily uncharacteristically"] * 30) + "."),
        # 9 hashtags among the 71 words of a paragraph.
        ("symbol_ratio", PROSE.split("\n")[0] + " #river #town #flood #spring #bridge #market #meadow #snow #hills"),
        # Ten lines, one of which ends in punctuation.
        ("punctuated_lines", "\n".join(f"menu item number {i} of the site navigation" for i in range(9)) + "\nEnd."),
        # Half of the lines repeat the first.
        ("duplicate_lines", "\n".join([PROSE.split("\n")[0]] + [f"Line {i} says something new." for i in range(6)]
                                      + ["Click here to subscribe."] * 7)),
        # The repeated n-gram covers 24%, 22% and 20% of the characters; its shorter parts cover
        # less than their own limits (2-grams 20%, 3-grams 18%).
        ("top_2gram", repeated("click here", 20)),
        ("top_3gram", repeated("buy cheap pills", 12)),
        ("top_4gram", repeated("see our great deals", 8)),
    ],
)
def test_each_rule_fires_on_a_crafted_document(rule, text):
    assert QualityFilter().failed_rule(text) == rule


def test_rules_are_checked_in_order_and_named():
    assert RULES[0] == "min_words" and len(set(RULES)) == len(RULES) == 8
    # Too short and full of symbols: the first rule in RULES is the one named.
    assert QualityFilter().failed_rule("# # # ...") == "min_words"


def test_thresholds_are_settings():
    short = "Five words are enough here."
    assert QualityFilter(min_words=5).failed_rule(short) is None
    assert QualityFilter(min_words=6).failed_rule(short) == "min_words"
    no_full_stops = "\n".join(words(12) for _ in range(5))
    assert QualityFilter(min_words=0, min_punctuated_lines=0.0, max_duplicate_lines=1.0,
                         max_top_2gram=1.0, max_top_3gram=1.0, max_top_4gram=1.0).failed_rule(no_full_stops) is None


def test_python_code_fails_as_the_config_key_doc_says():
    code = "\n".join(f"def f{i}(x):\n    # add {i}\n    return x + {i}\n" for i in range(20))
    assert QualityFilter().failed_rule(code) is not None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_duplicate_lines": 1.5}, "max_duplicate_lines must be a fraction"),
        ({"min_punctuated_lines": -0.1}, "min_punctuated_lines must be a fraction"),
        ({"min_words": -1}, "must be non-negative"),
        ({"min_mean_word_length": 5.0, "max_mean_word_length": 4.0}, "max_mean_word_length at least"),
    ],
)
def test_bad_thresholds_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QualityFilter(**kwargs)


def test_get_config_round_trips():
    quality = QualityFilter(min_words=10, max_top_2gram=0.3)
    assert QualityFilter(**quality.get_config()).get_config() == quality.get_config()
