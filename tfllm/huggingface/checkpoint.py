"""A Hugging Face checkpoint directory as a tfllm `CausalLM` with the checkpoint's weights."""

import json
import os

from tfllm.errors import UserError
from tfllm.huggingface.families import COPY, FAMILIES, ROWS, to_variable
from tfllm.huggingface.safetensors_reader import SafetensorsReader
from tfllm.models import CausalLM, GPTBackbone, MaskedLM

TASK_MODELS = {"causal_lm": CausalLM, "masked_lm": MaskedLM}
CHUNK_BYTES = 16 << 20  # tensors larger than this are read in blocks of rows
CHUNK_ROWS = 4096


def read_config(directory):
    """The checkpoint's `config.json` as a dict, and its `Family`."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: give a directory in Hugging Face layout "
                        "(config.json, model.safetensors and the tokenizer files)")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        supported = "; ".join(f"{name} ({family.summary})" for name, family in FAMILIES.items())
        raise UserError(f"{path}: model_type={model_type!r} is not supported; tfllm imports {supported}")
    return config, FAMILIES[model_type]


def load_causal_lm(directory, max_sequence_length=None):
    """The checkpoint in `directory` as a float32 `CausalLM`, its weights read tensor by tensor.
    `max_sequence_length` shortens the context (learned positions keep their first rows)."""
    return load_model(directory, max_sequence_length, task="causal_lm")


def load_model(directory, max_sequence_length=None, task=None):
    """The checkpoint in `directory` as the float32 task model its family holds (`CausalLM`, or
    `MaskedLM` for BERT); `task` names the one the caller needs."""
    config, family = read_config(directory)
    if task not in (None, family.task):
        raise UserError(f"{directory} holds a {family.model_type} checkpoint, a {family.task} model; "
                        f"a {task} model is needed here")
    options = family.backbone_options(config)
    if max_sequence_length:
        options["max_sequence_length"] = min(max_sequence_length, options["max_sequence_length"])
    backbone = GPTBackbone(**options, dtype="float32")
    model = TASK_MODELS[family.task](backbone)
    reader = SafetensorsReader(directory)
    stored = reader.names()

    def stored_name(name):
        return next((prefix + name for prefix in family.prefixes if prefix + name in stored), name)

    assigned = set()
    for names, variable, how in family.layout(model):
        names = [stored_name(name) for name in names]
        if how in (COPY, ROWS) and reader.nbytes(names[0]) > CHUNK_BYTES:
            # An embedding table: read a block of rows at a time into one array, so that importing
            # holds the array and its copy in the variable, not also TensorFlow's tensor of the
            # whole file entry. (Assigning the blocks to slices of the variable would hold less,
            # but turns the variable copy-on-read: every later read of it, each decoding step's,
            # would copy it; generation ran 5x slower.)
            value = reader.rows(names[0], variable.shape[0] if how == ROWS else None, CHUNK_ROWS)
        else:
            value = to_variable([reader(name) for name in names], variable, how)
        if tuple(variable.shape) != value.shape:
            raise UserError(f"{directory}: the tensor for {variable.path} has shape {value.shape}, the "
                            f"model expects {tuple(variable.shape)}: config.json and the weights disagree")
        variable.assign(value)
        assigned.add(id(variable))
    missed = [v.path for v in model.weights if id(v) not in assigned]
    if missed:  # a family that forgets a weight would leave it random
        raise AssertionError(f"{family.model_type}: no checkpoint tensor for {missed}")
    return model
