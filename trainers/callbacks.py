"""The callbacks of a training run: metrics and logs, checkpoints, early stopping, stops."""

import sys

import tensorflow as tf

from tfllm.callbacks import (
    Checkpointer, MetricsLogger, ProgressLines, ResumableEarlyStopping, StopOnNonFiniteLoss, StopTogetherOnSignal,
    early_stopping_state, fit_verbosity,
)
from tfllm.tasks import TASKS
from tfllm.trainers.resume import run_fingerprint


def monitored_metric(config):
    """(name, mode) of the validation metric that picks the best checkpoint and stops early."""
    if config.train.monitor != "auto":
        name = config.train.monitor
        return name, "min" if "loss" in name else "max"
    return TASKS[config.model.task].monitor


def make_callbacks(session, tokens_per_step, flops_per_token, peak_flops):
    """`(callbacks, state, verbose)`: the chief writes metrics, TensorBoard logs and checkpoints;
    every worker stops on time, on a non-finite loss and early. `state` maps names to the
    callbacks' own trackables, which every training checkpoint holds; `verbose` is `fit`'s."""
    config, run, chief = session.config, session.run, session.chief
    t = config.train
    monitor, mode = monitored_metric(config)
    logger = MetricsLogger(
        run.metrics_path if chief else None, run.logs_dir if chief else None, tokens_per_step, t.log_every,
        t.steps, flops_per_token=flops_per_token if chief else 0.0, peak_flops=peak_flops,
    )
    state = {"logger": logger.state, "early_stopping": early_stopping_state()}
    # Callbacks run in list order: a non-finite loss stops the run before anything is written
    # from its step (metrics included: a NaN record, invalid JSON, would be the last line of
    # metrics.jsonl), and the logger sums the step's loss and early stopping counts the
    # evaluation before a checkpoint saves them.
    resume_hint = f" (e.g. tfllm train --run-dir {run.path} train.learning_rate={t.learning_rate / 3:.3g})"
    callbacks = [StopOnNonFiniteLoss(run.checkpoints_dir, resume_hint), logger]
    verbose = fit_verbosity(sys.stdout)
    if verbose == 0 and chief:
        # Not a terminal: one line every log_every steps instead of a progress bar's updates.
        callbacks.append(ProgressLines(t.log_every, t.steps, tokens_per_step=tokens_per_step))
    if t.early_stopping_patience:
        # Every worker stops at the same evaluation: they all see the same validation numbers.
        callbacks.append(ResumableEarlyStopping(
            state["early_stopping"], t.steps, lambda: session.resume.best,
            monitor=monitor, mode=mode, patience=t.early_stopping_patience, key_file=t.encrypt_key_file,
        ))
    # Several workers must stop after the same step when any one of them gets a signal.
    multi_worker = isinstance(session.strategy, tf.distribute.MultiWorkerMirroredStrategy)
    checkpointer = None
    if chief:
        checkpointer = Checkpointer(
            run.checkpoints_dir, keep=t.keep_checkpoints, monitor=monitor, mode=mode, every=t.checkpoint_every,
            extra=state, fingerprint=run_fingerprint(config, run), handle_signals=not multi_worker,
            base=session.base if t.lora_rank else None, key_file=t.encrypt_key_file,
        )
    if multi_worker:
        callbacks.append(StopTogetherOnSignal(session.strategy, checkpointer))
    if checkpointer is not None:
        callbacks.append(checkpointer)
    return callbacks, state, verbose
