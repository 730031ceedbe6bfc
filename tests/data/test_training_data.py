"""A run's distributed datasets: balanced class weights reach the batches `fit` trains on."""

import keras
import numpy as np
import pytest

from tfllm import config as config_lib
from tfllm.data.example import Example
from tfllm.data.labeled import LabelMap, balanced_class_weights
from tfllm.data.training_data import Examples, classify_data
from tfllm.tasks import build_model
from tfllm.tokenizers import train_tokenizer

# 12 examples of "a", 4 of "b": balanced weights are 16 / (2 x 12) and 16 / (2 x 4).
LABELS = ["a"] * 12 + ["b"] * 4


def examples():
    rows = [Example(f"text {i} {label * 3}", label, f"train.jsonl:{i + 1}") for i, label in enumerate(LABELS)]
    return Examples(rows, rows[:8], LabelMap.from_labels(LABELS))


def first_batch(class_weights, one_device_strategy):
    config = config_lib.load_config(None, ["model.task=classify", "model.seq_len=8", "train.batch_size=16",
                                           f"train.class_weights={class_weights}", "train.precision=float32"])
    tokenizer = train_tokenizer("char", [text for text, _ in examples().train], 64)
    data = classify_data(config, examples(), tokenizer, one_device_strategy, pooling="first")
    return config, tokenizer, next(iter(data.train_at(0)))


def bias_step(config, tokenizer, batch):
    """The classifier's output bias after one SGD step on `batch`, from the same start."""
    keras.utils.set_random_seed(0)
    model = build_model(config.replace({"model.num_layers": 1, "model.hidden_dim": 8, "model.num_heads": 2,
                                        "model.intermediate_dim": 16}), tokenizer.vocabulary_size, False, 2)
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    before = model.output_dense.bias.numpy().copy()
    model.train_on_batch(*batch)
    return model.output_dense.bias.numpy() - before


def test_balanced_class_weights_reach_the_batches_and_move_training_towards_the_rare_class(one_device_strategy):
    config, tokenizer, (x, y, weight) = first_batch("balanced", one_device_strategy)
    formula = balanced_class_weights([LabelMap.from_labels(LABELS).labels.index(label) for label in LABELS], 2)
    np.testing.assert_allclose(weight.numpy(), [formula[int(label)] for label in y.numpy()], rtol=1e-6)
    assert formula == pytest.approx({0: 16 / 24, 1: 16 / 8})
    _, _, unweighted = first_batch("none", one_device_strategy)
    assert len(unweighted) == 2  # (x, y): no weights without train.class_weights
    balanced_step, plain_step = bias_step(config, tokenizer, (x, y, weight)), bias_step(config, tokenizer, unweighted)
    # The gradient of the bias is mean(p - onehot): weighting the rare class "b" (id 1) up
    # raises its logit's bias more, and the common class's less, than the unweighted step does.
    assert balanced_step[1] > plain_step[1] + 0.05 and balanced_step[0] < plain_step[0] - 0.05
