"""Per-step training metrics to the console, `metrics.jsonl` and TensorBoard."""

import json
import math
import time

import keras
import tensorflow as tf


class MetricsLogger(keras.callbacks.Callback):
    """Logs loss, learning rate and throughput every `log_every` optimizer steps.

    Keras reports `loss` as a running mean since the start of the epoch; this callback turns it
    back into the mean over the last logging interval, so each record says how the model does
    now, not on average since the last validation. Every validation (Keras epoch end) adds
    `val_loss`, `val_perplexity` and `val_accuracy` to the record of that step. Records go to `metrics.jsonl`
    (one JSON object per line, appended and flushed at once) and to TensorBoard scalars
    `train/loss`, `train/learning_rate`, `train/tokens_per_sec`, `train/mfu`, `val/loss`,
    `val/perplexity`, `val/accuracy`.

    Args:
        metrics_path: str. Path of `metrics.jsonl`, or None to skip it.
        log_dir: str. TensorBoard log directory, or None to skip it.
        tokens_per_step: int. Tokens in one optimizer step (global batch x sequence length).
        log_every: int. Optimizer steps between records.
        total_steps: int. Training stops after this many optimizer steps.
        flops_per_token: float. Training FLOPs per token (`tfllm.flops`), for `mfu`; 0 for none.
        peak_flops: float. Peak FLOP/s of all devices together, for `mfu`.
    """

    def __init__(self, metrics_path, log_dir, tokens_per_step, log_every, total_steps,
                 flops_per_token=0.0, peak_flops=0.0):
        super().__init__()
        self.metrics_path = metrics_path
        self.log_dir = log_dir
        self.tokens_per_step = tokens_per_step
        self.log_every = log_every
        self.total_steps = total_steps
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._writer = tf.summary.create_file_writer(log_dir) if log_dir else None
        # The loss summed over the steps since the last record, and their count: checkpointed with
        # the run (`state`), so the first record after a resume covers the same steps as it would
        # have without the interruption.
        self.state = tf.Module()
        self.state.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.state.steps = tf.Variable(0, dtype=tf.int64, trainable=False)

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def _learning_rate(self):
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_begin(self, logs=None):
        self._mark_time, self._mark_step = time.perf_counter(), self._step()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_loss_sum, self._epoch_batches = 0.0, 0
        # Throughput counts training only: validation and checkpoints ran since the last mark.
        self._mark_time, self._pending = time.perf_counter(), None

    def on_train_batch_end(self, batch, logs=None):
        # Keras's `loss` is the mean of the epoch's batches so far; undo the running mean.
        loss_sum = float(logs["loss"]) * (batch + 1)
        self.state.loss_sum.assign_add(loss_sum - self._epoch_loss_sum)
        self.state.steps.assign_add(batch + 1 - self._epoch_batches)
        self._epoch_loss_sum, self._epoch_batches = loss_sum, batch + 1
        step = self._step()
        if step >= self.total_steps:
            self.model.stop_training = True
        end_of_epoch = batch + 1 >= self.params.get("steps", math.inf) or step >= self.total_steps
        if end_of_epoch:
            # Written at epoch end, together with the validation that follows.
            self._pending = self._train_record(batch, logs) if step > self._mark_step else None
        elif step % self.log_every == 0:
            self._write(self._train_record(batch, logs))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        record = self._pending or {}
        record["step"] = self._step()
        if "val_loss" in logs:
            record["val_loss"] = float(logs["val_loss"])
            record["val_perplexity"] = math.exp(min(record["val_loss"], 80.0))
        if "val_accuracy" in logs:
            # Token accuracy for language models (masked tokens only for masked LM), example
            # accuracy for classifiers.
            record["val_accuracy"] = float(logs["val_accuracy"])
        self._write(record)

    def _train_record(self, batch, logs):
        batches = int(self.state.steps.numpy())
        interval_loss = float(self.state.loss_sum.numpy()) / max(batches, 1)
        self.state.loss_sum.assign(0.0)
        self.state.steps.assign(0)
        now, step = time.perf_counter(), self._step()
        elapsed = max(now - self._mark_time, 1e-9)
        tokens_per_sec = (step - self._mark_step) * self.tokens_per_step / elapsed
        self._mark_time, self._mark_step = now, step
        record = {
            "step": step,
            "loss": interval_loss,
            "learning_rate": self._learning_rate(),
            "tokens_per_sec": tokens_per_sec,
            "step_time": elapsed / max(batches, 1),
        }
        if self.flops_per_token and self.peak_flops:
            record["mfu"] = tokens_per_sec * self.flops_per_token / self.peak_flops
        return record

    def _write(self, record):
        if self.metrics_path:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self._writer is None:
            return
        tags = {"loss": "train/loss", "learning_rate": "train/learning_rate",
                "tokens_per_sec": "train/tokens_per_sec", "mfu": "train/mfu", "val_loss": "val/loss",
                "val_perplexity": "val/perplexity", "val_accuracy": "val/accuracy"}
        with self._writer.as_default(step=record["step"]):
            for key, tag in tags.items():
                if key in record:
                    tf.summary.scalar(tag, record[key])
        self._writer.flush()
