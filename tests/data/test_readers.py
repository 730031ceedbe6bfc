import json

import pytest

from tfllm.data.readers import iter_documents
from tfllm.errors import UserError


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return str(path)


def read(path, **kwargs):
    return [(d.text, d.source) for d in iter_documents(str(path), **kwargs)]


def test_text_file_is_one_document(tmp_path):
    path = write(tmp_path / "a.txt", "first line\n\nsecond paragraph\n")
    assert read(path) == [("first line\n\nsecond paragraph\n", path)]


def test_blank_line_documents_split_on_blank_lines(tmp_path):
    path = write(tmp_path / "a.txt", "one\ntwo\n\n\n  \nthree\r\n\r\nfour\n    indented")
    assert read(path, blank_line_documents=True) == [
        ("one\ntwo", f"{path}:1"),
        ("three", f"{path}:6"),
        ("four\n    indented", f"{path}:8"),
    ]


def test_jsonl_one_document_per_line(tmp_path):
    records = [{"text": "alpha", "id": 1}, {"text": "β\ngamma"}]
    path = write(tmp_path / "a.jsonl", json.dumps(records[0]) + "\n\n" + json.dumps(records[1]) + "\n")
    assert read(path) == [("alpha", f"{path}:1"), ("β\ngamma", f"{path}:3")]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"text": "unterminated', "not valid JSON"),
        ('{"body": "x"}', 'no "text" field'),
        ('{"text": 3}', 'has a "text" number'),
        ('{"text": null}', 'has a "text" null'),
        ('{"text": {"a": 1}}', 'has a "text" object'),
        ('["text"]', "is a JSON array"),
        ('{"text": "\\ud800"}', "unpaired surrogate"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path, bad_line, message):
    path = write(tmp_path / "a.jsonl", '{"text": "fine"}\n' + bad_line + "\n")
    with pytest.raises(UserError, match=message) as error:
        read(path)
    assert f"{path}:2 " in str(error.value)


def test_directory_reads_corpus_files_recursively_in_sorted_order(tmp_path):
    write(tmp_path / "b" / "c.md", "c")
    write(tmp_path / "b" / "d.jsonl", '{"text": "d"}\n')
    write(tmp_path / "a.txt", "a")
    write(tmp_path / "e.csv", "ignored")
    write(tmp_path / ".git" / "f.txt", "hidden")
    assert [text for text, _ in read(tmp_path)] == ["a", "c", "d"]


def test_glob_reads_matching_files(tmp_path):
    write(tmp_path / "x2.txt", "two")
    write(tmp_path / "x1.txt", "one")
    write(tmp_path / "y.txt", "other")
    assert [text for text, _ in read(tmp_path / "x*.txt")] == ["one", "two"]


def test_builtin_python_docs(tmp_path):
    documents = read("builtin:python-docs")
    assert 60 <= len(documents) <= 200
    assert all(text.strip() for text, _ in documents)


@pytest.mark.parametrize(
    "name, content, kwargs, offset",
    [
        ("a.txt", b"abc\xffdef", {}, 3),
        ("a.txt", b"ok\n\nab\xfe\n", {"blank_line_documents": True}, 6),
        ("a.jsonl", b'{"text": "a"}\n{"text": "\xc3"}\n', {}, 24),
    ],
)
def test_invalid_utf8_names_file_and_byte_offset(tmp_path, name, content, kwargs, offset):
    path = write(tmp_path / name, content)
    with pytest.raises(UserError, match=f"{path} is not valid UTF-8 at byte offset {offset}\\. Re-encode"):
        read(path, **kwargs)


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    path = write(tmp_path / "a.jsonl", b'\xef\xbb\xbf{"text": "x"}\n')
    assert read(path) == [("x", f"{path}:1")]


def test_binary_file_is_refused(tmp_path):
    path = write(tmp_path / "a.txt", b"PK\x03\x04\x00\x00data")
    with pytest.raises(UserError, match=f"{path} looks binary \\(NUL byte at byte offset 4\\)"):
        read(path)


@pytest.mark.parametrize("relative", ["missing.txt", "missing/*.txt"])
def test_missing_path_or_empty_glob_names_the_path(tmp_path, relative):
    with pytest.raises(UserError, match="missing"):
        read(tmp_path / relative)


def test_directory_without_corpus_files_names_the_path(tmp_path):
    write(tmp_path / "data" / "notes.csv", "a,b")
    with pytest.raises(UserError, match=f"{tmp_path / 'data'}.* contains no"):
        read(tmp_path / "data")
