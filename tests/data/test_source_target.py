"""Source -> target pairs: JSON Lines and tab-separated files read alike, every mistake names its
line, and the seq2seq data counts the sources and targets its pipeline cuts."""

import codecs
import json
import logging

import pytest

from tfllm import config as config_lib
from tfllm.data.example import Example
from tfllm.data.source_target import read_source_target
from tfllm.data.training_data import Examples, count_cut, seq2seq_data
from tfllm.errors import UserError
from tfllm.tokenizers import train_tokenizer

# Quotes, backslashes, spaces at the ends and non-ASCII text pass through a .tsv file verbatim.
PAIRS = [("Hi.", "Salut."), ('He said "no".', "Il a dit « non »."), ("C:\\temp ", " café")]


def write(path, raw: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return str(path)


def jsonl(pairs):
    return "".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in pairs).encode()


def tsv(pairs):
    return "".join(f"{s}\t{t}\n" for s, t in pairs).encode()


def test_jsonl_and_tsv_give_the_same_examples(tmp_path):
    # A blank line is skipped but counted; the .tsv file opens with a byte order mark and ends in CRLF.
    from_jsonl = read_source_target(write(tmp_path / "a.jsonl", jsonl(PAIRS[:1]) + b"\n" + jsonl(PAIRS[1:])))
    crlf = tsv(PAIRS[1:]).replace(b"\n", b"\r\n")
    tsv_path = write(tmp_path / "a.tsv", codecs.BOM_UTF8 + tsv(PAIRS[:1]) + b"\n" + crlf)
    from_tsv = read_source_target(tsv_path)
    assert from_jsonl == from_tsv == PAIRS
    assert [e.source for e in from_tsv] == [f"{tsv_path}:1", f"{tsv_path}:3", f"{tsv_path}:4"]
    assert [e.source.rsplit(":", 1)[1] for e in from_jsonl] == ["1", "3", "4"]
    assert all(isinstance(e, Example) and e.group is None for e in from_tsv)


def test_a_directory_or_glob_reads_both_kinds_in_sorted_order(tmp_path):
    write(tmp_path / "d" / "b.tsv", tsv(PAIRS[1:]))
    write(tmp_path / "d" / "a.jsonl", jsonl(PAIRS[:1]))
    write(tmp_path / "d" / "notes.txt", b"not pairs")
    write(tmp_path / "d" / ".hidden.tsv", b"no tab here\n")
    assert read_source_target(str(tmp_path / "d")) == PAIRS
    assert read_source_target(str(tmp_path / "d" / "*")) == PAIRS
    assert read_source_target(str(tmp_path / "d" / "*.tsv")) == PAIRS[1:]


@pytest.mark.parametrize(
    "name, raw, line, message",
    [
        ("p.jsonl", jsonl(PAIRS) + b'{"source": "a"}\n', 4, 'no "target" key'),
        ("p.jsonl", b'{"target": "a"}\n', 1, 'no "source" key'),
        ("p.jsonl", jsonl(PAIRS[:1]) + b'{"source": "a", "target": 3}\n', 2, '"target" is an integer 3'),
        ("p.jsonl", b'{"source": null, "target": "a"}\n', 1, '"source" is null'),
        ("p.jsonl", b'{"source": "a", "target": "b"\n', 1, "not valid JSON"),
        ("p.jsonl", jsonl(PAIRS[:1]) + b'{"source": "caf\xe9", "target": "b"}\n', 2, "not valid UTF-8 at byte 15"),
        ("p.tsv", tsv(PAIRS) + b"\nno tab\n", 5, "no tab;"),
        ("p.tsv", b"Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org\n", 1, "2 tabs;"),
        ("p.tsv", b"a\tb\n\tx\ty\tz\n", 2, "3 tabs;"),
        ("p.tsv", b"a\tb\ncaf\xe9\tb\n", 2, "not valid UTF-8 at byte 3"),
        ("p.tsv", b"a\tb\n\x00\tb\n", 2, "looks binary"),
    ],
)
def test_each_mistake_names_the_file_and_line(tmp_path, name, raw, line, message):
    path = write(tmp_path / name, raw)
    with pytest.raises(UserError) as error:
        read_source_target(path)
    assert f"{path}:{line}:" in str(error.value)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_line_of_three_columns_says_what_to_do(tmp_path):
    path = write(tmp_path / "fra.tsv", b"Go.\tVa !\tCC-BY 2.0\n")
    with pytest.raises(UserError, match="must be a source, one tab and a target .remove any further column"):
        read_source_target(path)


