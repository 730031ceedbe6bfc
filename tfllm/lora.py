"""Fine-tuning a pretrained model through low-rank adapters (LoRA), over float or int8 weights.

`adapt(part, ...)` freezes every weight of `part` (the pretrained backbone of a task model),
optionally stores its projections and embeddings in int8 (`quantize="int8"`, the QLoRA idea),
and adds adapters to the projections named in `targets`; whatever else the model has (a new
classification head, a seq2seq decoder started fresh) trains in full. `merge_adapters` folds
the adapters into the weights for export.

Example:
```python
model = build_model(config, vocabulary_size, causal=True)   # weights loaded from a base run
with strategy.scope():                                      # adapters are variables too
    adapt(model.backbone, rank=8, alpha=16, targets=("query", "value"))
trainable, frozen = parameter_counts(model)
```
"""

import json
import math
import os

import numpy as np
from safetensors.numpy import load_file, save_file

from tfllm.config import LORA_TARGETS as TARGETS
from tfllm.config import QUANTIZATIONS, names
from tfllm.files import write_atomically
from tfllm.layers.lora import AdaptableDense
from tfllm.layers.token_embedding import TokenEmbedding

# TARGETS: the attention's query, key, value and output projections, the MLP's matrices and the
# token embedding. LoRA's paper, PEFT and litgpt adapt the query and value projections by default.
DEFAULT_TARGETS = ("query", "value")


def adaptable_layers(model):
    """The layers of `model` that can take adapters and hold int8 weights."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, (AdaptableDense, TokenEmbedding))]


def adapt(part, rank, alpha, targets=DEFAULT_TARGETS, dropout=0.0, quantize="none"):
    """Freeze every weight of `part`, hold its matrices in int8 when `quantize="int8"`, and add an
    adapter of `rank` to each projection named in `targets`; returns how many it added.
    Call it inside the strategy scope that trains the model: adapters are new variables."""
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or quantize not in QUANTIZATIONS:
        raise ValueError(f"targets must be among {TARGETS} and quantize one of {QUANTIZATIONS}. "
                         f"Received: targets={targets}, quantize={quantize!r}")
    for weight in part.weights:
        weight.trainable = False
    layers = adaptable_layers(part)
    if quantize == "int8":
        for layer in layers:
            layer.quantize_int8()
    return sum(layer.add_adapters(tuple(targets), rank, alpha, dropout) for layer in layers)


def adapt_as_configured(part, train_config):
    """`adapt` with the `train.lora_*` and `train.quantize` keys of a config; nothing when
    `train.lora_rank` is 0."""
    t = train_config
    if not t.lora_rank:
        return 0
    return adapt(part, t.lora_rank, t.lora_alpha, names(t.lora_targets), t.lora_dropout, t.quantize)


def has_adapters(model):
    return any(_adapters_of(layer) for layer in adaptable_layers(model))


def adapter_weights(model):
    """The adapters' variables, layer by layer."""
    return [weight for layer in adaptable_layers(model) for adapter in _adapters_of(layer)
            for weight in adapter.weights]


def _adapters_of(layer):
    if isinstance(layer, TokenEmbedding):
        return (layer.adapter,) if layer.adapter is not None else ()
    return layer.adapters


def merge_adapters(model):
    """Fold every adapter into the float weights it updates; the model computes what it did."""
    for layer in adaptable_layers(model):
        layer.merge_adapters()
    return model


def quantize_int8(model):
    """Hold every projection and embedding matrix of `model` in int8 (for a smaller export)."""
    for layer in adaptable_layers(model):
        layer.quantize_int8()
    return model


def checkpointed_weights(model):
    """The weights a training checkpoint of `model` holds: all of them, or, once adapters are
    on, only what trains (adapters and new parts); the frozen rest is the base run's."""
    return model.trainable_weights if has_adapters(model) else model.weights


def parameter_counts(model):
    """`(trainable, frozen)` numbers of parameters."""
    trainable = count_parameters(model.trainable_weights)
    return trainable, count_parameters(model.weights) - trainable


def count_parameters(weights):
    return sum(math.prod(weight.shape) for weight in weights)


ADAPTERS_FILE = "adapters.safetensors"
ADAPTERS_INFO = "adapters.json"


def save_adapters(model, directory, info):
    """Write what trains in `model` (`checkpointed_weights`: adapters, and a new head) into
    `directory/adapters.safetensors`, keyed `NNNNN/weight path` in the checkpoint's order, and
    `info` (the base it adapts, the LoRA settings) into `directory/adapters.json`."""
    weights = checkpointed_weights(model)
    tensors = {f"{i:05d}/{weight.path}": np.ascontiguousarray(weight.numpy()) for i, weight in enumerate(weights)}
    save_file(tensors, os.path.join(directory, ADAPTERS_FILE))
    write_atomically(os.path.join(directory, ADAPTERS_INFO), json.dumps(info, indent=2))


def load_adapters(model, directory):
    """Load `save_adapters`' tensors into `model`, adapted alike over its base; a `ValueError`
    when their number or shapes differ."""
    tensors = load_file(os.path.join(directory, ADAPTERS_FILE))
    weights = checkpointed_weights(model)
    if len(tensors) != len(weights):
        raise ValueError(f"{directory} holds {len(tensors)} adapter tensors; this model trains {len(weights)}")
    for key, weight in zip(sorted(tensors), weights):
        if tuple(tensors[key].shape) != tuple(weight.shape):
            raise ValueError(f"{directory}: {key} has shape {tensors[key].shape}, {weight.path} needs {weight.shape}")
        weight.assign(tensors[key])
    return model
