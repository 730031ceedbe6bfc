"""Fine-tune into a classifier (`model.task: classify`) or a prompt -> completion model (`sft`).

    tfllm train --config configs/classify-tiny.yaml train.init_from=runs/bert-tiny
    tfllm train --config configs/sft-tiny.yaml train.init_from=runs/gpt-tiny

`data.path` (and `data.val_path`, else a `data.val_fraction` split) are .jsonl files with
"text" and "label" (classify) or "prompt" and "completion" (sft) on every line. With
`train.init_from` the run starts from that run's tokenizer and backbone; without it, a
tokenizer is trained on the examples and the model starts from scratch.
"""

import math
import random

import tensorflow as tf

from tfllm import runs
from tfllm.data.finetune_pipeline import classify_dataset, sft_dataset
from tfllm.data.labeled import LabelMap, balanced_class_weights, read_classification, read_prompt_completion
from tfllm.errors import UserError
from tfllm.trainers import init_from
from tfllm.trainers.common import compile_model, fit, prepare_tokenizer, save_config, start_session
from tfllm.trainers.resume import training_data


def split_examples(config):
    """(train, validation) example lists: `data.val_path`, or a seeded `data.val_fraction` split."""
    d = config.data
    read = read_classification if config.model.task == "classify" else read_prompt_completion
    train = read(d.path)
    if d.val_path:
        return train, read(d.val_path)
    shuffled = list(train)
    random.Random(config.train.seed).shuffle(shuffled)
    n_val = math.ceil(len(shuffled) * d.val_fraction) if d.val_fraction > 0 else 0
    if n_val == 0 or n_val >= len(shuffled):
        raise UserError(
            f"{d.path}: {len(shuffled)} examples leave none for training or validation with "
            f"data.val_fraction={d.val_fraction}; set data.val_path or another data.val_fraction"
        )
    return shuffled[n_val:], shuffled[:n_val]


def example_texts(examples):
    for example in examples:
        yield from (part for part in example if isinstance(part, str))


def train(config, run_dir):
    """Fine-tune `config` into `run_dir`; returns the trained model and tokenizer."""
    session = start_session(config, run_dir)
    p, task = session.paths, config.model.task
    pretrained = init_from.check(config)
    train_examples, val_examples = split_examples(config)
    print(f"{task}: {len(train_examples)} training and {len(val_examples)} validation examples")
    if pretrained:
        init_from.copy_tokenizer(config, p)
    tokenizer = prepare_tokenizer(config, p, lambda: example_texts(train_examples))
    causal = runs.is_causal(pretrained.model.task) if pretrained else True
    label_map = None
    if task == "classify":
        label_map = LabelMap.from_labels([label for _, label in train_examples])
        if label_map.num_classes < 2:
            raise UserError(
                f"{config.data.path}: every training example has the label {label_map.labels[0]!r}; "
                "a classifier needs at least 2 labels"
            )
        if session.chief:
            label_map.save(p["labels"])
    if session.chief:
        init_from.write_backbone_info(config, p, causal)
    save_config(session)
    train_at, val_ds, val_batches = make_datasets(
        config, session.strategy, tokenizer, train_examples, val_examples, label_map, causal
    )
    with session.strategy.scope():
        num_classes = len(label_map.labels) if label_map else None
        model = runs.build_model(config, tokenizer.vocabulary_size, num_classes, backbone_causal=causal)
        if pretrained:
            init_from.load_backbone(model, config)
        compile_model(session, model)
    fit(session, model, train_at, val_ds, val_batches, tokenizer.vocabulary_size)
    return model, tokenizer


def make_datasets(config, strategy, tokenizer, train_examples, val_examples, label_map, causal):
    """`(train_at, val_ds, val_batches)`: distributed training data from any step on (see
    `trainers.resume.training_data`) and validation data; each input pipeline reads its own share."""
    t, m = config.train, config.model
    task = m.task
    if task == "classify":
        val_labels = label_map.encode([label for _, label in val_examples], [e.source for e in val_examples])
        train_labels = label_map.encode([label for _, label in train_examples], [e.source for e in train_examples])
        class_weights = None
        if t.class_weights == "balanced":
            weights = balanced_class_weights(train_labels, len(label_map.labels))
            class_weights = tf.constant([weights[i] for i in range(len(label_map.labels))], tf.float32)
        pooling = "last" if causal else "first"

        def build(examples, labels, ctx, batch_size, training):
            texts = [text for text, _ in examples][ctx.input_pipeline_id :: ctx.num_input_pipelines]
            ids = labels[ctx.input_pipeline_id :: ctx.num_input_pipelines]
            ds = classify_dataset(
                texts, ids, tokenizer, seq_len=m.seq_len, batch_size=batch_size, pooling=pooling,
                shuffle=training, seed=t.seed, repeat=training, drop_remainder=training,
            )
            if training and class_weights is not None:
                ds = ds.map(lambda x, y: (x, y, tf.gather(class_weights, y)))
            return ds

        train_fn = lambda ctx: build(train_examples, train_labels, ctx, per_replica(ctx), True)  # noqa: E731
        val_fn = lambda ctx: build(val_examples, val_labels, ctx, per_replica(ctx), False)  # noqa: E731
    else:
        def build(examples, ctx, batch_size, training):
            part = examples[ctx.input_pipeline_id :: ctx.num_input_pipelines]
            return sft_dataset(
                [prompt for prompt, _ in part], [completion for _, completion in part], tokenizer,
                seq_len=m.seq_len, batch_size=batch_size, shuffle=training, seed=t.seed, repeat=training,
                drop_remainder=training,
            )

        train_fn = lambda ctx: build(train_examples, ctx, per_replica(ctx), True)  # noqa: E731
        val_fn = lambda ctx: build(val_examples, ctx, per_replica(ctx), False)  # noqa: E731

    def per_replica(ctx):
        return ctx.get_per_replica_batch_size(t.batch_size)

    if len(train_examples) < t.batch_size:
        raise UserError(
            f"{config.data.path}: {len(train_examples)} training examples are fewer than "
            f"train.batch_size={t.batch_size}; lower train.batch_size or add examples"
        )
    # Validation covers every example once per evaluation (the last batch may be short) and,
    # as for pretraining, repeats the same batches at every evaluation.
    val_batches = min(t.eval_batches, math.ceil(len(val_examples) / t.batch_size))
    val_ds = strategy.distribute_datasets_from_function(lambda ctx: val_fn(ctx).repeat())
    return training_data(strategy, train_fn), val_ds, val_batches
