"""Compile and `model.fit` a run: the same loop for every task, resumed runs included."""

import math
import shutil

import keras

from tfllm.errors import UserError
from tfllm.lora import checkpointed_weights, count_parameters, parameter_counts
from tfllm.losses import SmoothedSparseCrossentropy
from tfllm.optimizers import adamw
from tfllm.schedules import WarmupCosineDecay
from tfllm.tasks import TASKS
from tfllm.trainers.callbacks import make_callbacks


def compile_model(session, model):
    """`model.compile` with the run's optimizer and step settings; call inside the strategy scope."""
    t = session.config.train
    schedule = WarmupCosineDecay(t.learning_rate, t.min_learning_rate, t.warmup_steps, t.steps)
    loss = "auto"
    if t.label_smoothing:
        loss = SmoothedSparseCrossentropy(t.label_smoothing, reduction=model.default_loss().reduction)
    model.compile(
        optimizer=adamw(schedule, t.weight_decay, t.beta1, t.beta2, t.clip_norm), loss=loss,
        jit_compile=session.jit_compile, steps_per_execution=t.steps_per_execution,
        grad_accum_steps=t.grad_accum_steps,
    )


def fit(session, model, data, vocabulary_size):
    """Run `model.fit` up to `train.steps` optimizer steps, validating every `train.eval_every`;
    a resumed run continues from `session.resume.step` exactly as if it had never stopped.

    `data` is a `TrainingData`: `data.train_at(step)` is the training data from `step` on, so
    each `fit` call gets the data from the step it starts at.
    """
    config = session.config
    t, m = config.train, config.model
    flops_per_token = TASKS[m.task].flops_per_token(config, vocabulary_size)
    peak = session.peak_flops
    trainable, frozen = parameter_counts(model)
    print(f"Model: {trainable + frozen:,} parameters, {trainable:,} trained and {frozen:,} frozen; "
          f"{flops_per_token / 1e6:.1f} MFLOPs per trained token; "
          f"{t.steps} steps of {t.batch_size} x {m.seq_len} tokens; precision {session.precision}")
    print(f"Batch: global {t.batch_size} = {session.strategy.num_replicas_in_sync} replica(s) x "
          f"{t.grad_accum_steps} micro-batch(es) of {session.micro_batch}; "
          f"peak {peak / 1e12:.2f} TFLOP/s ({session.peak_source})")
    if session.chief:
        check_free_disk(session, model)
    with session.strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    callbacks, state, verbose = make_callbacks(session, t.batch_size * m.seq_len, flops_per_token, peak)
    if session.resume.checkpoint:
        session.resume.restore(model, state, session.run, config, session.chief)
    step = session.resume.step
    if step >= t.steps:
        print(f"The run is already at step {step} of train.steps={t.steps}; raise train.steps to train longer")
        return model
    eval_every = min(t.eval_every, t.steps)
    epochs = math.ceil(t.steps / eval_every)
    fit_args = dict(validation_data=data.val_ds, validation_steps=data.val_batches, shuffle=False,
                    callbacks=callbacks, verbose=verbose)
    epoch = step // eval_every
    try:
        if step % eval_every:
            # Resumed inside an epoch: finish it first, so validations fall on the same steps.
            model.fit(data.train_at(step), initial_epoch=epoch, epochs=epoch + 1,
                      steps_per_epoch=eval_every - step % eval_every, **fit_args)
            epoch += 1
            if int(model.optimizer.iterations.numpy()) >= t.steps or stopped_early(callbacks):
                return model
        model.fit(data.train_at(epoch * eval_every), initial_epoch=epoch, epochs=epochs,
                  steps_per_epoch=eval_every, **fit_args)
    finally:
        # Keras skips `on_train_end` when an exception ends `fit`.
        for callback in callbacks:
            if hasattr(callback, "release_signals"):
                callback.release_signals()
    return model


def stopped_early(callbacks):
    return any(isinstance(c, keras.callbacks.EarlyStopping) and c.stopped_epoch > 0 for c in callbacks)


def check_free_disk(session, model):
    """Refuse to start when the checkpoints the config keeps cannot fit on the run's disk."""
    t, run_dir = session.config.train, session.run.path
    # What trains (all of it, or a LoRA run's adapters) plus AdamW's two moments, float32; latest/ keeps K, best/ one, and one in flight.
    per_checkpoint = 4 * 3 * count_parameters(checkpointed_weights(model))
    needed = per_checkpoint * (t.keep_checkpoints + 2)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise UserError(
            f"{run_dir} has {free / 2**20:.0f} MiB free, the {t.keep_checkpoints + 2} checkpoints of "
            f"{per_checkpoint / 2**20:.0f} MiB this run keeps need {needed / 2**20:.0f} MiB; free disk space, "
            "lower train.keep_checkpoints or choose another --run-dir"
        )
