"""Pretrain a causal language model: raw text -> tokenizer -> tf.data -> Transformer -> model.fit.

Run it from the command line:

    tfllm train                                   # configs/gpt-tiny.yaml on builtin:python-docs
    tfllm train --config configs/gpt-tiny.yaml --run-dir runs/my-run train.steps=200
    tensorboard --logdir runs/gpt-tiny/logs

or call `train(config, run_dir)` from Python.
"""

import math
import os
import tempfile
import time

import keras
import tensorflow as tf

from tfllm import config as config_lib
from tfllm import distribute
from tfllm import runs
from tfllm.callbacks import Checkpointer, MetricsLogger
from tfllm.data.cleaning import Cleaner
from tfllm.data.corpus import iter_texts, prepare_corpus
from tfllm.data.corpus_stats import CorpusStats
from tfllm.data.pipeline import lm_dataset
from tfllm.errors import UserError
from tfllm.flops import device_peak_flops, training_flops_per_token
from tfllm.generator import Generator
from tfllm.precision import resolve_precision
from tfllm.samplers import get_sampler
from tfllm.schedules import WarmupCosineDecay
from tfllm.tokenizers import load_tokenizer, train_tokenizer

# Norm scales and biases are not decayed (as in GPT-2 and nanoGPT).
NO_DECAY = ["bias", "gamma", "beta"]


def make_run_dir(run_dir):
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run dir {run_dir}: {e.strerror}; choose a writable --run-dir")
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run dir {run_dir} is not writable; choose a writable --run-dir")


def refuse_existing_run(config, p, run_dir):
    """Never overwrite another run: a run dir is reused only for the same data settings."""
    if os.path.exists(p["checkpoints"]):
        raise UserError(
            f"{run_dir} already holds a trained run (checkpoints/); choose a new --run-dir"
        )
    if os.path.exists(p["config"]):
        try:
            previous = config_lib.load_config(p["config"])
        except UserError as e:
            raise UserError(f"{run_dir} holds a config.yaml that is not a tfllm config ({e}); choose a new --run-dir")
        if previous.data != config.data:
            raise UserError(
                f"{run_dir} holds a prepared run with other data settings; choose a new --run-dir"
            )


def prepare_data(config, p):
    """Clean and split the corpus, then train (or reuse) the tokenizer on the training split."""
    d = config.data
    if os.path.exists(os.path.join(p["corpus"], "stats.json")):
        stats = CorpusStats.load(p["corpus"])
        print(f"Reusing the prepared corpus in {p['corpus']}")
    else:
        stats = prepare_corpus(
            d.path, p["corpus"], val_path=d.val_path, val_fraction=d.val_fraction, seed=config.train.seed,
            cleaner=make_cleaner(d), blank_line_documents=d.blank_line_documents,
        )
    print(stats.summary())
    if os.path.exists(os.path.join(p["tokenizer"], "tokenizer.json")):
        tokenizer = load_tokenizer(p["tokenizer"])
    else:
        start = time.perf_counter()
        tokenizer = train_tokenizer(d.tokenizer, iter_texts(p["corpus"], "train"), d.vocab_size)
        tokenizer.save(p["tokenizer"])
        print(f"Trained a {d.tokenizer} tokenizer with {tokenizer.vocabulary_size} ids "
              f"in {time.perf_counter() - start:.1f}s")
    return stats, tokenizer


def make_cleaner(d):
    return Cleaner(
        enabled=d.clean,
        normalize_unicode=d.normalize_unicode,
        drop_control_chars=d.drop_control_chars,
        normalize_whitespace=d.normalize_whitespace,
        deduplicate=d.deduplicate,
        min_chars=d.min_chars,
    )


def make_datasets(config, stats, tokenizer, strategy):
    """Training and validation datasets, each worker reading its own shard of documents.

    `train.batch_size` is the global batch per optimizer step; each replica's pipeline batches
    its share, so shapes are static (as TPUs need).
    """
    m, t = config.model, config.train

    def pipeline(files, shuffle, repeat, ctx):
        return lm_dataset(
            files, tokenizer, seq_len=m.seq_len, batch_size=ctx.get_per_replica_batch_size(t.batch_size),
            shuffle=shuffle, seed=t.seed, repeat=repeat, shuffle_buffer=config.data.shuffle_buffer,
            num_shards=ctx.num_input_pipelines, shard_index=ctx.input_pipeline_id,
        )

    whole = lm_dataset(stats.val_files, tokenizer, seq_len=m.seq_len, batch_size=t.batch_size,
                       shuffle=False, seed=t.seed, repeat=False).take(t.eval_batches)
    val_batches = sum(1 for _ in whole)
    if val_batches == 0:
        raise UserError(
            f"the validation split has fewer than train.batch_size x (model.seq_len + 1) = "
            f"{t.batch_size * (m.seq_len + 1)} tokens; raise data.val_fraction or set data.val_path"
        )
    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline(stats.train_files, True, True, ctx)
    )
    # The same blocks at every validation: Keras keeps one iterator across evaluations, so the
    # fixed set of `val_batches` steps (one batch per local replica each) repeats.
    val_ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline(stats.val_files, False, False, ctx)
        .take(val_batches * ctx.num_replicas_in_sync // ctx.num_input_pipelines)
        .repeat()
    )
    return train_ds, val_ds, val_batches


