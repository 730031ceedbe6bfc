import os

import pytest

from tfllm.config import load_config
from tfllm.data.blocklist import MASK, Blocklist, read_phrases
from tfllm.errors import UserError
from tfllm.trainers.prepare_data import make_cleaner


def blocklist_file(tmp_path, text="# words nobody wants\n\nass\nSpam Eggs\n  ham  \n"):
    path = tmp_path / "blocklist.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_file_format_comments_blank_lines_case_and_spacing(tmp_path):
    assert read_phrases(blocklist_file(tmp_path)) == ["ass", "ham", "spam eggs"]


@pytest.mark.parametrize(
    "text, found",
    [
        ("What an ass.", "ass"),
        ("ASS!", "ASS"),
        ("spam   eggs\nand SPAM\teggs", "spam   eggs"),
        ("(ham)", "ham"),
        # Whole words only: these contain a blocked word inside another.
        ("class Assistant: passes assertions", None),
        ("hamster and shame", None),
        ("spam, eggs", None),
        ("ass_1 and ass2", None),
    ],
)
def test_drop_matches_whole_words_case_insensitively(tmp_path, text, found):
    assert Blocklist(blocklist_file(tmp_path)).search(text) == found


def test_mask_replaces_each_match_and_counts_it(tmp_path):
    blocklist = Blocklist(blocklist_file(tmp_path), action="mask")
    assert blocklist.mask("A class of ass, Ham and spam\n eggs.") == (f"A class of {MASK}, {MASK} and {MASK}.", 3)
    assert blocklist.mask("nothing to hide") == ("nothing to hide", 0)


def test_the_longest_phrase_wins_and_falls_back_to_a_shorter_one(tmp_path):
    blocklist = Blocklist(blocklist_file(tmp_path, "foo\nfoo bar\nfoo bar baz\n"), action="mask")
    assert blocklist.mask("foo bar baz. foo bar bazooka. foo barn.") == (f"{MASK}. {MASK} bazooka. {MASK} barn.", 3)


def test_characters_that_lowercase_to_two_still_match(tmp_path):
    # "İ" lowercases to two characters, which shifts positions in the lowercased text.
    blocklist = Blocklist(blocklist_file(tmp_path, "istanbul\nham\n"), action="mask")
    assert blocklist.mask("İİ ham Ham") == (f"İİ {MASK} {MASK}", 2)


def test_regex_characters_in_phrases_are_literal(tmp_path):
    blocklist = Blocklist(blocklist_file(tmp_path, "c++\na.b\n"))
    assert blocklist.search("I like c++ a lot") == "c++"
    assert blocklist.search("axb and c+") is None


def test_a_missing_file_is_a_user_error_naming_the_key_and_the_file(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(UserError) as error:
        Blocklist(missing)
    message = str(error.value)
    assert "data.blocklist" in message and missing in message and "No such file" in message
    assert message.splitlines() == [message]


@pytest.mark.parametrize("content", ["# only comments\n\n", b"\xff\xfe not utf-8"])
def test_an_empty_or_unreadable_file_is_a_user_error(tmp_path, content):
    path = tmp_path / "blocklist.txt"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(UserError, match="data.blocklist.*blocklist.txt"):
        Blocklist(str(path))


def test_a_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="data.blocklist"):
        Blocklist(str(tmp_path))


def test_make_cleaner_reads_the_blocklist_of_the_config(tmp_path):
    path = blocklist_file(tmp_path)
    cleaner = make_cleaner(load_config(None, [f"data.blocklist={path}", "data.blocklist_action=mask"]).data)
    assert cleaner.get_config()["blocklist"] == {"path": path, "action": "mask"}
    missing = os.path.join(str(tmp_path), "missing.txt")
    with pytest.raises(UserError, match="data.blocklist.*missing.txt"):
        make_cleaner(load_config(None, [f"data.blocklist={missing}"]).data)


def test_bad_action_is_refused(tmp_path):
    with pytest.raises(ValueError, match="action must be one of"):
        Blocklist(blocklist_file(tmp_path), action="censor")
    with pytest.raises(UserError, match="data.blocklist_action='censor' is invalid: use drop or mask"):
        load_config(None, ["data.blocklist_action=censor"])
