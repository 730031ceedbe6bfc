"""Prepares a raw corpus: read, clean, split by document, write TFRecord shards.

`prepare_corpus` streams, so memory stays flat whatever the corpus size (the
deduplication digests aside, about 100 bytes per document). Each shard record
is one document's UTF-8 text, serialized as a plain string rather than a
`tf.train.Example`: there is a single field, and `TFRecordDataset` then yields
the text with no parsing step.
"""

import hashlib
import os
from typing import Callable, Iterator, Optional

import tensorflow as tf

from tfllm.data.cleaning import Cleaner
from tfllm.data.corpus_stats import SPLITS, STATS_FILE, CorpusStats
from tfllm.data.readers import iter_documents
from tfllm.errors import UserError
from tfllm.files import staging_directory


def prepare_corpus(
    path: str,
    out_dir: str,
    *,
    val_path: Optional[str] = None,
    val_fraction: float = 0.05,
    seed: int = 0,
    cleaner: Cleaner,
    blank_line_documents: bool = False,
    docs_per_shard: int = 4096,
    progress: Optional[Callable[[int, int], None]] = None,
) -> CorpusStats:
    """Writes `out_dir/{train,val}-NNNNN.tfrecord` and `out_dir/stats.json`.

    Without `val_path`, a document goes to validation when a BLAKE2b hash of
    its cleaned text, keyed by `seed`, falls below `val_fraction`: the split is
    deterministic, needs no second pass, and identical documents always land
    on the same side. With `val_path`, all of `path` is training data and the
    validation split is `val_path`, cleaned by the same `cleaner`, so a
    validation document identical to a training one is dropped as a duplicate.

    Everything is written to a temporary sibling of `out_dir` that replaces it
    at the end; an existing `out_dir` must be empty or a prepared corpus. Samples
    of what cleaning removed or redacted go to `out_dir/removed/<reason>.jsonl`
    (`Cleaner.save_removed`), only for reasons that have some.
    `cleaner` is stateful: pass a fresh one. `progress`, when given, is called
    after each document is read with the documents and UTF-8 bytes of text read
    so far (both corpora together, before cleaning).
    """
    if val_path is None and not 0.0 < val_fraction < 1.0:
        raise UserError(
            f"data.val_fraction must be between 0 and 1 (exclusive). Received: {val_fraction}. "
            "Or set data.val_path."
        )
    if docs_per_shard < 1:
        raise ValueError(f"docs_per_shard must be positive. Received: docs_per_shard={docs_per_shard}")
    out_dir = os.path.abspath(out_dir)
    _check_replaceable(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    with staging_directory(out_dir) as work_dir:
        writers = {split: _ShardWriter(work_dir, split, docs_per_shard) for split in SPLITS}
        read = [0, 0]  # documents, bytes: carried from `path` over to `val_path`
        documents = _reported(iter_documents(path, blank_line_documents), progress, read)
        if val_path is None:
            _write(documents, cleaner, writers["train"], writers["val"], val_fraction=val_fraction, seed=seed)
        else:
            _write(documents, cleaner, writers["train"])
            _check_not_empty(writers, cleaner, path, val_path, val_fraction, training_only=True)
            _write(_reported(iter_documents(val_path, blank_line_documents), progress, read), cleaner, writers["val"])
        for writer in writers.values():
            writer.close()
        _check_not_empty(writers, cleaner, path, val_path, val_fraction, training_only=False)
        stats = CorpusStats(
            out_dir=work_dir,
            source=path,
            val_source=val_path,
            val_fraction=None if val_path is not None else val_fraction,
            seed=seed,
            documents={split: writers[split].documents for split in SPLITS},
            chars={split: writers[split].chars for split in SPLITS},
            bytes={split: writers[split].bytes for split in SPLITS},
            files={split: writers[split].files for split in SPLITS},
            cleaning=dict(cleaner.counts),
            cleaner=cleaner.get_config(),
        )
        stats.save(work_dir)
        # Inside the staging directory: the samples appear with the corpus or not at all.
        cleaner.save_removed(work_dir)
    return CorpusStats.load(out_dir)


def iter_texts(out_dir: str, split: str) -> Iterator[str]:
    """Streams the documents of one split (`"train"` or `"val"`) of a prepared corpus."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    files = CorpusStats.load(out_dir).files[split]
    for record in tf.data.TFRecordDataset(files).as_numpy_iterator():
        yield record.decode("utf-8")


def _write(documents, cleaner, writer, val_writer=None, *, val_fraction=0.0, seed=0):
    """Cleans `documents` into `writer`, or into `val_writer` when their seeded hash says so."""
    key = str(seed).encode("utf-8")
    for document in documents:
        text = cleaner.clean(document.text)
        if text is None:
            continue
        data = text.encode("utf-8")
        if val_writer is not None and _hash_fraction(data, key) < val_fraction:
            val_writer.write(data, len(text))
        else:
            writer.write(data, len(text))


def _reported(documents, progress, read):
    """`documents`, counted into `read` and told to `progress` as they are read."""
    if progress is None:
        yield from documents
        return
    for document in documents:
        text = document.text
        read[0] += 1
        # The readers hand over text, not file offsets; an ASCII str's length is its UTF-8 size,
        # which saves encoding most documents a second time.
        read[1] += len(text) if text.isascii() else len(text.encode("utf-8"))
        progress(read[0], read[1])
        yield document


def _hash_fraction(data: bytes, key: bytes) -> float:
    """A uniform number in [0, 1) fixed by the document text and the seed."""
    digest = hashlib.blake2b(data, digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big") / 2**64


class _ShardWriter:
    """Writes one split as numbered TFRecord shards of `docs_per_shard` documents."""

    def __init__(self, directory: str, split: str, docs_per_shard: int):
        self.directory = directory
        self.split = split
        self.docs_per_shard = docs_per_shard
        self.files: list[str] = []
        self.documents = 0
        self.chars = 0
        self.bytes = 0
        self._writer = None

    def write(self, data: bytes, num_chars: int) -> None:
        if self.documents % self.docs_per_shard == 0:
            self.close()
            self.files.append(os.path.join(self.directory, f"{self.split}-{len(self.files):05d}.tfrecord"))
            self._writer = tf.io.TFRecordWriter(self.files[-1])
        self._writer.write(data)
        self.documents += 1
        self.chars += num_chars
        self.bytes += len(data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _check_not_empty(writers, cleaner, path, val_path, val_fraction, *, training_only):
    counts = cleaner.counts
    keys = ("documents_in", "kept", "dropped_empty", "dropped_too_short", "dropped_duplicate")
    reasons = ", ".join(f"{key}={counts[key]}" for key in keys)
    if writers["train"].documents == 0 and writers["val"].documents == 0:
        raise UserError(
            f"Corpus {path!r} is empty after cleaning ({reasons}). "
            "Check data.path, or relax data.min_chars / data.deduplicate."
        )
    if writers["train"].documents == 0:
        raise UserError(
            f"The training split of {path!r} is empty: all {writers['val'].documents} documents went to "
            f"validation with data.val_fraction={val_fraction}. Lower data.val_fraction or add documents."
        )
    if training_only or writers["val"].documents > 0:
        return
    if val_path is not None:
        raise UserError(
            f"Validation corpus {val_path!r} is empty after cleaning ({reasons}; counts include the "
            "training corpus, and validation documents equal to training ones are duplicates)."
        )
    raise UserError(
        f"The validation split of {path!r} is empty: none of its {writers['train'].documents} documents "
        f"fell in data.val_fraction={val_fraction}. Raise data.val_fraction or set data.val_path."
    )


def _check_replaceable(out_dir: str) -> None:
    if not os.path.exists(out_dir):
        return
    is_corpus = os.path.exists(os.path.join(out_dir, STATS_FILE))
    if not os.path.isdir(out_dir) or (os.listdir(out_dir) and not is_corpus):
        raise UserError(
            f"Output directory {out_dir!r} exists and is not a prepared corpus; it will not be "
            "overwritten. Choose a new or empty directory."
        )
