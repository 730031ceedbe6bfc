"""A Hugging Face checkpoint directory as a tfllm task model with the checkpoint's weights."""

import functools
import json
import os

import keras
import tensorflow as tf
from keras.src.backend.common import global_state

from tfllm.errors import UserError
from tfllm.huggingface.families import COPIES, COPY, FAMILIES, ROWS, to_variable
from tfllm.huggingface.safetensors_reader import SINGLE_FILE, SafetensorsReader
from tfllm.models import CausalLM, GPTBackbone, MaskedLM
from tfllm.models.seq2seq_backbone import Seq2SeqBackbone
from tfllm.models.seq2seq_lm import Seq2SeqLM

# A family's task: (backbone class, task model class).
TASK_MODELS = {"causal_lm": (GPTBackbone, CausalLM), "masked_lm": (GPTBackbone, MaskedLM),
               "seq2seq": (Seq2SeqBackbone, Seq2SeqLM)}
# The backbone options that `max_sequence_length` shortens (a seq2seq backbone's source too).
CONTEXT_OPTIONS = ("max_sequence_length", "max_source_length")
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
    """The checkpoint in `directory` as the float32 task model its family holds (`CausalLM`,
    `MaskedLM` for BERT, `Seq2SeqLM` for BART); `task` names the one the caller needs."""
    config, family = read_config(directory)
    if task not in (None, family.task):
        raise UserError(f"{directory} holds a {family.model_type} checkpoint, a {family.task} model; "
                        f"a {task} model is needed here")
    options = family.backbone_options(config)
    for key in CONTEXT_OPTIONS:
        if max_sequence_length and key in options:
            options[key] = min(max_sequence_length, options[key])
    reader = SafetensorsReader(directory)
    stored = reader.names()

    def stored_name(name):
        return next((alias for alias in family.aliases(name) if alias in stored), name)

    def has(name):
        return stored_name(name) in stored

    options.update(family.stored_options(has))
    unsupported = family.unsupported_tensor(config, has, lambda name: reader(stored_name(name)))
    if unsupported:
        name, why = unsupported
        filename = SINGLE_FILE if reader.files is None else reader.files[stored_name(name)]
        raise UserError(f"{os.path.join(directory, filename)}: tensor {stored_name(name)!r} {why}")
    backbone_class, task_class = TASK_MODELS[family.task]
    # Built without values (Keras's deferred initialization), then each variable is created from
    # its checkpoint tensor, read as the variable is made: importing never holds a random model
    # beside the checkpoint's tensors (peak about 1.15x the model's size; 2.2x otherwise).
    with keras.StatelessScope(initialize_variables=False):
        model = task_class(backbone_class(**options, dtype="float32"))

    def read(names, variable, how):
        if how == COPIES:  # equal tables (the family's `unsupported_tensor` says so): the first one
            names, how = names[:1], COPY
        if how in (COPY, ROWS) and reader.nbytes(names[0]) > CHUNK_BYTES:
            # An embedding table, read a block of rows at a time: never the whole file entry too.
            value = reader.rows(names[0], variable.shape[0] if how == ROWS else None, CHUNK_ROWS)
        else:
            value = to_variable([reader(name) for name in names], variable, how)
        if tuple(variable.shape) != tuple(value.shape):
            raise UserError(f"{directory}: the tensor for {variable.path} has shape {tuple(value.shape)}, the "
                            f"model expects {tuple(variable.shape)}: config.json and the weights disagree")
        # A tensor, not NumPy: a variable takes over a tensor's buffer but copies an array's.
        return tf.convert_to_tensor(value)

    readers = {id(variable): functools.partial(read, [stored_name(name) for name in names], variable, how)
               for names, variable, how in family.layout(model)}
    missed = [v.path for v in model.weights if id(v) not in readers]
    if missed:  # a family that forgets a weight would leave it random
        raise AssertionError(f"{family.model_type}: no checkpoint tensor for {missed}")
    create_variables(model.weights, lambda variable: readers[id(variable)]())
    return model


def create_variables(variables, value_of):
    """Create each of `variables`, built uninitialized in a `keras.StatelessScope`, from
    `value_of(variable)`, one at a time; none is left waiting for Keras to initialize it, even
    when `value_of` raises."""
    try:
        for variable in variables:
            # Keras's deferred initialization, given the value instead of the layer's initializer.
            variable._initializer = lambda shape, dtype, variable=variable: value_of(variable)
            variable._deferred_initialize()
    finally:
        made = {id(variable) for variable in variables}
        waiting = global_state.get_global_attribute("uninitialized_variables", [])
        global_state.set_global_attribute("uninitialized_variables", [v for v in waiting if id(v) not in made])
