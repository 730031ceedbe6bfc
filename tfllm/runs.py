"""The run directory: where a training run keeps everything it needs to be used again.

    RUN_DIR/config.yaml        the resolved config
    RUN_DIR/corpus/            cleaned train/validation shards and their statistics
    RUN_DIR/tokenizer/         the trained tokenizer
    RUN_DIR/labels.json        classify runs: the label of every class id
    RUN_DIR/backbone.json      fine-tuned runs: where the backbone came from and how it attends
    RUN_DIR/checkpoints/       latest/ (last few) and best/ (best validation metric)
    RUN_DIR/logs/              TensorBoard events
    RUN_DIR/metrics.jsonl      one JSON object per logged step
"""

import json
import os

from tfllm import config as config_lib
from tfllm.callbacks.checkpointer import latest_checkpoint, restore_weights
from tfllm.errors import UserError
from tfllm.models.causal_lm import CausalLM
from tfllm.models.classifier import Classifier
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.models.masked_lm import MaskedLM
from tfllm.tokenizers import load_tokenizer

# The model section keys that fix the backbone's weights: a run fine-tuned from another must match.
BACKBONE_KEYS = ("num_layers", "num_heads", "hidden_dim", "intermediate_dim", "position")
# Which pretrained tasks a task may start from (its backbone must attend the same way).
INIT_FROM_TASKS = {
    "causal_lm": ("causal_lm", "sft"),
    "sft": ("causal_lm", "sft"),
    "masked_lm": ("masked_lm",),
    "classify": ("causal_lm", "sft", "masked_lm"),
}


def paths(run_dir):
    """Absolute paths of everything a run directory holds."""
    join = lambda name: os.path.join(run_dir, name)  # noqa: E731
    return {
        "config": join("config.yaml"),
        "corpus": join("corpus"),
        "tokenizer": join("tokenizer"),
        "labels": join("labels.json"),
        "backbone": join("backbone.json"),
        "checkpoints": join("checkpoints"),
        "logs": join("logs"),
        "metrics": join("metrics.jsonl"),
    }


def is_causal(task):
    return task in ("causal_lm", "sft")


def build_backbone(model_config, vocabulary_size, max_seq_len, causal=True):
    """Turn the `model` section of a config into a `GPTBackbone` (explicit arguments only)."""
    return GPTBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=model_config.num_layers,
        num_heads=model_config.num_heads,
        hidden_dim=model_config.hidden_dim,
        intermediate_dim=model_config.intermediate_dim,
        max_sequence_length=max_seq_len,
        dropout=model_config.dropout,
        position=model_config.position,
        causal=causal,
    )


def build_causal_lm(model_config, vocabulary_size, max_seq_len):
    return CausalLM(build_backbone(model_config, vocabulary_size, max_seq_len))


def build_model(config, vocabulary_size, num_classes=None, backbone_causal=None):
    """The task model of `config`. A classifier needs `num_classes` and attends like the
    backbone it was fine-tuned from (`backbone_causal`; causal when trained from scratch)."""
    task, m = config.model.task, config.model
    if task == "classify":
        causal = True if backbone_causal is None else backbone_causal
        backbone = build_backbone(m, vocabulary_size, config.max_seq_len, causal=causal)
        return Classifier(backbone, num_classes=num_classes, dropout=m.dropout)
    backbone = build_backbone(m, vocabulary_size, config.max_seq_len, causal=is_causal(task))
    if task == "masked_lm":
        return MaskedLM(backbone)
    return CausalLM(backbone)


def check_run_dir(run_dir):
    """The config of an existing run dir, or a `UserError` saying what is missing."""
    p = paths(run_dir)
    if os.path.isfile(run_dir):
        raise UserError(f"run dir {run_dir} is a file, not a run dir; pass the --run-dir of a finished `tfllm train`")
    if not os.path.isdir(run_dir):
        raise UserError(f"run dir {run_dir} does not exist; pass the --run-dir of a finished `tfllm train`")
    if not os.path.exists(p["config"]):
        raise UserError(f"{p['config']} is missing; {run_dir} is not a tfllm run dir")
    return config_lib.load_config(p["config"])


def read_backbone_causal(run_dir, config):
    """Whether the backbone of a run attends causally; a classifier inherits it from the run it
    was fine-tuned from, recorded in backbone.json."""
    if config.model.task != "classify":
        return is_causal(config.model.task)
    path = paths(run_dir)["backbone"]
    if not os.path.exists(path):
        return True
    with open(path, encoding="utf-8") as f:
        return bool(json.load(f)["causal"])


def load_run(run_dir, prefer_best=True):
    """Load (config, tokenizer, model with trained weights, checkpoint path) from a run directory."""
    from tfllm.data.labeled import LabelMap

    p = paths(run_dir)
    config = check_run_dir(run_dir)
    checkpoint = latest_checkpoint(p["checkpoints"], prefer_best=prefer_best)
    if checkpoint is None:
        raise UserError(
            f"{run_dir} has no checkpoint under checkpoints/; train it first with "
            f"`tfllm train --run-dir {run_dir}`"
        )
    tokenizer = load_tokenizer(p["tokenizer"])
    num_classes = len(LabelMap.load(p["labels"]).labels) if config.model.task == "classify" else None
    model = build_model(config, tokenizer.vocabulary_size, num_classes, read_backbone_causal(run_dir, config))
    restore_weights(model, checkpoint)
    return config, tokenizer, model, checkpoint
