"""Pretrain a causal language model: raw text -> tokenizer -> tf.data -> Transformer -> model.fit.

Run it from the command line:

    tfllm train                                   # configs/gpt-tiny.yaml on builtin:python-docs
    tfllm train --config configs/gpt-tiny.yaml --run-dir runs/my-run train.steps=200
    tensorboard --logdir runs/gpt-tiny/logs

or call `train(config, run_dir)` from Python.
"""

from tfllm import runs
from tfllm.data.pipeline import lm_dataset
from tfllm.errors import UserError
from tfllm.generator import Generator
from tfllm.samplers import get_sampler
from tfllm.trainers import init_from
from tfllm.trainers.common import compile_model, count_batches, fit, prepare_data, save_config, start_session
from tfllm.trainers.resume import training_data


def make_datasets(config, stats, tokenizer, strategy, dataset_fn=lm_dataset, **options):
    """Training and validation datasets, each worker reading its own shard of documents.

    `train.batch_size` is the global batch per optimizer step; each replica's pipeline batches
    its share, so shapes are static (as TPUs need). `dataset_fn` builds one pipeline
    (`lm_dataset`, or `masked_lm_dataset` with its `options`). Returns `(train_at, val_ds,
    val_batches)`: `train_at(step)` is the training data from optimizer step `step` on.
    """
    m, t = config.model, config.train
    options = {"pack": config.data.pack, **options}

    def pipeline(files, shuffle, repeat, ctx):
        return dataset_fn(
            files, tokenizer, seq_len=m.seq_len, batch_size=ctx.get_per_replica_batch_size(t.batch_size),
            shuffle=shuffle, seed=t.seed, repeat=repeat, shuffle_buffer=config.data.shuffle_buffer,
            num_shards=ctx.num_input_pipelines, shard_index=ctx.input_pipeline_id, **options,
        )

    whole = dataset_fn(stats.val_files, tokenizer, seq_len=m.seq_len, batch_size=t.batch_size,
                       shuffle=False, seed=t.seed, repeat=False, **options)
    val_batches = count_batches(whole, t.eval_batches)
    if val_batches == 0:
        raise UserError(
            f"the validation split has fewer than train.batch_size x (model.seq_len + 1) = "
            f"{t.batch_size * (m.seq_len + 1)} tokens; raise data.val_fraction or set data.val_path"
        )
    train_at = training_data(strategy, lambda ctx: pipeline(stats.train_files, True, True, ctx))
    # The same blocks at every validation: Keras keeps one iterator across evaluations, so the
    # fixed set of `val_batches` steps (one batch per local replica each) repeats.
    val_ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline(stats.val_files, False, False, ctx)
        .take(val_batches * ctx.num_replicas_in_sync // ctx.num_input_pipelines)
        .repeat()
    )
    return train_at, val_ds, val_batches


def train(config, run_dir, dataset_fn=lm_dataset, **options):
    """Train `config` into `run_dir`; returns the trained model and tokenizer. A masked LM
    trains here too, with its `dataset_fn` and `options` (see `make_datasets`)."""
    session = start_session(config, run_dir)
    pretrained = init_from.check(config)
    if pretrained:
        init_from.copy_tokenizer(config, session.paths)
    stats, tokenizer = prepare_data(config, session.paths)
    save_config(session)
    train_at, val_ds, val_batches = make_datasets(
        config, stats, tokenizer, session.strategy, dataset_fn=dataset_fn, **options
    )
    with session.strategy.scope():
        model = runs.build_model(config, tokenizer.vocabulary_size)
        if pretrained:
            init_from.load_backbone(model, config)
        compile_model(session, model)
    fit(session, model, train_at, val_ds, val_batches, tokenizer.vocabulary_size)
    return model, tokenizer


SAMPLE_PROMPTS = ("The ", "def ", "This module")


def print_samples(config, model, tokenizer, prompts=SAMPLE_PROMPTS):
    """Print a few top-k samples from the trained model."""
    t = config.train
    generator = Generator(model, tokenizer, max_length=config.max_seq_len)
    sampler = get_sampler("sample", temperature=0.8, top_k=40, seed=t.seed)
    prompts = [prompts[i % len(prompts)] for i in range(t.samples)]
    max_new_tokens = min(t.sample_tokens, config.max_seq_len - 8)
    print("Samples:")
    for prompt, completion in zip(prompts, generator.generate(prompts, max_new_tokens, sampler)):
        print(f"--- {prompt!r}\n{prompt}{completion}")
