"""A `train_step` that is correct under every `tf.distribute` strategy, with gradient accumulation.

Keras's own `train_step` is right on one device, but under `MirroredStrategy` its optimizer clips
each replica's partial gradient, its sparse-gradient Adam miscounts repeated embedding rows, and
its `gradient_accumulation_steps` fails (all three in `tfllm/compat.py`). This mixin splits the
batch each replica receives into N micro-batches inside one `train_step`, sums their
gradients of the global token-weighted mean loss, fixes both of the above, and applies the
optimizer once, unconditionally: clipping sees the accumulated global gradient, and the
learning-rate schedule and `optimizer.iterations` advance once per optimizer step. Whatever the
number of weighted tokens in each micro-batch, replica and worker, this is exactly one step on
the whole batch.
"""

import keras
import tensorflow as tf

from tfllm import compat


# A global batch without a single weighted token (every position masked out) has no loss to
# normalise; its gradient is zero either way.
_TINY = 1e-12


def _sum_over_replicas(value):
    """`value` summed over every replica of the strategy in scope (one all-reduce)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


class DistributedTrainStep:
    """Mixin for a `keras.Model`: `compile(..., grad_accum_steps=N)` accumulates N micro-batches.

    The loop over micro-batches is unrolled (N is small and static), so it compiles under XLA
    and needs no control flow around the optimizer. Metrics and the loss tracker see every
    micro-batch, so the reported loss is the mean over every weighted token of the global batch,
    the loss whose gradient the step applies.

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
        micro_batches = [
            tf.nest.map_structure(lambda t: self._micro_batch(t, i), (x, y, sample_weight))
            for i in range(self.grad_accum_steps)
        ]
        # The step's loss is the mean over every weighted token of the global batch: each
        # micro-batch contributes the sum of its weighted token losses divided by the weight of
        # the whole global batch (every micro-batch of every replica and worker). A mean per
        # micro-batch averaged with equal weight would count a token of a micro-batch with few
        # weighted tokens more than one of a full micro-batch.
        token_weights = [self._token_weight(my, msw) for _, my, msw in micro_batches]
        global_weight = _sum_over_replicas(tf.add_n(token_weights))
        # Keras divides each replica's loss by the number of replicas (so that summing gradients
        # across replicas gives the global mean); undone here, the normalisation being ours.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        total, losses = None, []
        for (mx, my, msw), token_weight in zip(micro_batches, token_weights):
            with tf.GradientTape() as tape:
                y_pred = self(mx, training=True)
                mean = self.compute_loss(mx, my, y_pred, msw, training=True) * replicas
                loss = mean * token_weight / tf.maximum(global_weight, _TINY)
                scaled = self.optimizer.scale_loss(loss)
            losses.append(loss)
            grads = compat.sum_repeated_slices(tape.gradient(scaled, weights))
            total = grads if total is None else [tf.convert_to_tensor(t) + tf.convert_to_tensor(g)
                                                 for t, g in zip(total, grads)]
            self.compute_metrics(mx, my, y_pred, sample_weight=msw)
        # Keras reports the mean of the replicas' trackers: each replica's share of the step's
        # global mean, times the replicas, averages to that global mean.
        self._loss_tracker.update_state(tf.add_n(losses) * replicas)
        total = compat.clip_after_all_reduce(compat.dense_across_replicas(total), self.optimizer)
        self.optimizer.apply_gradients(zip(total, weights))
        return compat.reducible_metrics(self.get_metrics_result(), self.distribute_strategy)

    def _token_weight(self, y, sample_weight):
        """The divisor of the compiled loss's mean over one micro-batch: the sum of the sample
        weights for `mean_with_sample_weight` (tfllm's task models), else the number of loss
        values (Keras's `sum_over_batch_size`). float32 scalar."""
        y = tf.nest.flatten(y)[0]
        if sample_weight is None or getattr(self.loss, "reduction", None) != "mean_with_sample_weight":
            return tf.cast(tf.size(y), tf.float32)
        sample_weight = tf.cast(sample_weight, tf.float32)
        # A per-example weight of per-token targets weighs each of the example's tokens.
        while len(sample_weight.shape) < len(y.shape):
            sample_weight = sample_weight[..., None]
        return tf.reduce_sum(tf.broadcast_to(sample_weight, tf.shape(y)))

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
