"""Distributed training and validation data of a run, from any optimizer step on.

Each task's record (`tfllm.tasks`) picks one of the builders below. Every builder returns a
`TrainingData`: `train_at(step)` is the training data from optimizer step `step` on (a resumed
run continues with the batches an uninterrupted run got), and the validation data repeats the
same `val_batches` batches at every evaluation. `train.batch_size` is the global batch per
optimizer step; each input pipeline (one per worker) reads its own share of the documents or
examples and batches its replicas' share, so shapes are static (as TPUs need).
"""

import collections
import logging
import math

import tensorflow as tf

from tfllm.data.chat import ChatTemplate
from tfllm.data.finetune_pipeline import classify_dataset, pieces_dataset, sft_pieces
from tfllm.data.labeled import balanced_class_weights
from tfllm.data.seq2seq_pipeline import encode_sources, encode_targets, seq2seq_dataset
from tfllm.errors import UserError

logger = logging.getLogger(__name__)

TrainingData = collections.namedtuple("TrainingData", "train_at val_ds val_batches")
# Labeled examples of a fine-tuning run: training and validation `Example` lists, and the
# `LabelMap` of a classifier (None for prompt -> completion pairs).
Examples = collections.namedtuple("Examples", "train val label_map")


def training_data(strategy, pipeline_fn):
    """`step -> distributed dataset`: the training batches from optimizer step `step` on.

    `pipeline_fn(ctx)` builds one input pipeline, a deterministic function of its position, so
    the batches a run gets after a resume at `step` are the ones an uninterrupted run got: each
    optimizer step takes one batch per replica, so a pipeline skips `step x its replicas`.
    """
    def at(step):
        def pipeline(ctx):
            replicas_per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            return pipeline_fn(ctx).skip(step * replicas_per_pipeline)

        return strategy.distribute_datasets_from_function(pipeline)

    return at


def count_batches(dataset, limit):
    """How many batches (at most `limit`) a finite dataset yields."""
    return sum(1 for _ in dataset.take(limit))


def corpus_data(config, corpus, tokenizer, strategy, dataset_fn, **options):
    """Blocks of the prepared corpus `corpus` (a `CorpusStats`), built by `dataset_fn`
    (`lm_dataset`, or `masked_lm_dataset` with its `options`)."""
    m, t = config.model, config.train
    options = {"pack": config.data.pack, **options}

    def pipeline(files, shuffle, repeat, ctx):
        return dataset_fn(
            files, tokenizer, seq_len=m.seq_len, batch_size=ctx.get_per_replica_batch_size(t.batch_size),
            shuffle=shuffle, seed=t.seed, repeat=repeat, shuffle_buffer=config.data.shuffle_buffer,
            num_shards=ctx.num_input_pipelines, shard_index=ctx.input_pipeline_id, **options,
        )

    whole = dataset_fn(corpus.val_files, tokenizer, seq_len=m.seq_len, batch_size=t.batch_size,
                       shuffle=False, seed=t.seed, repeat=False, **options)
    val_batches = count_batches(whole, t.eval_batches)
    if val_batches == 0:
        raise UserError(
            f"the validation split has fewer than train.batch_size x (model.seq_len + 1) = "
            f"{t.batch_size * (m.seq_len + 1)} tokens; raise data.val_fraction or set data.val_path"
        )
    # Keras keeps one validation iterator across evaluations, so the fixed set of `val_batches`
    # steps (one batch per local replica each) repeats.
    val_ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline(corpus.val_files, False, False, ctx)
        .take(val_batches * ctx.num_replicas_in_sync // ctx.num_input_pipelines)
        .repeat()
    )
    return TrainingData(training_data(strategy, lambda ctx: pipeline(corpus.train_files, True, True, ctx)),
                        val_ds, val_batches)


def examples_data(config, examples, strategy, build):
    """Data of labeled examples (`examples.train`, `examples.val`): `build(examples, ctx,
    batch_size, training)` makes one pipeline over the input pipeline's share of `examples`."""
    t = config.train
    if len(examples.train) < t.batch_size:
        raise UserError(
            f"{config.data.path}: {len(examples.train)} training examples are fewer than "
            f"train.batch_size={t.batch_size}; lower train.batch_size or add examples"
        )

    def pipeline(part, ctx, training):
        share = part[ctx.input_pipeline_id :: ctx.num_input_pipelines]
        return build(share, ctx.get_per_replica_batch_size(t.batch_size), training)

    # Validation covers every example once per evaluation (the last batch may be short) and,
    # as for pretraining, repeats the same batches at every evaluation.
    val_batches = min(t.eval_batches, math.ceil(len(examples.val) / t.batch_size))
    val_ds = strategy.distribute_datasets_from_function(lambda ctx: pipeline(examples.val, ctx, False).repeat())
    return TrainingData(training_data(strategy, lambda ctx: pipeline(examples.train, ctx, True)), val_ds,
                        val_batches)


