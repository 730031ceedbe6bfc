"""A run's data before batching: the cleaned corpus or the labeled examples, and the tokenizer.

A task that trains on raw text (its record has no `read_examples`) cleans and splits
`data.path` into the run's corpus/; one that trains on labeled examples reads and splits them
(and keeps the classifier's label map). The tokenizer is the pretrained run's (`init_from`),
the one already in the run dir, or one trained on the training split.
"""

import os
import time

from tfllm.data.blocklist import Blocklist
from tfllm.data.cleaning import Cleaner
from tfllm.data.corpus import iter_texts, prepare_corpus
from tfllm.data.corpus_stats import CorpusStats, STATS_FILE
from tfllm.data.example import split_examples
from tfllm.data.labeled import LabelMap, example_texts
from tfllm.data.near_duplicates import NearDuplicateFilter
from tfllm.data.quality import SETTINGS as QUALITY_SETTINGS, QualityFilter
from tfllm.data.training_data import Examples
from tfllm import lineage
from tfllm.errors import UserError
from tfllm.tokenizers import train_tokenizer


def prepare_data(config, run, task, pretrained=None, chief=True, progress=None):
    """`(source, tokenizer)`: the prepared corpus (`CorpusStats`) or `Examples`, and the tokenizer
    of the `Run` `run`; `pretrained` is the `Run` of `train.init_from`, or None. Only the `chief`
    writes the label map; `progress` is a `ReadProgress` shown while a corpus is read, or None."""
    if task.read_examples is None:
        source = prepare_text(config, run, progress)
        texts = lambda: iter_texts(run.corpus_dir, "train")  # noqa: E731
    else:
        source = read_examples(config, task)
        texts = lambda: example_texts(source.train)  # noqa: E731
        if source.label_map and chief:
            run.save_labels(source.label_map)
    if pretrained is not None:
        run.copy_tokenizer(pretrained)
    return source, prepare_tokenizer(config, run, texts)


def prepare_text(config, run, progress=None):
    """Clean and split the corpus into the run's corpus/, or reuse what a previous start (or
    `tfllm prepare`) wrote; `progress` is a `ReadProgress`, or None."""
    d = config.data
    if os.path.exists(os.path.join(run.corpus_dir, STATS_FILE)):
        stats = CorpusStats.load(run.corpus_dir)
        print(f"Reusing the prepared corpus in {run.corpus_dir}")
    else:
        try:
            stats = prepare_corpus(
                d.path, run.corpus_dir, val_path=d.val_path, val_fraction=d.val_fraction, seed=config.train.seed,
                cleaner=make_cleaner(d), blank_line_documents=d.blank_line_documents, progress=progress,
            )
        finally:
            # Also when reading fails: a line a terminal is redrawing ends before the error.
            if progress is not None:
                progress.finish()
    print(stats.summary())
    return stats


def read_examples(config, task):
    """The task's examples: `data.val_path`, or a seeded `data.val_fraction` split of `data.path`
    (`split_examples`: whole groups to one side when the examples have groups)."""
    d = config.data
    train = task.read_examples(d.path)
    if d.val_path:
        val = task.read_examples(d.val_path)
    else:
        # Examples with a group (the module of a built-in function) keep each group on one side.
        n = len(train)
        train, val = split_examples(train, d.val_fraction, config.train.seed)
        if not train or not val:
            groups = len({example.group for example in train + val} - {None})
            within = f" in {groups} group(s), each kept on one side," if groups else ""
            raise UserError(
                f"{d.path}: {n} examples{within} leave none for training or validation with "
                f"data.val_fraction={d.val_fraction}; set data.val_path or another data.val_fraction"
            )
    print(f"{task.name}: {len(train)} training and {len(val)} validation examples")
    label_map = None
    if task.labeled:
        label_map = LabelMap.from_labels([label for _, label in train])
        if label_map.num_classes < 2:
            raise UserError(
                f"{d.path}: every training example has the label {label_map.labels[0]!r}; "
                "a classifier needs at least 2 labels"
            )
    return Examples(train, val, label_map)


def prepare_tokenizer(config, run, texts):
    """The run's tokenizer: reused when saved, else trained on `texts()` and saved."""
    d = config.data
    if run.has_tokenizer:
        print(f"Reusing the tokenizer in {run.tokenizer_dir}")
        return run.tokenizer
    start = time.perf_counter()
    tokenizer = train_tokenizer(d.tokenizer, texts(), d.vocab_size)
    tokenizer.save(run.tokenizer_dir)
    print(f"Trained a {d.tokenizer} tokenizer with {tokenizer.vocabulary_size} ids "
          f"in {time.perf_counter() - start:.1f}s")
    return tokenizer


def make_cleaner(d):
    """The `Cleaner` of the `data` config section; a `UserError` names data.blocklist when its file
    cannot be read."""
    quality = near_duplicates = blocklist = None
    if d.blocklist is not None:
        blocklist = Blocklist(d.blocklist, action=d.blocklist_action)
    if d.quality_filter:
        quality = QualityFilter(**{name: getattr(d, f"quality_{name}") for name in QUALITY_SETTINGS})
    if d.near_duplicates:
        near_duplicates = NearDuplicateFilter(
            threshold=d.near_duplicate_threshold, ngram=d.near_duplicate_ngram, num_perm=d.near_duplicate_num_perm
        )
    return Cleaner(
        enabled=d.clean,
        normalize_unicode=d.normalize_unicode,
        drop_control_chars=d.drop_control_chars,
        normalize_whitespace=d.normalize_whitespace,
        deduplicate=d.deduplicate,
        min_chars=d.min_chars,
        redact_personal_data=d.redact_personal_data,
        blocklist=blocklist,
        quality=quality,
        near_duplicates=near_duplicates,
        max_removed_samples=d.removed_samples,
    )


def record_lineage(config, run, pretrained=None, checkpoint=None):
    """RUN_DIR/lineage.json: the digests of what the run is made from, once its data, tokenizer
    and config.yaml are written; `checkpoint` is the one of the `Run` `pretrained`
    (`train.init_from`) it starts from. Says what changed since the previous start, whose values
    the file keeps."""
    d = config.data
    parent = lineage.parent_record(pretrained.path, checkpoint) if pretrained else None
    current = lineage.of_run(run, {"data.path": d.path, "data.val_path": d.val_path}, parent=parent)
    changed = lineage.record(run.path, current)
    if changed:
        print(f"The run's lineage changed since its previous start ({', '.join(changed)}); "
              f"{lineage.LINEAGE_FILENAME} keeps the earlier values under 'previous'")
