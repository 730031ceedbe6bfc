"""Low-rank adapters (LoRA) and int8 kernels for the projections of a Transformer.

`AdaptableDense` is a `Dense` whose output columns are named parts ("query", "key", "value" of
a fused projection; "attention_output"; "mlp"), each of which can take an adapter: the
layer computes `x @ W + b + (dropout(x) @ A) @ B * alpha / rank` on that part's columns, with
`W` frozen and only `A` and `B` trained. The adapter's product is added to the output rather
than merged into `W` on every step (as Keras' own `enable_lora` does): merging would build a
full-size matrix per projection per step and keep it for the backward pass. `merge_adapters`
folds the adapters into `W` for good (export), and `quantize_int8` stores `W` as int8 with one
scale per output column (a frozen base in a quarter of the memory).
"""

import contextlib

import keras
import tensorflow as tf
from keras import ops

from tfllm import compat
from tfllm.layers import int8


def adapter_scale(rank, alpha):
    """The factor on an adapter's product: `alpha / rank`, so that `alpha` sets its strength
    whatever the rank (LoRA's and PEFT's convention)."""
    return alpha / rank


class LowRankAdapter:
    """The trained update `dropout(x) @ a @ b * scale` on the output columns `[start, stop)`.

    Args:
        a: variable `(input_dim, rank)`.
        b: variable `(rank, stop - start)`, zeros at first: a new adapter changes nothing.
        start, stop: the output columns it updates.
        scale: `alpha / rank`.
        dropout: rate of the dropout on its input (LoRA's `lora_dropout`).
        seed: the `keras.random.SeedGenerator` of that dropout.
    """

    def __init__(self, a, b, start, stop, scale, dropout, seed):
        self.a, self.b = a, b
        self.start, self.stop = start, stop
        self.scale, self.dropout, self.seed = scale, dropout, seed

    @property
    def weights(self):
        return [self.a, self.b]

    def output(self, x, training=None):
        if training and self.dropout > 0:
            x = keras.random.dropout(x, self.dropout, seed=self.seed)
        return ops.matmul(ops.matmul(x, ops.cast(self.a, x.dtype)), ops.cast(self.b, x.dtype)) * self.scale

    def update(self):
        """The float32 change it makes to the kernel's columns, `a @ b * scale`."""
        return ops.matmul(ops.cast(self.a, "float32"), ops.cast(self.b, "float32")) * self.scale


@contextlib.contextmanager
def unlocked(layer):
    """A context in which a built layer may add (or drop) variables: its tracker is unlocked."""
    layer._tracker.unlock()
    try:
        yield
    finally:
        layer._tracker.lock()


def release(layer, name):
    """Drop the variable attribute `name` of `layer`: untracked from its weights, and
    TensorFlow's checkpoint dependency on it removed (which setting it to None would keep), so
    that the variable can be freed."""
    with unlocked(layer):
        compat.delete_variable(layer, name)


