"""`tfllm train`: the training program of the config's `model.task`."""

import importlib

# model.task -> the module whose `train(config, run_dir)` trains it.
PROGRAMS = {
    "causal_lm": "tfllm.trainers.causal_lm",
    "masked_lm": "tfllm.trainers.masked_lm",
    "classify": "tfllm.trainers.finetune",
    "sft": "tfllm.trainers.finetune",
}


def train(config, run_dir):
    """Train `config` into `run_dir`; returns (model, tokenizer)."""
    return importlib.import_module(PROGRAMS[config.model.task]).train(config, run_dir)
