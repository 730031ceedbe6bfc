"""Workarounds for TensorFlow/Keras bugs, each with its upstream reference.

Every workaround has a test in tests/test_compat.py that reproduces the upstream bug with
Keras alone; that test fails once Keras fixes the bug, which is the signal to delete the
workaround here.

1. Sparse gradients with repeated indices (keras 3.15, TF backend). `keras.ops.square` of a
   `tf.IndexedSlices` squares each slice before repeated indices are summed, so Adam's second
   moment for an embedding row that appears k times in a batch gets sum(g_i^2) instead of
   (sum g_i)^2. Related upstream report: keras-team/keras#21069 (IndexedSlices under
   MirroredStrategy). Workaround: `sum_repeated_slices` before the optimizer sees them. Across
   replicas the all-reduce of `tf.IndexedSlices` concatenates the replicas' slices, so a row two
   replicas touch repeats again after it: `dense_across_replicas` all-reduces such gradients as
   dense tensors (rows summed) when there are several replicas.
2. `global_clipnorm` under `MirroredStrategy` (keras 3.15). `BaseOptimizer.apply` clips before
   `_backend_update_step` all-reduces, so each replica clips its own partial gradient and the
   result depends on the number of replicas. Workaround: `clip_after_all_reduce` all-reduces,
   clips the global gradient and hands each replica an equal share; the optimizer's own clip
   is then a no-op.
3. `optimizer(gradient_accumulation_steps=N)` under `MirroredStrategy` fails with a
   `merge_call` inside `cond` error (keras-team/keras#17429, keras-team/tf-keras#107).
   Workaround: `tfllm.train_step.DistributedTrainStep` accumulates micro-batches inside one
   `train_step` and applies once.
4. `model.fit` under `MultiWorkerMirroredStrategy` (keras-team/keras#20585, #20329): before the
   first step Keras reduces a data batch with `strategy.reduce("MEAN", batch, axis=None)`, which
   the collective strategy cannot do for per-replica values, and after every step it reduces each
   scalar metric with `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar.
   Workaround: `DistributedTrainStep` skips that symbolic build under multi-worker (building at
   trace time, as Keras does without a strategy) and returns metrics of shape (1,), whose
   axis-0 mean across replicas is the global mean.
5. tensorflow-text's `SentencepieceTokenizer` keeps its model in a resource owned by the eager
   kernel that created it (tensorflow/text#570; upstream tracks it as b/318839908 in its source).
   `tf.random.set_seed` (and so `keras.utils.set_random_seed`) clears the eager kernel cache,
   which deletes that resource: every later `tokenize` fails with "Resource
   .../SentencepieceOp/... does not exist". Workaround: `sentencepiece_tokenizer` creates the
   resource under a `shared_name` taken from the model's hash, so the resource manager, not the
   kernel, owns it; two tokenizers share one resource only when their models are identical.
6. `Layer.__delattr__` (keras 3.15; added by keras-team/keras#19954) runs a full `gc.collect()`
   for every variable it deletes. Quantizing a model to int8 drops a variable per matrix, and
   each collection scans every object the process holds: 0.2 s in a fresh process, about 1 s in
   one that has traced a few models, for every matrix. Workaround: `delete_variable` untracks the
   variable as Keras does and deletes the attribute through TensorFlow's `AutoTrackable`, which
   also drops the checkpoint dependency; reference counting frees the variable (it is in no
   cycle).
"""

import hashlib

import keras
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.python.ops import sentencepiece_tokenizer as tf_text_sentencepiece


def sum_repeated_slices(gradients):
    """Gradients with every `tf.IndexedSlices` reduced to unique indices (workaround 1)."""
    out = []
    for g in gradients:
        if isinstance(g, tf.IndexedSlices):
            unique, position = tf.unique(g.indices)
            values = tf.math.unsorted_segment_sum(g.values, position, tf.shape(unique)[0])
            g = tf.IndexedSlices(values, unique, g.dense_shape)
        out.append(g)
    return out


def dense_across_replicas(gradients):
    """Gradients with every `tf.IndexedSlices` made dense when several replicas will all-reduce
    them (workaround 1): a sum of dense rows, not a concatenation of repeated ones."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return gradients
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]


def clip_after_all_reduce(gradients, optimizer):
    """Clip the all-reduced gradient by `optimizer.global_clipnorm` (workaround 2).

    Returns per-replica gradients whose sum over replicas is the clipped global gradient, so
    the optimizer's own all-reduce (a sum) produces it. Without a replica context or with one
    replica, gradients are returned unchanged and the optimizer clips correctly by itself.
    A loss-scaling optimizer's gradients are scaled; the norm is measured unscaled.
    """
    clip = getattr(optimizer, "global_clipnorm", None)
    if clip is None and hasattr(optimizer, "inner_optimizer"):
        clip = optimizer.inner_optimizer.global_clipnorm
    context = tf.distribute.get_replica_context()
    if not clip or context is None or context.num_replicas_in_sync == 1:
        return gradients
    replicas = context.num_replicas_in_sync
    dense = [tf.convert_to_tensor(g) for g in gradients]
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, dense)
    norm = tf.linalg.global_norm(summed)
    if hasattr(optimizer, "inner_optimizer"):  # LossScaleOptimizer: grads are scaled
        norm = norm / tf.cast(optimizer.scale_loss(tf.constant(1.0)), norm.dtype)
    factor = tf.minimum(1.0, clip / tf.maximum(norm, 1e-30))
    return [g * tf.cast(factor / replicas, g.dtype) for g in summed]


def is_multi_worker(strategy):
    """True for the collective multi-worker strategy that workaround 4 is about."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def reducible_metrics(logs, strategy):
    """Metrics shaped (1,) under multi-worker, so Keras's axis-0 mean reduction works (workaround 4)."""
    if not is_multi_worker(strategy):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


class _SharedSentencepieceModel(tf_text_sentencepiece._SentencepieceModelResource):
    """The SentencePiece model resource under a name derived from the model (workaround 5)."""

    def _create_resource(self):
        shared_name = "sentencepiece_" + hashlib.sha256(self._model).hexdigest()[:32]
        with tf.name_scope(self._name or "SentenceTokenizerInitializer"):
            return tf_text_sentencepiece.gen_sentencepiece_tokenizer.sentencepiece_op(
                model=self._model, shared_name=shared_name
            )


def sentencepiece_tokenizer(model_proto: bytes) -> tf_text.SentencepieceTokenizer:
    """A tensorflow-text SentencePiece tokenizer (int32 ids) that survives `tf.random.set_seed`."""
    tokenizer = tf_text.SentencepieceTokenizer(model=model_proto, out_type=tf.int32)
    tokenizer._model_resource = _SharedSentencepieceModel(model_proto, None)
    return tokenizer


def delete_variable(layer, name):
    """`delattr(layer, name)` for an attribute holding a variable, without Keras's full garbage
    collection (workaround 6). The layer's tracker must be unlocked."""
    layer._untrack_variable(getattr(layer, name))
    super(keras.layers.Layer, layer).__delattr__(name)
