"""The loss of an optimizer step is the mean over every weighted token of the global batch.

Each task model trains 3 steps on batches whose micro-batches and replica shares hold very
different numbers of weighted tokens (padding, masked positions, prompt tokens, class weights),
with plain SGD and no clipping (a wrong gradient scale moves the weights by that scale). 2
micro-batches under 2 mirrored replicas must give the weights and the loss of one device and one
batch, and so must 4 micro-batches, 2 replicas and 2 worker processes for the runs that check the
code every task shares (`EVERY_SETUP`). A per-micro-batch mean averaged with equal weight fails
here: it counts a token of a sparse micro-batch several times more than one of a dense one.

AdamW is nearly blind to the gradient's scale, so it trains one task only, for what is its own:
its moments, its weight decay and its global-norm clip (hit at every step) must see the
accumulated gradient of the global batch, once per step. That task is the classifier, the only
one whose gradient holds sparse rows repeated within a batch (the others tie their embedding to
the output layer, or freeze it), which Adam must see summed.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import distributed_testing
from tests.trainers.worker_testing import WITHOUT_GRAPPLER, LocalWorkers
from tests.layer_testing import random_ids
from tfllm import lora
from tfllm.data.labeled import balanced_class_weights
from tfllm.models import CausalLM, Classifier, GPTBackbone, MaskedLM
from tfllm.models.seq2seq_backbone import Seq2SeqBackbone
from tfllm.models.seq2seq_lm import Seq2SeqLM
from tfllm.optimizers import adamw
from tfllm.precision import global_policy

VOCAB, SEQ, BATCH, STEPS = 24, 8, 8, 3
# Weighted positions per row, by row of a batch: micro-batches of 2 rows hold 2, 6, 12 and 16.
WEIGHTED = [1, 1, 3, 3, 6, 6, 8, 8]


def backbone(causal):
    return GPTBackbone(vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                       max_sequence_length=SEQ, causal=causal)


def token_data(first_weighted):
    """(x, y, sample_weight) batches; `first_weighted(row, count)` puts the row's `count`
    weighted positions (at its end for prompts and padding, at random for masks)."""
    ids = random_ids((STEPS * BATCH, SEQ + 1), VOCAB)
    weights = np.zeros((STEPS * BATCH, SEQ), "float32")
    for row in range(STEPS * BATCH):
        weights[row, first_weighted(row, WEIGHTED[row % BATCH])] = 1.0
    padding = (weights > 0).astype("int32") if first_weighted is padded else np.ones_like(weights, "int32")
    x = {"token_ids": ids[:, :-1] * padding, "padding_mask": padding}
    return tf.data.Dataset.from_tensor_slices((x, ids[:, 1:], weights)).batch(BATCH)


def padded(row, count):
    return slice(0, count)  # the row's tokens first, padding after them


def completion(row, count):
    return slice(SEQ - count, SEQ)  # the prompt first (weight 0), the completion after it


def masked(row, count):
    return np.random.default_rng(row).choice(SEQ, count, replace=False)


def class_data():
    """Texts of 3 classes in proportions 6:1:1, weighted `balanced`; rows sorted so that the
    micro-batches hold very different class weights."""
    labels = np.array(([0] * 6 + [1, 2]) * STEPS, "int32")
    weights = balanced_class_weights(labels.tolist(), 3)
    sample_weight = np.array([weights[int(label)] for label in labels], "float32")
    ids = random_ids((STEPS * BATCH, SEQ), VOCAB)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    return tf.data.Dataset.from_tensor_slices((x, labels, sample_weight)).batch(BATCH)


def seq2seq_data():
    """Sources of 5 tokens and targets padded after their weighted tokens (`padded`)."""
    batches = token_data(padded)

    def with_sources(x, y, weights):
        sources = tf.reshape(tf.range(tf.size(y)) % (VOCAB - 1) + 1, tf.shape(y))[:, :5]
        return {"encoder_token_ids": sources, "encoder_padding_mask": tf.ones_like(sources),
                "decoder_token_ids": x["token_ids"], "decoder_padding_mask": x["padding_mask"]}, y, weights

    return batches.map(with_sources)


def seq2seq():
    return Seq2SeqLM(Seq2SeqBackbone(vocabulary_size=VOCAB, num_encoder_layers=1, num_decoder_layers=1, num_heads=2,
                                     hidden_dim=8, intermediate_dim=16, max_source_length=SEQ,
                                     max_sequence_length=SEQ))


def adapted(model, alpha=4.0, **options):
    """`model` with its backbone frozen under rank-2 adapters, as `train.lora_rank` trains it."""
    lora.adapt(model.backbone, rank=2, alpha=alpha, **options)
    return model


TASKS = {
    "causal_lm_padded": (lambda: CausalLM(backbone(True)), lambda: token_data(padded)),
    # Adapters on every projection and the embedding (scaled down: its B starts at unit scale,
    # and SGD at 0.5 would grow its weights to where float32 rounding passes 1e-5); and adapters
    # on an int8 backbone under a new head.
    "sft_lora": (lambda: adapted(CausalLM(backbone(True)), alpha=0.5, targets=lora.TARGETS),
                 lambda: token_data(completion)),
    "classify_lora_int8": (lambda: adapted(Classifier(backbone(False), num_classes=3), quantize="int8"),
                           class_data),
    "sft_completions": (lambda: CausalLM(backbone(True)), lambda: token_data(completion)),
    "masked_lm": (lambda: MaskedLM(backbone(False)), lambda: token_data(masked)),
    "classify_balanced": (lambda: Classifier(backbone(False), num_classes=3), class_data),
    "seq2seq_padded": (seq2seq, seq2seq_data),
}
# Far below the AdamW task's first gradient norm (asserted below), so every step is clipped.
CLIP_NORM = 0.05
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.5),
    # As the trainer builds it: biases and norm parameters not decayed.
    "adamw": lambda: adamw(1e-2, weight_decay=0.1, beta_1=0.9, beta_2=0.95, global_clipnorm=CLIP_NORM),
}
# AdamW on the other tasks would add nothing that SGD on them and AdamW here do not check: their
# gradients are dense, and the optimizer's code is the same for every task. (Clipping all-reduces
# the gradients as dense tensors, so the dense all-reduce of sparse rows without clipping is
# tests/test_train_step.py's.)
ADAMW_TASK = "classify_balanced"


# The masked LM (a random number of masked tokens per row, the hardest weighting) trains through
# compiled functions, as the trainer does; the other tasks run eagerly, which executes the same
# `train_step` code (the same all-reduces and normalisation) without a trace per model, about half
# the CPU time for 3 steps, on one device and under 2 mirrored replicas alike.
COMPILED_TASKS = ("masked_lm",)


def builder(task, optimizer, eager=None, jit_compile=False):
    eager = task not in COMPILED_TASKS if eager is None else eager

    def build(strategy, grad_accum_steps):
        with strategy.scope():
            keras.utils.set_random_seed(3)
            model = TASKS[task][0]()
            model.compile(optimizer=OPTIMIZERS[optimizer](), jit_compile=jit_compile,
                          grad_accum_steps=grad_accum_steps, run_eagerly=eager)
        return model

    return build


@pytest.fixture(scope="module")
def references(one_device_strategy):
    cache = {}

    def reference(task, optimizer):
        if (task, optimizer) not in cache:
            cache[task, optimizer] = distributed_testing.train(
                builder(task, optimizer), TASKS[task][1](), one_device_strategy, 1)
        return cache[task, optimizer]

    return reference


@pytest.mark.parametrize("task", sorted(TASKS))
def test_the_weighted_tokens_differ_between_micro_batches_and_the_weights_move(task, references,
                                                                               one_device_strategy):
    (_, _, sample_weight), = TASKS[task][1]().take(1)
    per_micro_batch = tf.reduce_sum(tf.reshape(sample_weight, (4, -1)), axis=1).numpy()
    assert per_micro_batch.max() > 2 * per_micro_batch.min(), per_micro_batch
    weights, _ = references(task, "sgd")
    assert distributed_testing.max_change(weights, builder(task, "sgd")(one_device_strategy, 1)) > 1e-3


def test_the_adamw_task_clips_every_step_and_its_embedding_gradient_repeats_rows(references, one_device_strategy):
    model = builder(ADAMW_TASK, "adamw")(one_device_strategy, 1)
    (x, y, sample_weight), = TASKS[ADAMW_TASK][1]().take(1)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, y, model(x, training=True), sample_weight)
    gradients = tape.gradient(loss, model.trainable_weights)
    sparse = [g for g in gradients if isinstance(g, tf.IndexedSlices)]
    assert sparse and all(len(np.unique(g.indices)) < len(g.indices) for g in sparse)
    assert float(tf.linalg.global_norm([tf.convert_to_tensor(g) for g in gradients])) > 10 * CLIP_NORM
    weights, _ = references(ADAMW_TASK, "adamw")
    assert distributed_testing.max_change(weights, model) > 1e-3


# Every task trains under SGD with accumulation under 2 replicas: that setup runs every part of
# the step that depends on the task, and as the other two do: the split of the global batch
# over the replicas, the same micro-batches of 2 rows, their token weights, the all-reduce of
# their sum. What only the other two run (1 micro-batch: no slicing; 1 replica: no all-reduce)
# is the same code for every task, so 2 runs check it in every setup: the masked LM under SGD
# (compiled, as the trainer runs it) and the AdamW task (eager).
EVERY_SETUP = [("masked_lm", "sgd"), (ADAMW_TASK, "adamw")]
BOTH = distributed_testing.SETUPS[2]
CASES = [pytest.param(task, optimizer, *setup.values, id=f"{setup.id}-{task}-{optimizer}")
         for setup in distributed_testing.SETUPS for task, optimizer in EVERY_SETUP] + [
    pytest.param(task, "sgd", *BOTH.values, id=f"{BOTH.id}-{task}-sgd")
    for task in sorted(TASKS) if (task, "sgd") not in EVERY_SETUP]


@pytest.mark.parametrize("task, optimizer, strategy_name, grad_accum_steps", CASES)
def test_every_task_trains_like_one_device_and_one_batch(task, optimizer, strategy_name, grad_accum_steps,
                                                         references, request):
    strategy = request.getfixturevalue(strategy_name)
    got = distributed_testing.train(builder(task, optimizer), TASKS[task][1](), strategy, grad_accum_steps)
    distributed_testing.assert_same_training(got, references(task, optimizer))


def worker_share(dataset, context):
    """This worker's rows of every global batch: with n rows a worker, worker i takes rows
    i * n to (i + 1) * n - 1 of each batch of BATCH rows."""
    rows = context.get_per_replica_batch_size(BATCH)
    start = context.input_pipeline_id * rows
    return dataset.map(lambda *batch: tf.nest.map_structure(lambda t: t[start : start + rows], batch))


# Across worker processes, the collectives and Keras's multi-worker path (tfllm/compat.py,
# workaround 4) are the same code for every task: the 2 runs that check every setup above, a
# compiled one (built at trace time) and an eager one (AdamW: its slots, its clip and the
# classifier's sparse rows across the workers). (int8 weights are refused across workers:
# `tfllm.distribute.check_quantize`.)
WORKER_RUNS = EVERY_SETUP


def train_on_workers(path):
    """In a worker process of a 2-worker cluster: each (task, optimizer) of WORKER_RUNS trained
    on this worker's half of each global batch; the weights and losses saved to `path`."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    results = {}
    for task, optimizer in WORKER_RUNS:
        dataset = strategy.distribute_datasets_from_function(lambda context: worker_share(TASKS[task][1](), context))
        weights, loss = distributed_testing.train(builder(task, optimizer), dataset, strategy, 1, STEPS)
        results.update({f"{task}/{optimizer}/{i}": w for i, w in enumerate(weights)})
        results[f"{task}/{optimizer}/loss"] = np.float64(loss)
    np.savez(path, **results)


