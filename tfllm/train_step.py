"""A `train_step` that is correct under every `tf.distribute` strategy, with gradient accumulation.

Keras's own `train_step` is right on one device, but under `MirroredStrategy` its optimizer clips
each replica's partial gradient, its sparse-gradient Adam miscounts repeated embedding rows, and
its `gradient_accumulation_steps` fails (all three in `tfllm/compat.py`). This mixin splits the
batch each replica receives into N micro-batches inside one `train_step`, averages their
gradients, fixes both of the above, and applies the optimizer once, unconditionally: clipping sees
the accumulated global gradient, and the learning-rate schedule and `optimizer.iterations`
advance once per optimizer step. With equal-weight micro-batches this is exactly one step on the
whole batch.
"""

import keras
import tensorflow as tf

from tfllm import compat


class DistributedTrainStep:
    """Mixin for a `keras.Model`: `compile(..., grad_accum_steps=N)` accumulates N micro-batches.

    The loop over micro-batches is unrolled (N is small and static), so it compiles under XLA
    and needs no control flow around the optimizer. Metrics and the loss tracker see every
    micro-batch, so the reported loss is the mean over the whole batch.

    Example:
    >>> class MyModel(DistributedTrainStep, keras.Model): ...
    >>> model.compile(optimizer="adamw", loss=..., grad_accum_steps=4)
    """

    grad_accum_steps = 1

    def compile(self, *args, grad_accum_steps=1, **kwargs):
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1. Received: grad_accum_steps={grad_accum_steps}")
        self.grad_accum_steps = grad_accum_steps
        super().compile(*args, **kwargs)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_weights
        # Keras scales the loss by 1 / replicas so that summing gradients across replicas gives
        # the global mean; the tracker gets it unscaled, as in Keras's own train_step.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        total = None
        for i in range(self.grad_accum_steps):
            mx, my, msw = tf.nest.map_structure(lambda t: self._micro_batch(t, i), (x, y, sample_weight))
            with tf.GradientTape() as tape:
                y_pred = self(mx, training=True)
                loss = self.compute_loss(mx, my, y_pred, msw, training=True)
                batch = tf.shape(tf.nest.flatten(mx)[0])[0]
                self._loss_tracker.update_state(loss * replicas, sample_weight=batch)
                scaled = self.optimizer.scale_loss(loss)
            grads = compat.sum_repeated_slices(tape.gradient(scaled, weights))
            if self.grad_accum_steps == 1:
                total = grads
            else:
                grads = [tf.convert_to_tensor(g) / self.grad_accum_steps for g in grads]
                total = grads if total is None else [t + g for t, g in zip(total, grads)]
            self.compute_metrics(mx, my, y_pred, sample_weight=msw)
        total = compat.clip_after_all_reduce(total, self.optimizer)
        self.optimizer.apply_gradients(zip(total, weights))
        return compat.reducible_metrics(self.get_metrics_result(), self.distribute_strategy)

    def test_step(self, data):
        return compat.reducible_metrics(super().test_step(data), self.distribute_strategy)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras's symbolic build fails under multi-worker (tfllm/compat.py, workaround 4);
        # building at trace time is what Keras itself does without a strategy. The optimizer
        # needs no data: build it here, in the scope, so that callbacks (checkpoints) find its
        # variables before the first step, as after a symbolic build.
        if compat.is_multi_worker(self.distribute_strategy):
            if self.optimizer is not None and not self.optimizer.built:
                with self.distribute_strategy.scope():
                    self.optimizer.build(self.trainable_variables)
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _micro_batch(self, tensor, index):
        if tensor is None or self.grad_accum_steps == 1:
            return tensor
        size = tensor.shape[0]
        if size is not None and size % self.grad_accum_steps:
            raise ValueError(
                f"the per-replica batch ({size}) must divide into grad_accum_steps="
                f"{self.grad_accum_steps} micro-batches"
            )
        if size is None:  # a dynamic batch: check at run time (XLA drops the check; use static shapes)
            tf.debugging.assert_equal(
                tf.shape(tensor)[0] % self.grad_accum_steps, 0,
                message=f"the per-replica batch must divide into grad_accum_steps={self.grad_accum_steps}",
            )
        step = tf.shape(tensor)[0] // self.grad_accum_steps
        return tensor[index * step : (index + 1) * step]