def classify_data(config, examples, tokenizer, strategy, pooling):
    """Texts and class ids of `examples` (with `examples.label_map`), the end-of-text id where
    the classifier pools (`pooling`), weighted per class with `train.class_weights=balanced`."""
    t, label_map = config.train, examples.label_map

    def encoded(part):
        """(text, class id) pairs; a label the training data lacks names its line."""
        ids = label_map.encode([label for _, label in part], [example.source for example in part])
        return [(text, label_id) for (text, _), label_id in zip(part, ids)]

    examples = Examples(encoded(examples.train), encoded(examples.val), label_map)
    class_weights = None
    if t.class_weights == "balanced":
        weights = balanced_class_weights([label_id for _, label_id in examples.train], label_map.num_classes)
        class_weights = tf.constant([weights[i] for i in range(label_map.num_classes)], tf.float32)

    def build(part, batch_size, training):
        ds = classify_dataset(
            [text for text, _ in part], [label_id for _, label_id in part], tokenizer,
            seq_len=config.model.seq_len, batch_size=batch_size, pooling=pooling, shuffle=training, seed=t.seed,
            repeat=training, drop_remainder=training,
        )
        if training and class_weights is not None:
            ds = ds.map(lambda x, y: (x, y, tf.gather(class_weights, y)))
        return ds

    return examples_data(config, examples, strategy, build)


def sft_data(config, examples, tokenizer, strategy):
    """Prompt -> completion pairs and conversations of `examples` (conversations rendered with the
    tokenizer's chat template, all of them before training starts, so that a line the template
    cannot render is an error at once); the loss counts completions and assistant turns only."""
    t = config.train
    template = ChatTemplate.of(tokenizer)
    pieces = Examples(sft_pieces(examples.train, tokenizer, template), sft_pieces(examples.val, tokenizer, template),
                      None)

    def build(part, batch_size, training):
        return pieces_dataset(
            part, tokenizer, seq_len=config.model.seq_len, batch_size=batch_size, shuffle=training, seed=t.seed,
            repeat=training, drop_remainder=training,
        )

    return examples_data(config, pieces, strategy, build)


def seq2seq_data(config, examples, tokenizer, strategy):
    """Source -> target pairs of `examples`; the loss counts target tokens only. Logs one warning
    per side when training sources or targets are too long for the model and get cut."""
    t = config.train
    sources, targets = count_cut(examples.train, tokenizer, config.source_len, config.model.seq_len)
    n = len(examples.train)
    if sources:
        logger.warning(
            "%d of %d training sources do not fit the %d-token source length (model.source_len) with their end-of-text "
            "token and are cut; raise model.source_len to keep them", sources, n, config.source_len,
        )
    if targets:
        logger.warning(
            "%d of %d training targets do not fit model.seq_len=%d tokens with their end-of-text token and are cut; "
            "raise model.seq_len to keep them", targets, n, config.model.seq_len,
        )

    def build(part, batch_size, training):
        return seq2seq_dataset(
            [source for source, _ in part], [target for _, target in part], tokenizer,
            source_len=config.source_len, seq_len=config.model.seq_len, batch_size=batch_size, shuffle=training,
            seed=t.seed, repeat=training, drop_remainder=training,
        )

    return examples_data(config, examples, strategy, build)


def count_cut(examples, tokenizer, source_len, seq_len, batch_size=1024):
    """`(sources, targets)`: how many of the `(source, target)` `examples` the seq2seq pipeline
    cuts, counted with its own encoders (`encode_sources`, `encode_targets`), eagerly."""
    sources = targets = 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        source_texts = tf.constant([source for source, _ in batch], tf.string)
        target_texts = tf.constant([target for _, target in batch], tf.string)
        sources += int(tf.math.count_nonzero(encode_sources(tokenizer, source_texts, source_len)["cut"]))
        targets += int(tf.math.count_nonzero(encode_targets(tokenizer, target_texts, seq_len)[3]))
    return sources, targets