@keras.saving.register_keras_serializable(package="tfllm")
class AdaptableDense(keras.layers.Dense):
    """A `Dense` that can take low-rank adapters on named parts of its output and hold its
    kernel in int8.

    Args:
        units: int. Output columns.
        adapter_parts: dict of part name -> `(start, stop)` output columns, or None for all of
            them: the parts an adapter can target. Defaults to none.
        **kwargs: `Dense` arguments.

    Example:
    ```python
    qkv = AdaptableDense(96, adapter_parts={"query": (0, 32), "key": (32, 64), "value": (64, 96)})
    qkv.build((None, 32))
    qkv.add_adapters(("query", "value"), rank=4, alpha=8)  # W frozen, 2 adapters train
    ```
    """

    def __init__(self, units, adapter_parts=None, **kwargs):
        super().__init__(units, **kwargs)
        self.adapter_parts = {name: (tuple(columns) if columns is not None else None)
                              for name, columns in (adapter_parts or {}).items()}
        self._adapters = ()
        self.int8 = False

    @property
    def adapters(self):
        return self._adapters

    @property
    def kernel(self):
        """The float kernel (dequantized when the layer holds it in int8)."""
        if self.int8:
            return tf.transpose(int8.dequantize(self.kernel_int8, self.kernel_scale))
        return self._kernel

    def add_adapters(self, targets, rank, alpha, dropout=0.0, seed=None):
        """Freeze the kernel and bias and add an adapter for each of this layer's parts named in
        `targets`; returns how many it added."""
        names = [name for name in self.adapter_parts if name in targets]
        if not names:
            return 0
        for weight in self.weights:
            weight.trainable = False
        input_dim = self.kernel.shape[0]
        with unlocked(self):
            self._adapter_seed = keras.random.SeedGenerator(seed)
            adapters = []
            for name in names:
                start, stop = self.adapter_parts[name] or (0, self.units)
                # PEFT's initialization: A uniform in +-1/sqrt(fan_in), B zeros.
                bound = 1.0 / input_dim**0.5
                a = self.add_weight(name=f"lora_{name}_a", shape=(input_dim, rank), dtype="float32",
                                    initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed))
                b = self.add_weight(name=f"lora_{name}_b", shape=(rank, stop - start), dtype="float32",
                                    initializer="zeros")
                adapters.append(LowRankAdapter(a, b, start, stop, adapter_scale(rank, alpha), dropout,
                                               self._adapter_seed))
        self._adapters = tuple(sorted(adapters, key=lambda adapter: adapter.start))
        return len(names)

    def call(self, inputs, training=None):
        if self.int8:
            flat = tf.reshape(inputs, (-1, inputs.shape[-1]))
            x = int8.int8_matmul(flat, self.kernel_int8, self.kernel_scale)
            x = tf.reshape(x, tf.concat([tf.shape(inputs)[:-1], [self.units]], 0))
        else:
            x = ops.matmul(inputs, self._kernel)
        if self._adapters:
            x = x + self._adapter_output(inputs, training)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def _adapter_output(self, inputs, training):
        """The adapters' outputs laid out over all `units` columns (zeros where none adapts)."""
        pieces, column = [], 0
        for adapter in self._adapters:
            if adapter.start > column:
                pieces.append(self._zero_columns(inputs, adapter.start - column))
            pieces.append(adapter.output(inputs, training))
            column = adapter.stop
        if column < self.units:
            pieces.append(self._zero_columns(inputs, self.units - column))
        return pieces[0] if len(pieces) == 1 else ops.concatenate(pieces, axis=-1)

    @staticmethod
    def _zero_columns(inputs, width):
        return tf.zeros(tf.concat([tf.shape(inputs)[:-1], [width]], 0), inputs.dtype)

    def merge_adapters(self):
        """Fold the adapters into a float kernel and drop them: the layer computes what it did,
        with no adapter left to pay for."""
        if not self._adapters:
            return
        kernel = tf.convert_to_tensor(self.kernel, tf.float32)
        columns = [kernel[:, :self._adapters[0].start]]
        for adapter, following in zip(self._adapters, self._adapters[1:] + (None,)):
            columns.append(kernel[:, adapter.start:adapter.stop] + adapter.update())
            columns.append(kernel[:, adapter.stop:following.start if following else self.units])
        merged = tf.concat(columns, axis=1)
        for adapter in self._adapters:
            for weight in adapter.weights:
                self._untrack_variable(weight)
        self._adapters = ()
        if self.int8:
            self._drop_int8()
            with unlocked(self):
                self._kernel = self.add_weight(name="kernel", shape=merged.shape, initializer="zeros")
        self._kernel.assign(tf.cast(merged, self._kernel.dtype))

    def quantize_int8(self):
        """Hold the (frozen) kernel as int8 rows, one per output column, each with its scale
        (`tfllm.layers.int8`: the layout XLA reads fastest)."""
        if self.int8:
            return
        q, scale = int8.quantize(tf.transpose(self._kernel))
        with unlocked(self):
            self.kernel_int8 = self.add_weight(name="kernel_int8", shape=q.shape, dtype="int8",
                                               initializer="zeros", trainable=False)
            self.kernel_scale = self.add_weight(name="kernel_scale", shape=scale.shape, dtype="float32",
                                                initializer="ones", trainable=False)
        self.kernel_int8.assign(q)
        self.kernel_scale.assign(scale)
        release(self, "_kernel")
        self.int8 = True

    def _drop_int8(self):
        for name in ("kernel_int8", "kernel_scale"):
            release(self, name)
        self.int8 = False

    def get_config(self):
        config = super().get_config()
        config["adapter_parts"] = {name: (list(columns) if columns else None)
                                   for name, columns in self.adapter_parts.items()}
        return config