@pytest.mark.parametrize("name, raw, shape", [("e.jsonl", b"", '{"source": "...", "target": "..."}'),
                                              ("e.tsv", b"\n  \n", "the source, a tab and the target")])
def test_an_empty_file_is_an_error_naming_it(tmp_path, name, raw, shape):
    write(tmp_path / "a.tsv", tsv(PAIRS))
    path = write(tmp_path / name, raw)
    for given in (path, str(tmp_path)):  # also beside a file of pairs: an empty file is a failed export
        with pytest.raises(UserError, match=f"{path} holds no examples") as error:
            read_source_target(given)
        assert shape in str(error.value)


def test_paths_without_pairs_are_errors(tmp_path):
    write(tmp_path / "d" / "notes.txt", b"text")
    with pytest.raises(UserError, match="holds no .jsonl or .tsv files"):
        read_source_target(str(tmp_path / "d"))
    with pytest.raises(UserError, match="nope.tsv does not exist; give a .jsonl or .tsv file"):
        read_source_target(str(tmp_path / "nope.tsv"))
    with pytest.raises(UserError, match="not a built-in seq2seq set; use one of: builtin:python-docstrings"):
        read_source_target("builtin:python-docs-topics")


# A character tokenizer: one token per character. A source is cut beyond source_len - 1 = 5
# characters (the encoder adds end-of-text), a target beyond seq_len - 1 = 4 (the decoder predicts
# its end-of-text too). Sources: 3, 5 (kept, the limit), 6, 10 characters -> 2 cut.
# Targets: 2, 4 (kept, the limit), 5, 0 characters -> 1 cut.
SOURCE_LEN, SEQ_LEN = 6, 5
CUT_PAIRS = [("abc", "ab"), ("abcde", "abcd"), ("abcdef", "abcde"), ("a" * 10, "")]


@pytest.fixture(scope="module")
def char_tokenizer():
    return train_tokenizer("char", ["abcdef"], 64)


@pytest.mark.parametrize("batch_size", [1, 3, 1024])
def test_count_cut_matches_a_hand_count(char_tokenizer, batch_size):
    assert count_cut(CUT_PAIRS, char_tokenizer, SOURCE_LEN, SEQ_LEN, batch_size=batch_size) == (2, 1)
    assert count_cut(CUT_PAIRS, char_tokenizer, SOURCE_LEN + 5, SEQ_LEN + 1, batch_size=batch_size) == (0, 0)


def seq2seq_config(source_len, seq_len):
    return config_lib.load_config(None, ["model.task=seq2seq", f"model.source_len={source_len}",
                                         f"model.seq_len={seq_len}", "train.batch_size=2"])


def test_seq2seq_data_warns_once_per_side_with_the_counts(char_tokenizer, one_device_strategy, caplog):
    examples = Examples([Example(s, t, f"p.tsv:{i + 1}") for i, (s, t) in enumerate(CUT_PAIRS)], CUT_PAIRS[:2], None)
    with caplog.at_level(logging.WARNING, logger="tfllm.data.training_data"):
        seq2seq_data(seq2seq_config(SOURCE_LEN, SEQ_LEN), examples, char_tokenizer, one_device_strategy)
    assert [record.getMessage() for record in caplog.records] == [
        "2 of 4 training sources do not fit the 6-token source length (model.source_len) with their end-of-text "
        "token and are cut; raise model.source_len to keep them",
        "1 of 4 training targets do not fit model.seq_len=5 tokens with their end-of-text token and are cut; "
        "raise model.seq_len to keep them",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfllm.data.training_data"):
        seq2seq_data(seq2seq_config(11, 6), examples, char_tokenizer, one_device_strategy)
    assert caplog.records == []
