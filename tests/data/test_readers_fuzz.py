"""Property-based fuzzing of corpus reading, cleaning and preparation.

Whatever bytes sit in a corpus file, reading it yields `str` documents or raises a one-line
`UserError` naming the file; any other exception would reach the command line as a traceback.
"""

import collections
import json
import os
import tempfile
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfllm.data.cleaning import COUNT_KEYS, Cleaner
from tfllm.data.corpus import iter_texts, prepare_corpus
from tfllm.data.readers import iter_documents
from tfllm.errors import UserError


def fuzz(max_examples):
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


SWITCHES = ("enabled", "normalize_unicode", "drop_control_chars", "normalize_whitespace", "deduplicate")
# Characters where cleaning and reading have edge cases: line breaks of every kind, controls, NUL,
# Unicode whitespace, combining marks and Hangul jamo that NFC composes, a byte order mark.
TRICKY = list(" \t\n\r\x00\x0b\x0c\x1c\x1f\x7f\x85\xa0\u2000\u2028\u2029\u3000\ufeff") + [
    "e", "\u0301", "\u0327", "\u0323", "\u212b", "\u1100", "\u1161", "\u11a8", "\uac00", '"', "{", "\\",
]
# Every Unicode scalar value: the readers never produce lone surrogates (they are not valid UTF-8).
texts = st.text(alphabet=st.sampled_from(TRICKY) | st.characters(codec="utf-8"), max_size=60)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=8,
)
extra_fields = st.dictionaries(st.text(max_size=4), json_values, max_size=2)
jsonl_lines = st.one_of(
    st.builds(lambda text, extra: json.dumps({**extra, "text": text}), texts, extra_fields),
    st.builds(lambda value, ascii_: json.dumps(value, ensure_ascii=ascii_), json_values, st.booleans()),
    st.builds(lambda value: json.dumps({"text": value}), json_values),
    texts,
    st.sampled_from([
        "", "   ", '{"text": "\\ud800"}', '{"text": "a"', "[" * 3000, '{"text": ' + "9" * 5000 + "}",
        '{"text": "' + "x" * 100_000 + '"}', "NaN", '{"text": "a", "text": 3}',
    ]),
)