def make_optimizer(train_config):
    t = train_config
    schedule = WarmupCosineDecay(t.learning_rate, t.min_learning_rate, t.warmup_steps, t.steps)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=t.weight_decay, beta_1=t.beta1, beta_2=t.beta2,
        global_clipnorm=t.clip_norm or None,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def jit_compile(value, strategy):
    """Whether Keras compiles the train step with XLA; `auto` means on one GPU only.

    XLA is slower than plain graphs on this project's CPUs (bench/RESULTS.md), TPUStrategy
    compiles every step with XLA by itself, and Keras 3 cannot compile a step that spans several
    replicas: one XLA cluster cannot reach another device's variables (keras-team/keras#19005).
    """
    replicas = strategy.num_replicas_in_sync
    if value is True and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy):
        raise UserError(
            f"train.jit_compile=true fails with {replicas} replicas: Keras cannot compile one step across "
            "devices (keras-team/keras#19005); use train.jit_compile=auto"
        )
    if value != "auto":
        return bool(value)
    return bool(tf.config.list_physical_devices("GPU")) and replicas == 1


def make_callbacks(config, p, chief, model_flops_per_token, peak_flops):
    """Only the chief writes metrics, TensorBoard logs and checkpoints; every worker stops on time."""
    t = config.train
    tokens_per_step = t.batch_size * config.model.seq_len
    if not chief:
        return [MetricsLogger(None, None, tokens_per_step, t.log_every, t.steps)]
    return [
        MetricsLogger(p["metrics"], p["logs"], tokens_per_step, t.log_every, t.steps,
                      flops_per_token=model_flops_per_token, peak_flops=peak_flops),
        Checkpointer(p["checkpoints"], keep=t.keep_checkpoints),
    ]


def train(config, run_dir):
    """Train `config` into `run_dir`; returns the trained model and tokenizer."""
    t, m, d = config.train, config.model, config.distribute
    strategy = distribute.make_strategy(d.strategy, d.cpu_replicas, d.tpu)
    chief = distribute.is_chief(strategy)
    if not chief:
        # Other workers prepare the same corpus and tokenizer (deterministic) in a private
        # directory, so workers sharing a file system never write the chief's run dir.
        run_dir = tempfile.mkdtemp(prefix="tfllm-worker-")
    p = runs.paths(run_dir)
    if chief:
        make_run_dir(run_dir)
        refuse_existing_run(config, p, run_dir)
    replicas = strategy.num_replicas_in_sync
    micro_batch = distribute.split_batch(t.batch_size, replicas, t.grad_accum_steps)
    distribute.check_steps_per_execution(strategy, t.steps_per_execution)
    xla = jit_compile(t.jit_compile, strategy)
    precision = resolve_precision(t.precision)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(t.seed)

    stats, tokenizer = prepare_data(config, p)
    if chief:
        config_lib.save_config(config, p["config"])
    train_ds, val_ds, val_batches = make_datasets(config, stats, tokenizer, strategy)
    with strategy.scope():
        model = runs.build_causal_lm(m, tokenizer.vocabulary_size, config.max_seq_len)
        model.compile(
            optimizer=make_optimizer(t), jit_compile=xla,
            steps_per_execution=t.steps_per_execution, grad_accum_steps=t.grad_accum_steps,
        )
    flops_per_token = training_flops_per_token(
        m.num_layers, m.hidden_dim, m.intermediate_dim, tokenizer.vocabulary_size, m.seq_len
    )
    peak, peak_source = device_peak_flops(t.peak_flops, tf.bfloat16 if "bfloat16" in precision else tf.float32)
    # CPU replicas of one worker share its cores: one peak per worker, not per replica.
    local_devices = strategy.extended.worker_devices
    devices = replicas // len(local_devices) if "CPU" in local_devices[0].upper() else replicas
    print(f"Model: {model.count_params():,} parameters, {flops_per_token / 1e6:.1f} MFLOPs per trained token; "
          f"{t.steps} steps of {t.batch_size} x {m.seq_len} tokens; precision {precision}")
    print(f"Batch: global {t.batch_size} = {replicas} replica(s) x {t.grad_accum_steps} micro-batch(es) "
          f"of {micro_batch}; peak {peak * devices / 1e12:.2f} TFLOP/s ({peak_source})")

    eval_every = min(t.eval_every, t.steps)
    model.fit(
        train_ds, epochs=math.ceil(t.steps / eval_every), steps_per_epoch=eval_every,
        validation_data=val_ds, validation_steps=val_batches, shuffle=False,
        callbacks=make_callbacks(config, p, chief, flops_per_token, peak * devices),
        verbose=2 if os.environ.get("CI") else "auto",
    )
    return model, tokenizer


SAMPLE_PROMPTS = ("The ", "def ", "This module")


def print_samples(config, model, tokenizer):
    """Print a few top-k samples from the trained model."""
    t = config.train
    generator = Generator(model, tokenizer, max_length=config.max_seq_len)
    sampler = get_sampler("sample", temperature=0.8, top_k=40, seed=t.seed)
    prompts = [SAMPLE_PROMPTS[i % len(SAMPLE_PROMPTS)] for i in range(t.samples)]
    max_new_tokens = min(t.sample_tokens, config.max_seq_len - 8)
    print("Samples:")
    for prompt, completion in zip(prompts, generator.generate(prompts, max_new_tokens, sampler)):
        print(f"--- {prompt!r}\n{prompt}{completion}")
