import io

import pytest

from tfllm.data.cleaning import Cleaner
from tfllm.data.corpus import prepare_corpus
from tfllm.data.read_progress import ReadProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def read(progress, clock, documents, seconds_each, bytes_each=1_000_000):
    for i in range(1, documents + 1):
        clock.now += seconds_each
        progress(i, i * bytes_each)


def test_a_file_gets_whole_lines_every_n_seconds_and_a_summary():
    stream, clock = io.StringIO(), Clock()
    progress = ReadProgress(stream=stream, every_seconds=10.0, clock=clock)
    progress(1, 1_000_000)  # the clock starts at the first document
    read_more = [(i, i * 1_000_000) for i in range(2, 26)]
    for documents, num_bytes in read_more:
        clock.now += 1.0
        progress(documents, num_bytes)
    progress.finish()
    assert stream.getvalue() == (
        "Read 11 documents (11.0 MB) in 10.0 s: 1 documents/s, 1.10 MB/s\n"
        "Read 21 documents (21.0 MB) in 20.0 s: 1 documents/s, 1.05 MB/s\n"
        "Read 25 documents (25.0 MB) in 24.0 s: 1 documents/s, 1.04 MB/s\n"
    )


def test_every_documents_adds_lines_between_the_timed_ones():
    stream, clock = io.StringIO(), Clock()
    progress = ReadProgress(stream=stream, every_seconds=60.0, every_documents=4, clock=clock)
    read(progress, clock, 9, seconds_each=0.5)
    assert [line.split(" (")[0] for line in stream.getvalue().splitlines()] == ["Read 4 documents", "Read 8 documents"]


def test_a_terminal_gets_one_redrawn_line_then_the_summary_on_it():
    stream, clock = Terminal(), Clock()
    progress = ReadProgress(stream=stream, redraw_seconds=1.0, clock=clock)
    read(progress, clock, 4, seconds_each=0.5)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    drawn = text.split("\r")[1:]
    assert [line.split(" (")[0] for line in drawn] == ["Read 3 documents", "Read 4 documents"]
    assert drawn[-1].rstrip() == "Read 4 documents (4.0 MB) in 1.5 s: 3 documents/s, 2.67 MB/s"


def test_nothing_read_prints_nothing():
    stream = io.StringIO()
    ReadProgress(stream=stream).finish()
    assert stream.getvalue() == ""


def test_bad_intervals_are_refused():
    with pytest.raises(ValueError, match="every_seconds"):
        ReadProgress(every_seconds=0)
    with pytest.raises(ValueError, match="every_documents"):
        ReadProgress(every_documents=-1)


def test_prepare_corpus_reports_documents_and_utf8_bytes_of_both_corpora(tmp_path):
    train = ["first document, long enough to keep", "second: caf\u00e9 \u4e2d\u6587 and more text here"]
    val = ["a validation document that is long enough"]
    (tmp_path / "train.txt").write_text("\n\n".join(train), encoding="utf-8")
    (tmp_path / "val.txt").write_text(val[0], encoding="utf-8")
    calls = []
    prepare_corpus(str(tmp_path / "train.txt"), str(tmp_path / "corpus"), val_path=str(tmp_path / "val.txt"),
                   cleaner=Cleaner(), blank_line_documents=True, progress=lambda *counts: calls.append(counts))
    sizes = [len(text.encode("utf-8")) for text in train + val]
    assert calls == [(1, sizes[0]), (2, sizes[0] + sizes[1]), (3, sum(sizes))]
