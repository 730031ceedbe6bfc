"""A tfllm causal LM, BERT-shaped masked LM or BART-shaped seq2seq LM written as a Hugging Face
checkpoint that `transformers` loads."""

import json
import os

import numpy as np
from safetensors.numpy import save_file

from tfllm.data.seq2seq_pipeline import decoder_start_id
from tfllm.errors import UserError
from tfllm.files import staging_directory
from tfllm.huggingface.families import EXPORT_FAMILIES, FAMILIES, to_tensors
from tfllm.huggingface.tokenizer import save_checkpoint_tokenizer
from tfllm.models.seq2seq_backbone import Seq2SeqBackbone
from tfllm.tasks import TASKS


def family_of(backbone):
    """The family whose architecture `backbone` has, or a `UserError` naming what differs."""
    config = backbone.get_config()
    # An encoder-decoder is BART or nothing; BERT's signature would also fit its options.
    seq2seq = isinstance(backbone, Seq2SeqBackbone)
    for name in EXPORT_FAMILIES:
        family = FAMILIES[name]
        if TASKS[family.task].encoder_decoder == seq2seq and all(
                config.get(key) == value for key, value in family.signature.items()):
            return family
    wanted = "; ".join(f"{name}: " + ", ".join(f"{k}={v!r}" for k, v in FAMILIES[name].signature.items())
                       for name in EXPORT_FAMILIES)
    raise UserError(f"this model's architecture is no Hugging Face family tfllm writes ({wanted})")


def save_pretrained(model, directory, tokenizer=None, finish=None):
    """Write `config.json` and `model.safetensors` (float32) of `model`, a `CausalLM` (or a BERT-
    shaped `MaskedLM`, or a BART-shaped `Seq2SeqLM`), and the files of `tokenizer` when given,
    into `directory`, which must not exist; it appears whole or not at all. `finish(staging)`
    is called once the files are in, before the directory appears (a manifest of them)."""
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
            json.dump({**family.hf_config(backbone), "torch_dtype": "float32", **_special_ids(tokenizer, family)}, f,
                      indent=2)
        if tokenizer is not None:
            save_checkpoint_tokenizer(tokenizer, staging)
        if finish is not None:
            finish(staging)
    return family


def _special_ids(tokenizer, family):
    """config.json's end-of-text and start ids, which `generate` reads; an encoder-decoder's
    decoder starts from the id tfllm's starts from, and is made to end with the end-of-text id."""
    if tokenizer is None:
        return {}
    ids = {"eos_token_id": tokenizer.eos_id, "bos_token_id": tokenizer.eos_id if tokenizer.start_id is None
           else tokenizer.start_id}
    if TASKS[family.task].encoder_decoder:
        ids.update(decoder_start_token_id=decoder_start_id(tokenizer), forced_eos_token_id=tokenizer.eos_id)
    return ids
