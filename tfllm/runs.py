"""The run directory: where a training run keeps everything it needs to be used again.

    RUN_DIR/config.yaml        the resolved config
    RUN_DIR/corpus/            cleaned train/validation shards and their statistics
    RUN_DIR/tokenizer/         the trained tokenizer
    RUN_DIR/checkpoints/       latest/ (last few) and best/ (lowest validation loss)
    RUN_DIR/logs/              TensorBoard events
    RUN_DIR/metrics.jsonl      one JSON object per logged step
"""

import os

from tfllm import config as config_lib
from tfllm.callbacks.checkpointer import latest_checkpoint, restore_weights
from tfllm.errors import UserError
from tfllm.models.causal_lm import CausalLM
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.tokenizers import load_tokenizer


def paths(run_dir):
    """Absolute paths of everything a run directory holds."""
    join = lambda name: os.path.join(run_dir, name)  # noqa: E731
    return {
        "config": join("config.yaml"),
        "corpus": join("corpus"),
        "tokenizer": join("tokenizer"),
        "checkpoints": join("checkpoints"),
        "logs": join("logs"),
        "metrics": join("metrics.jsonl"),
    }


def build_causal_lm(model_config, vocabulary_size, max_seq_len):
    """Turn the `model` section of a config into a `CausalLM` (explicit arguments only)."""
    backbone = GPTBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=model_config.num_layers,
        num_heads=model_config.num_heads,
        hidden_dim=model_config.hidden_dim,
        intermediate_dim=model_config.intermediate_dim,
        max_sequence_length=max_seq_len,
        dropout=model_config.dropout,
        position=model_config.position,
    )
    return CausalLM(backbone)


def load_run(run_dir, prefer_best=True):
    """Load (config, tokenizer, model with trained weights, checkpoint path) from a run directory."""
    p = paths(run_dir)
    if not os.path.isdir(run_dir):
        raise UserError(f"run dir {run_dir} does not exist; pass the --run-dir of a finished `tfllm train`")
    if not os.path.exists(p["config"]):
        raise UserError(f"{p['config']} is missing; {run_dir} is not a tfllm run dir")
    config = config_lib.load_config(p["config"])
    checkpoint = latest_checkpoint(p["checkpoints"], prefer_best=prefer_best)
    if checkpoint is None:
        raise UserError(
            f"{run_dir} has no checkpoint under checkpoints/; train it first with "
            f"`tfllm train --run-dir {run_dir}`"
        )
    tokenizer = load_tokenizer(p["tokenizer"])
    model = build_causal_lm(config.model, tokenizer.vocabulary_size, config.max_seq_len)
    restore_weights(model, checkpoint)
    return config, tokenizer, model, checkpoint
