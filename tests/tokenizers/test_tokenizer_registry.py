"""train_tokenizer and load_tokenizer (tfllm/tokenizers/tokenizer_registry.py)."""

import itertools
import json
import os
import re

import pytest

from tfllm.errors import UserError
from tfllm.tokenizers import KINDS
from tfllm.tokenizers import BytePairTokenizer
from tfllm.tokenizers import CharTokenizer
from tfllm.tokenizers import SentencePieceTokenizer
from tfllm.tokenizers import WordPieceTokenizer
from tfllm.tokenizers import load_tokenizer
from tfllm.tokenizers import train_tokenizer

CLASSES = {
    "char": CharTokenizer,
    "wordpiece": WordPieceTokenizer,
    "bpe": BytePairTokenizer,
    "sentencepiece": SentencePieceTokenizer,
}
# The smallest vocab_size each kind accepts before looking at the text.
MINIMUMS = {"char": 5, "wordpiece": 6, "bpe": 260, "sentencepiece": 261}


@pytest.mark.parametrize("kind", KINDS)
def test_kind_names_pick_the_class(trained, kind):
    assert type(trained[kind]) is CLASSES[kind] and trained[kind].kind == kind


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(UserError, match=r"data\.tokenizer='bytes'.*char, wordpiece, bpe, sentencepiece"):
        train_tokenizer("bytes", ["abc"], 100)


@pytest.mark.parametrize("kind", KINDS)
def test_too_small_vocab_size_names_the_key_and_the_minimum(kind):
    minimum = MINIMUMS[kind]
    with pytest.raises(UserError, match=rf"data\.vocab_size={minimum - 1} .*at least {minimum}"):
        train_tokenizer(kind, ["abc"], minimum - 1)
    with pytest.raises(UserError, match=r"data\.vocab_size must be an integer"):
        train_tokenizer(kind, ["abc"], "300")


@pytest.mark.parametrize("kind", KINDS)
def test_empty_text_is_a_user_error(kind):
    with pytest.raises(UserError, match="training text is empty"):
        train_tokenizer(kind, iter(["", ""]), 1000)


def test_reads_at_most_max_chars_of_an_endless_corpus():
    # "a" fills the first 7 characters; the "b" of the 8th is never read.
    tokenizer = train_tokenizer("char", itertools.cycle(["aaaa", "aaab"]), 10, max_chars=7)
    assert tokenizer.code_points == [ord("a")]
    tokenizer = train_tokenizer("bpe", itertools.cycle(["hello world "]), 300, max_chars=1000)
    assert tokenizer.vocabulary_size <= 300


def test_load_missing_directory_names_it(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(UserError, match=f"{re.escape(missing)} does not exist"):
        load_tokenizer(missing)
    with pytest.raises(UserError, match=f"{re.escape(str(tmp_path))} has no tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_load_corrupt_directory_names_it(trained, tmp_path):
    directory = tmp_path / "bpe"
    trained["bpe"].save(str(directory))
    os.remove(directory / "merges.txt")
    with pytest.raises(UserError, match=f"{re.escape(str(directory))} is corrupt.*merges.txt"):
        load_tokenizer(str(directory))

    trained["char"].save(str(directory))
    config_path = directory / "tokenizer.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "vocabulary_size": 7}))
    with pytest.raises(UserError, match=f"{re.escape(str(directory))} is corrupt.*vocabulary_size=7"):
        load_tokenizer(str(directory))
    config_path.write_text(json.dumps({**config, "kind": "morse"}))
    with pytest.raises(UserError, match=f"{re.escape(str(directory))} is corrupt.*'morse'"):
        load_tokenizer(str(directory))
    config_path.write_text("{not json")
    with pytest.raises(UserError, match=f"{re.escape(str(directory))} is corrupt"):
        load_tokenizer(str(directory))
    (directory / "code_points.json").write_text("[97, 97]")
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match=f"{re.escape(str(directory))} is corrupt.*distinct"):
        load_tokenizer(str(directory))