@st.composite
def corrupted(draw, content):
    """UTF-8 bytes of `content`, sometimes with a BOM, a NUL or an invalid UTF-8 byte spliced in."""
    data = draw(content).encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(data)))
        # NUL, a lone continuation byte, truncated sequences, an encoded surrogate.
        bad = draw(st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82"]))
        data = data[:at] + bad + data[at:]
    return data


file_contents = st.one_of(
    st.binary(max_size=200),
    corrupted(texts),
    corrupted(st.builds(str.join, st.sampled_from(["\n", "\r\n"]), st.lists(jsonl_lines, max_size=5))),
    corrupted(st.sampled_from(["", "\n\n\n", "x" * 200_000, ("word " * 20_000 + "\n") * 3])),
)
file_names = st.sampled_from(["a.txt", "b.jsonl", "c.md", "d.log"])


def write_files(directory, files):
    paths = []
    for name, data in files:
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def read_all(path, paths, blank_line_documents):
    """The documents at `path`, or [] after a `UserError` that is one line and names one of `paths`."""
    try:
        documents = list(iter_documents(path, blank_line_documents))
    except Exception as error:  # noqa: BLE001 - the property is about which exceptions escape.
        assert isinstance(error, UserError), f"{type(error).__name__}: {error}"
        message = str(error)
        # splitlines() also breaks at \r, \x0b, \x1c, \x85, \u2028...
        assert message.strip() and message.splitlines() == [message]
        assert any(p in message for p in paths), message
        return []
    for document in documents:
        assert type(document.text) is str and type(document.source) is str
        assert any(document.source.startswith(p) for p in paths)
        # Valid Unicode, so that every later stage can encode it.
        document.text.encode("utf-8")
    return documents


@fuzz(150)
@given(file_names, file_contents, st.booleans())
def test_any_file_reads_as_documents_or_user_error(name, data, blank_line_documents):
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = write_files(tmp, [(name, data)])
        read_all(path, [path], blank_line_documents)


@fuzz(60)
@given(st.dictionaries(file_names, file_contents, max_size=3), st.booleans())
def test_any_directory_reads_as_documents_or_user_error(files, blank_line_documents):
    with tempfile.TemporaryDirectory() as tmp:
        paths = [p for p in write_files(tmp, sorted(files.items())) if not p.endswith(".log")]
        # A directory without .txt, .md or .jsonl files is an error that names the directory itself.
        read_all(tmp, paths or [tmp], blank_line_documents)


@fuzz(100)
@given(st.lists(jsonl_lines, min_size=1, max_size=4), st.sampled_from(["\n", "\r\n"]))
def test_any_jsonl_lines_read_as_documents_or_user_error(lines, line_end):
    content = line_end.join(lines)
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = write_files(tmp, [("a.jsonl", content.encode("utf-8"))])
        documents = read_all(path, [path], blank_line_documents=False)
    # Each document is the "text" of one line of the file, named by its line number.
    file_lines = content.split("\n")
    for document in documents:
        line_number = int(document.source.rsplit(":", 1)[1])
        assert json.loads(file_lines[line_number - 1])["text"] == document.text


@fuzz(150)
@given(texts, st.booleans())
def test_text_file_is_its_text(text, bom):
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = write_files(tmp, [("a.txt", (("\ufeff" if bom else "") + text).encode("utf-8"))])
        documents = read_all(path, [path], blank_line_documents=False)
    if "\0" in text:
        assert documents == []  # refused as binary
    else:
        # Exactly one leading byte order mark is the encoding's, not the text's.
        assert [d.text for d in documents] == [text if bom else text.removeprefix("\ufeff")]


@fuzz(150)
@given(texts)
def test_blank_line_blocks_keep_every_visible_character(text):
    text = text.replace("\0", "")
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = write_files(tmp, [("a.txt", text.encode("utf-8"))])
        documents = read_all(path, [path], blank_line_documents=True)
    # What the reader sees: a leading U+FEFF is written as the UTF-8 byte order mark.
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    visible = [c for c in text if not c.isspace()]
    assert [c for d in documents for c in d.text if not c.isspace()] == visible
    for document in documents:
        first_line = int(document.source.rsplit(":", 1)[1])
        assert lines[first_line - 1].startswith(document.text.split("\n")[0])
        # A blank line ends a block, so none is left inside one.
        assert all(line.strip() for line in document.text.split("\n"))


@fuzz(150)
@given(st.lists(texts, max_size=5), st.booleans(), st.sampled_from(["\n", "\r\n", "\n\n"]))
def test_jsonl_records_round_trip(records, ensure_ascii, line_end):
    content = line_end.join(json.dumps({"text": t}, ensure_ascii=ensure_ascii) for t in records)
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = write_files(tmp, [("a.jsonl", content.encode("utf-8"))])
        documents = read_all(path, [path], blank_line_documents=False)
    assert [d.text for d in documents] == records


cleaner_settings = st.fixed_dictionaries({name: st.booleans() for name in SWITCHES})


@fuzz(200)
@given(texts, cleaner_settings, st.integers(0, 8))
def test_cleaner_never_crashes_and_cleaning_twice_changes_nothing(text, switches, min_chars):
    cleaner = Cleaner(**switches, min_chars=min_chars)
    once = cleaner.clean(text)
    counts = cleaner.counts
    assert set(counts) == set(COUNT_KEYS)
    dropped = counts["dropped_empty"] + counts["dropped_too_short"] + counts["dropped_duplicate"]
    assert counts["kept"] + dropped == counts["documents_in"] == 1
    if once is None:
        # A cleaner's first document is never a duplicate: only the length filter drops it.
        assert switches["enabled"] and counts["dropped_empty"] + counts["dropped_too_short"] == 1
        return
    # The Cleaner documents this: each step leaves nothing for a second pass to change.
    assert Cleaner(**switches, min_chars=min_chars).clean(once) == once
    if not switches["enabled"]:
        assert once == text
        return
    if switches["normalize_unicode"]:
        assert unicodedata.is_normalized("NFC", once)
    if switches["drop_control_chars"]:
        assert all(c in "\n\t" or unicodedata.category(c) != "Cc" for c in once)
    if switches["normalize_whitespace"]:
        assert "\r" not in once and "\n\n\n\n" not in once and once == once.strip("\n")
        assert all(line == line.rstrip() for line in once.split("\n"))
    assert len(once) >= min_chars


@fuzz(40)
@given(st.lists(texts, min_size=1, max_size=6), st.sampled_from(["a.jsonl", "a.txt"]), st.floats(0.2, 0.8))
def test_prepared_corpus_holds_exactly_the_cleaned_documents(records, name, val_fraction):
    cleaner_kwargs = {"min_chars": 2}
    with tempfile.TemporaryDirectory() as tmp:
        content = "\n".join(json.dumps({"text": t}) for t in records) if name == "a.jsonl" else "\n\n".join(records)
        (path,) = write_files(tmp, [(name, content.encode("utf-8"))])
        # The reference: the same reader and a fresh cleaner of the same settings, no TensorFlow.
        reference = Cleaner(**cleaner_kwargs)
        expected = [reference.clean(d.text) for d in read_all(path, [path], blank_line_documents=True)]
        expected = collections.Counter(t for t in expected if t is not None)
        out_dir = os.path.join(tmp, "out")
        try:
            stats = prepare_corpus(
                path, out_dir, val_fraction=val_fraction, cleaner=Cleaner(**cleaner_kwargs),
                blank_line_documents=True,
            )
        except Exception as error:  # noqa: BLE001 - the property is about which exceptions escape.
            assert isinstance(error, UserError), f"{type(error).__name__}: {error}"
            assert str(error).splitlines() == [str(error)] and path in str(error)
            assert not os.path.exists(out_dir)  # nothing half-written is left behind
            return
        prepared = collections.Counter(t for split in ("train", "val") for t in iter_texts(out_dir, split))
    assert prepared == expected
    assert stats.documents["train"] + stats.documents["val"] == sum(expected.values())
    assert stats.documents["train"] >= 1 and stats.documents["val"] >= 1
