"""LoRA on a task model: what trains, what a checkpoint holds, and how large it is."""

import os

import keras
import numpy as np

from tests.layer_testing import random_ids
from tfllm import lora
from tfllm.callbacks.checkpointer import training_checkpoint
from tfllm.config import load_config
from tfllm.models import Classifier, GPTBackbone
from tfllm.optimizers import adamw
from tfllm.tasks import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_step_changes_only_the_adapters_and_the_new_head():
    keras.utils.set_random_seed(0)
    model = Classifier(GPTBackbone(vocabulary_size=20, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                                   max_sequence_length=6, causal=False), num_classes=3)
    ids = random_ids((4, 6), 20)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    model(x)
    added = lora.adapt(model.backbone, rank=2, alpha=4, targets=("query", "value", "mlp", "embedding"))
    assert added == 2 * 4 + 1
    # Weight decay acts on every weight the optimizer sees: the frozen ones must not be among them.
    # Eagerly: the same `train_step` and optimizer updates without tracing them (a fifth of the time).
    model.compile(optimizer=adamw(1e-2, 0.1, 0.9, 0.99), loss="auto", run_eagerly=True)
    before = {id(w): w.numpy() for w in model.weights}
    model.fit(x, np.array([0, 1, 2, 0]), epochs=2, verbose=0)
    adapters = {id(w) for w in lora.adapter_weights(model)}
    head = {id(w) for w in model.output_dense.weights}
    trainable = {id(w) for w in model.trainable_weights}
    assert trainable == adapters | head
    for weight in model.weights:
        changed = not np.array_equal(before[id(weight)], weight.numpy())
        assert changed == (id(weight) in trainable), weight.path
    trained, frozen = lora.parameter_counts(model)
    assert trained == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trained + frozen == model.count_params()


def checkpoint_size(model, directory):
    model.optimizer.build(model.trainable_variables)
    path = training_checkpoint(model).write(os.path.join(directory, "ckpt"))
    return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)
               if name.startswith(os.path.basename(path)))


def test_a_rank_8_checkpoint_of_gpt_tiny_is_at_most_5_percent_of_a_full_one(tmp_path):
    config = load_config(os.path.join(REPO, "configs", "gpt-tiny.yaml"))
    sizes = {}
    for rank in (0, 8):
        keras.utils.set_random_seed(0)
        model = build_model(config, config.data.vocab_size, causal=True)
        if rank:
            lora.adapt(model.backbone, rank=rank, alpha=16)
        model.compile(optimizer=adamw(1e-3, 0.1, 0.9, 0.99, 1.0), loss="auto")
        directory = tmp_path / f"rank{rank}"
        directory.mkdir()
        sizes[rank] = checkpoint_size(model, str(directory))
    assert 0 < sizes[8] <= 0.05 * sizes[0], sizes