@pytest.mark.slow
def test_two_worker_processes_train_like_one_device(references, tmp_path):
    paths = [tmp_path / f"worker{index}.npz" for index in range(2)]
    script = WITHOUT_GRAPPLER + (
        "import sys; from tests import test_train_step_weighting as t; t.train_on_workers(sys.argv[1])")
    LocalWorkers(tmp_path, [["-c", script, str(path)] for path in paths]).finish(timeout=400)
    chief, other = (np.load(path) for path in paths)
    for task, optimizer in WORKER_RUNS:
        weights, loss = references(task, optimizer)
        got = [chief[f"{task}/{optimizer}/{i}"] for i in range(len(weights))]
        distributed_testing.assert_same_training((got, float(chief[f"{task}/{optimizer}/loss"])), (weights, loss))
        for i in range(len(weights)):
            np.testing.assert_array_equal(other[f"{task}/{optimizer}/{i}"], got[i])


# bfloat16 keeps 8 significant bits: each activation and gradient of a matmul is rounded by up
# to 2^-9 of its value, and 4 micro-batches of 2 rows round their partial products differently
# than one batch of 8. Weights, the loss and the accumulated gradients stay float32, so the two
# runs may differ by about one bfloat16 ulp (2^-8 relative) of each step's update, two where the
# CPU multiplies bfloat16 natively (AVX512_BF16: oneDNN's fused kernels round inside the dot
# products and keep more intermediate results in bfloat16; 1.3 ulps a step measured on a Zen 5,
# under 1 on AVX2 machines): over 3 steps, at most 3 x 2 x 2^-8 of the largest total weight
# change. A wrong weighting of micro-batches moves the weights by a sizeable part of the update
# itself: an equal mean per micro-batch differs by about 400 x 2^-8.
# The bound holds for the graphs as the product optimises them (`grappler`): unoptimised, more
# intermediate results are rounded to bfloat16 and the difference can pass it.
BF16_STEP_TOLERANCE = 3 * 2 * 2**-8


