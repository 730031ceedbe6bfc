"""CausalLM under mixed precision: mixed_bfloat16 follows the float32 loss curve; a mixed_float16
step whose gradients overflow is skipped instead of writing NaN into the weights.

That N accumulated micro-batches, 2 CPU replicas and both together train like 1 device, with
clipping and weight decay too, is tests/test_train_step_weighting.py's, for every task model.
"""

import keras
import numpy as np

from tests.layer_testing import random_ids
from tfllm.models.causal_lm import CausalLM
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.precision import global_policy

VOCAB, SEQ, BATCH = 32, 8, 8


def make_model(strategy, learning_rate=1e-2):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        backbone = GPTBackbone(
            vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
            max_sequence_length=SEQ,
        )
        model = CausalLM(backbone)
        optimizer = keras.optimizers.AdamW(
            learning_rate, weight_decay=0.1, beta_1=0.9, beta_2=0.95, global_clipnorm=1.0
        )
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        model.compile(optimizer=optimizer, jit_compile=False)
    return model


# bfloat16 keeps 8 significant bits, so each matmul rounds activations by up to 2^-9 relative and
# the errors compound over 50 updates. Weights, logits, softmax and loss stay float32 (mixed
# precision), so the two curves differ by rounding noise: at most 0.002 nats here (loss 3.47 ->
# 1.94). 0.02 nats is one bfloat16 ulp of the loss value itself (2^-8 x 3.5 ~ 0.014) with margin,
# and small against the 1.5 nats the loss falls: a curve that stalls or diverges fails.
BF16_LOSS_TOLERANCE = 0.02


def loss_curve(strategy, policy, steps):
    """Per-step training losses: one optimizer step per `train_on_batch`, which resets the loss
    metric before its step, so nothing is averaged. (A Keras epoch per step gives the same curve
    at the cost of an epoch's setup per step: 2.5 s alone, 46 s in a busy test worker.)"""
    with global_policy(policy):
        model = make_model(strategy, learning_rate=3e-3)
        # A learnable pattern: each block is a run of consecutive ids (mod VOCAB).
        starts = random_ids((steps * BATCH, 1), VOCAB, seed=3)
        tokens = (starts + np.arange(SEQ + 1)) % VOCAB
        losses = []
        for batch in np.split(tokens, steps):
            losses.append(model.train_on_batch(batch[:, :-1], batch[:, 1:], return_dict=True)["loss"])
        assert model.backbone.compute_dtype == ("bfloat16" if policy == "mixed_bfloat16" else "float32")
        assert all(w.dtype == "float32" for w in model.weights)
        assert int(model.optimizer.iterations.numpy()) == steps
    return np.array(losses)


def test_mixed_bfloat16_follows_the_float32_loss_curve(one_device_strategy):
    steps = 50
    float32 = loss_curve(one_device_strategy, "float32", steps)
    bfloat16 = loss_curve(one_device_strategy, "mixed_bfloat16", steps)
    assert float32[-5:].mean() < float32[:5].mean() - 1.0
    np.testing.assert_allclose(bfloat16, float32, atol=BF16_LOSS_TOLERANCE, rtol=0)


def test_mixed_float16_skips_an_overflowing_step_instead_of_writing_nan(one_device_strategy):
    with global_policy("mixed_float16"):
        model = make_model(one_device_strategy)
        # A "sum_over_batch_size" loss is not normalized by the sample weights, so a weight of
        # 1e6 makes that batch's float16 activation gradients (times the loss scale) overflow.
        model.compile(
            optimizer=model.optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        optimizer = model.optimizer
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        tokens = random_ids((BATCH, SEQ + 1), VOCAB)
        x, y = tokens[:, :-1], tokens[:, 1:]
        # Every step with a sample weight, so that all three run one traced function.
        ones = np.ones(y.shape, "float32")
        model.train_on_batch(x, y, sample_weight=ones)
        before = [w.numpy() for w in model.weights]
        scale = float(optimizer.dynamic_scale.numpy())
        assert int(optimizer.iterations.numpy()) == 1

        model.train_on_batch(x, y, sample_weight=np.full(y.shape, 1e6, "float32"))
        for a, w in zip(before, model.weights):
            np.testing.assert_array_equal(w.numpy(), a)  # the step was skipped
        # Keras counts optimizer.iterations on the inner optimizer, only for applied steps.
        assert int(optimizer.iterations.numpy()) == 1
        assert float(optimizer.dynamic_scale.numpy()) == scale / 2

        model.train_on_batch(x, y, sample_weight=ones)
        assert int(optimizer.iterations.numpy()) == 2
        assert all(np.isfinite(w.numpy()).all() for w in model.weights)
        assert max(np.abs(w.numpy() - a).max() for a, w in zip(before, model.weights)) > 1e-4
