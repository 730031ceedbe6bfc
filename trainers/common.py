"""What every training program shares: the run dir, strategy and precision, corpus and tokenizer,
optimizer, callbacks and the `model.fit` loop.

A task program (`trainers/causal_lm.py`, `masked_lm.py`, `finetune.py`) supplies its datasets and
its model; `Session` and `fit` do the rest the same way for every task, resuming a run where
`trainers/resume.py` says.
"""

import dataclasses
import math
import os
import shutil
import tempfile
import time
import typing

import keras
import tensorflow as tf

from tfllm import config as config_lib
from tfllm import distribute
from tfllm import runs
from tfllm.callbacks import (
    Checkpointer, MetricsLogger, ResumableEarlyStopping, StopOnNonFiniteLoss, StopTogetherOnSignal,
    early_stopping_state,
)
from tfllm.callbacks.checkpointer import checkpoint_step
from tfllm.data.cleaning import Cleaner
from tfllm.data.corpus import iter_texts, prepare_corpus
from tfllm.data.corpus_stats import CorpusStats
from tfllm.errors import UserError
from tfllm.flops import device_peak_flops, training_flops_per_token
from tfllm.precision import resolve_precision
from tfllm.schedules import WarmupCosineDecay
from tfllm.tokenizers import load_tokenizer, train_tokenizer
from tfllm.trainers.resume import find_resume_checkpoint, restore_for_resume, resumed_best_checkpoint, run_fingerprint

# Norm scales and biases are not decayed (as in GPT-2 and nanoGPT).
NO_DECAY = ["bias", "gamma", "beta"]


@dataclasses.dataclass
class Session:
    """The resolved settings of one training process."""

    config: config_lib.Config
    run_dir: str
    paths: dict
    strategy: tf.distribute.Strategy
    chief: bool
    precision: str
    jit_compile: bool
    micro_batch: int
    # The checkpoint a resumed run continues from (None for a new run) and its step.
    resume_from: typing.Optional[str] = None
    start_step: int = 0


def start_session(config, run_dir):
    """Strategy, run dir, precision and seeds: everything settled before data and model."""
    t, d = config.train, config.distribute
    strategy = distribute.make_strategy(d.strategy, d.cpu_replicas, d.tpu)
    chief = distribute.is_chief(strategy)
    shared_run_dir = run_dir
    if chief:
        make_run_dir(run_dir)
    resume_from = find_resume_checkpoint(config, runs.paths(shared_run_dir))
    if not chief:
        # Other workers prepare the same corpus and tokenizer (deterministic) in a private
        # directory, so workers sharing a file system never write the chief's run dir; they
        # read the chief's checkpoints to resume.
        run_dir = tempfile.mkdtemp(prefix="tfllm-worker-")
    p = runs.paths(run_dir)
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    micro_batch = distribute.split_batch(t.batch_size, strategy.num_replicas_in_sync, t.grad_accum_steps)
    distribute.check_steps_per_execution(strategy, t.steps_per_execution)
    xla = jit_compile(t.jit_compile, strategy)
    precision = resolve_precision(t.precision)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(t.seed)
    start_step = checkpoint_step(resume_from) if resume_from else 0
    if not distribute.same_on_every_worker(strategy, start_step):
        raise UserError(
            f"the workers found different checkpoints to resume in --run-dir {shared_run_dir} (this one: "
            f"{resume_from or 'none'}); give every worker the same run dir on a file system they all read"
        )
    if resume_from:
        print(f"Resuming from {resume_from} (step {start_step})")
    return Session(config, run_dir, p, strategy, chief, precision, xla, micro_batch, resume_from, start_step)


def make_run_dir(run_dir):
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run dir {run_dir}: {e.strerror}; choose a writable --run-dir")
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run dir {run_dir} is not writable; choose a writable --run-dir")


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
    tokenizer = prepare_tokenizer(config, p, lambda: iter_texts(p["corpus"], "train"))
    return stats, tokenizer