# float16 keeps 11 significant bits, so the same argument gives 3 x 2^-11; its loss scaling (the
# loss multiplied before the gradients, the gradients divided after) must cancel exactly. LoRA
# adapters (on every projection of a frozen backbone) train the same way, in float32.
@pytest.mark.parametrize("task, policy, step_tolerance", [("masked_lm", "mixed_bfloat16", BF16_STEP_TOLERANCE),
                                                          ("masked_lm", "mixed_float16", 3 * 2**-11),
                                                          ("sft_lora", "mixed_bfloat16", BF16_STEP_TOLERANCE)])
def test_under_mixed_precision_accumulation_follows_one_batch_within_its_rounding(task, policy, step_tolerance,
                                                                                  one_device_strategy, grappler):
    with global_policy(policy):
        one = distributed_testing.train(builder(task, "sgd"), TASKS[task][1](), one_device_strategy, 1)
        four = distributed_testing.train(builder(task, "sgd"), TASKS[task][1](), one_device_strategy, 4)
        model = builder(task, "sgd")(one_device_strategy, 1)
        moved = distributed_testing.max_change(one[0], model)
    assert {weight.dtype for weight in lora.adapter_weights(model)} <= {"float32"}
    difference = max(np.abs(a - b).max() for a, b in zip(one[0], four[0]))
    assert moved > 0.05 and difference <= step_tolerance * moved, (difference, moved)
    assert four[1] == pytest.approx(one[1], rel=2**-8)


def test_under_xla_two_micro_batches_train_like_one_batch(references, one_device_strategy):
    """The masked LM's train step compiled with XLA: the same global-weight normalisation. Two
    micro-batches (8 and 28 weighted tokens) show it as well as four, and XLA compiles the
    unrolled step in two thirds of the time."""
    got = distributed_testing.train(builder("masked_lm", "sgd", jit_compile=True), token_data(masked),
                                    one_device_strategy, 2)
    distributed_testing.assert_same_training(got, references("masked_lm", "sgd"))
