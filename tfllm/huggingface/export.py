"""A tfllm causal LM written as a Hugging Face checkpoint that `transformers` loads."""

import json
import os

import numpy as np
from safetensors.numpy import save_file

from tfllm.errors import UserError
from tfllm.files import staging_directory
from tfllm.huggingface.families import EXPORT_FAMILIES, FAMILIES, to_tensors


def family_of(backbone):
    """The family whose architecture `backbone` has, or a `UserError` naming what differs."""
    config = backbone.get_config()
    for name in EXPORT_FAMILIES:
        if all(config[key] == value for key, value in FAMILIES[name].signature.items()):
            return FAMILIES[name]
    wanted = "; ".join(f"{name}: " + ", ".join(f"{k}={v!r}" for k, v in FAMILIES[name].signature.items())
                       for name in EXPORT_FAMILIES)
    raise UserError(f"this model's architecture is no Hugging Face family tfllm writes ({wanted})")


def save_pretrained(model, directory):
    """Write `config.json` and `model.safetensors` (float32) of `model`, a `CausalLM` (or a BERT-
    shaped `MaskedLM`), into `directory`, which must not exist; it appears whole or not at all."""
    backbone = model.backbone
    family = family_of(backbone)
    tensors = {}
    for names, variable, how in family.layout(model):
        value = np.asarray(variable.numpy(), np.float32)
        for name, array in zip(names, to_tensors(value, names, how, backbone)):
            tensors[name] = np.ascontiguousarray(array)
    if os.path.exists(directory):
        raise UserError(f"{directory} already exists: give a new directory")
    os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
    with staging_directory(directory) as staging:
        save_file(tensors, os.path.join(staging, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(staging, "config.json"), "w") as f:
            json.dump({**family.hf_config(backbone), "torch_dtype": "float32"}, f, indent=2)
    return family