def prepare_tokenizer(config, p, texts):
    """The run's tokenizer: reused when saved, else trained on `texts()` and saved."""
    d = config.data
    if os.path.exists(os.path.join(p["tokenizer"], "tokenizer.json")):
        return load_tokenizer(p["tokenizer"])
    start = time.perf_counter()
    tokenizer = train_tokenizer(d.tokenizer, texts(), d.vocab_size)
    tokenizer.save(p["tokenizer"])
    print(f"Trained a {d.tokenizer} tokenizer with {tokenizer.vocabulary_size} ids "
          f"in {time.perf_counter() - start:.1f}s")
    return tokenizer


def make_cleaner(d):
    return Cleaner(
        enabled=d.clean,
        normalize_unicode=d.normalize_unicode,
        drop_control_chars=d.drop_control_chars,
        normalize_whitespace=d.normalize_whitespace,
        deduplicate=d.deduplicate,
        min_chars=d.min_chars,
    )


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


def compile_model(session, model, **kwargs):
    """`model.compile` with the run's optimizer and step settings; call inside the strategy scope."""
    t = session.config.train
    model.compile(
        optimizer=make_optimizer(t), jit_compile=session.jit_compile,
        steps_per_execution=t.steps_per_execution, grad_accum_steps=t.grad_accum_steps, **kwargs,
    )


def monitored_metric(config):
    """(name, mode) of the validation metric that picks the best checkpoint and stops early."""
    if config.train.monitor != "auto":
        name = config.train.monitor
        mode = "min" if "loss" in name else "max"
        return name, mode
    if config.model.task == "classify":
        return "val_accuracy", "max"
    return "val_loss", "min"


def make_callbacks(session, tokens_per_step, flops_per_token, peak_flops):
    """(callbacks, state): the chief writes metrics, TensorBoard logs and
    checkpoints; every worker logs nothing, stops on time, on a non-finite loss and early.
    `state` maps names to the callbacks' own trackables, which every training checkpoint holds."""
    config, p = session.config, session.paths
    t = config.train
    monitor, mode = monitored_metric(config)
    chief = session.chief
    logger = MetricsLogger(
        p["metrics"] if chief else None, p["logs"] if chief else None, tokens_per_step, t.log_every, t.steps,
        flops_per_token=flops_per_token if chief else 0.0, peak_flops=peak_flops,
    )
    state = {"logger": logger.state, "early_stopping": early_stopping_state()}
    # Callbacks run in list order: the logger sums the step's loss and early stopping counts
    # the evaluation before a checkpoint saves them, and a non-finite loss stops the run
    # before anything is saved from it.
    resume_hint = f" (e.g. tfllm train --run-dir {session.run_dir} train.learning_rate={t.learning_rate / 3:.3g})"
    callbacks = [logger, StopOnNonFiniteLoss(p["checkpoints"], resume_hint)]
    if t.early_stopping_patience:
        # Every worker stops at the same evaluation: they all see the same validation numbers.
        callbacks.append(ResumableEarlyStopping(
            state["early_stopping"], t.steps, lambda: resumed_best_checkpoint(session),
            monitor=monitor, mode=mode, patience=t.early_stopping_patience,
        ))
    # Several workers must stop after the same step when any one of them gets a signal.
    multi_worker = isinstance(session.strategy, tf.distribute.MultiWorkerMirroredStrategy)
    checkpointer = None
    if chief:
        checkpointer = Checkpointer(
            p["checkpoints"], keep=t.keep_checkpoints, monitor=monitor, mode=mode, every=t.checkpoint_every,
            extra=state, fingerprint=run_fingerprint(config, p), handle_signals=not multi_worker,
        )
    if multi_worker:
        callbacks.append(StopTogetherOnSignal(session.strategy, checkpointer))
    if checkpointer is not None:
        callbacks.append(checkpointer)
    return callbacks, state


def check_free_disk(session, model):
    """Refuse to start when the checkpoints the config keeps cannot fit on the run's disk."""
    t = session.config.train
    # Weights plus AdamW's two moments, float32; latest/ keeps K, best/ one, and one in flight.
    per_checkpoint = 4 * 3 * model.count_params()
    needed = per_checkpoint * (t.keep_checkpoints + 2)
    free = shutil.disk_usage(session.run_dir).free
    if free < needed:
        raise UserError(
            f"{session.run_dir} has {free / 2**20:.0f} MiB free, the {t.keep_checkpoints + 2} checkpoints of "
            f"{per_checkpoint / 2**20:.0f} MiB this run keeps need {needed / 2**20:.0f} MiB; free disk space, "
            "lower train.keep_checkpoints or choose another --run-dir"
        )


