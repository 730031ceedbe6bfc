"""`tfllm train`: the training program of the config's `model.task`."""

import importlib

# model.task -> the module whose `train(config, run_dir)` trains it.
PROGRAMS = {
    "causal_lm": "trainers.causal_lm",
    "masked_lm": "trainers.masked_lm",
    "classify": "trainers.finetune",
    "sft": "trainers.finetune",
}


def train(config, run_dir):
    """Train `config` into `run_dir`; returns (model, tokenizer)."""
    return importlib.import_module(PROGRAMS[config.model.task]).train(config, run_dir)