def peak_flops_of(session):
    """(peak FLOP/s of all devices together, where the per-device figure came from)."""
    strategy, t = session.strategy, session.config.train
    dtype = tf.bfloat16 if "bfloat16" in session.precision else tf.float32
    peak, source = device_peak_flops(t.peak_flops, dtype)
    # CPU replicas of one worker share its cores: one peak per worker, not per replica.
    replicas = strategy.num_replicas_in_sync
    local_devices = strategy.extended.worker_devices
    devices = replicas // len(local_devices) if "CPU" in local_devices[0].upper() else replicas
    return peak * devices, source


def fit(session, model, train_at, val_ds, val_batches, vocabulary_size, tokens_per_example=None):
    """Run `model.fit` up to `train.steps` optimizer steps, validating every `train.eval_every`;
    a resumed run continues from `session.start_step` exactly as if it had never stopped.

    `train_at(step)` is the training data from `step` on (see `training_data`): every `fit`
    call starts a new iterator, so each call gets the data from the step it starts at.
    """
    config = session.config
    t, m = config.train, config.model
    tokens_per_example = tokens_per_example or m.seq_len
    flops_per_token = training_flops_per_token(
        m.num_layers, m.hidden_dim, m.intermediate_dim, vocabulary_size, m.seq_len
    )
    peak, peak_source = peak_flops_of(session)
    print(f"Model: {model.count_params():,} parameters, {flops_per_token / 1e6:.1f} MFLOPs per trained token; "
          f"{t.steps} steps of {t.batch_size} x {tokens_per_example} tokens; precision {session.precision}")
    print(f"Batch: global {t.batch_size} = {session.strategy.num_replicas_in_sync} replica(s) x "
          f"{t.grad_accum_steps} micro-batch(es) of {session.micro_batch}; "
          f"peak {peak / 1e12:.2f} TFLOP/s ({peak_source})")
    if session.chief:
        check_free_disk(session, model)
    with session.strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    callbacks, state = make_callbacks(session, t.batch_size * tokens_per_example, flops_per_token, peak)
    if session.resume_from:
        restore_for_resume(session, model, state)
    step = session.start_step
    if step >= t.steps:
        print(f"The run is already at step {step} of train.steps={t.steps}; raise train.steps to train longer")
        return model
    eval_every = min(t.eval_every, t.steps)
    epochs = math.ceil(t.steps / eval_every)
    fit_args = dict(validation_data=val_ds, validation_steps=val_batches, shuffle=False, callbacks=callbacks,
                    verbose=2 if os.environ.get("CI") else "auto")
    epoch = step // eval_every
    try:
        if step % eval_every:
            # Resumed inside an epoch: finish it first, so validations fall on the same steps.
            model.fit(train_at(step), initial_epoch=epoch, epochs=epoch + 1,
                      steps_per_epoch=eval_every - step % eval_every, **fit_args)
            epoch += 1
            if int(model.optimizer.iterations.numpy()) >= t.steps or stopped_early(callbacks):
                return model
        model.fit(train_at(epoch * eval_every), initial_epoch=epoch, epochs=epochs, steps_per_epoch=eval_every,
                  **fit_args)
    finally:
        # Keras skips `on_train_end` when an exception ends `fit`.
        for callback in callbacks:
            if hasattr(callback, "release_signals"):
                callback.release_signals()
    return model


def stopped_early(callbacks):
    return any(isinstance(c, keras.callbacks.EarlyStopping) and c.stopped_epoch > 0 for c in callbacks)


def save_config(session):
    if session.chief:
        config_lib.save_config(session.config, session.paths["config"])


def count_batches(dataset, limit):
    """How many batches (at most `limit`) a finite dataset yields."""
    return sum(1 for _ in dataset.take(limit))
