"""Hugging Face checkpoints (a `config.json` and safetensors weights) as tfllm models.

`load_model(directory)` builds the task model of a checkpoint of a supported family (`FAMILIES`,
keyed by `model_type`: a `CausalLM`, a `MaskedLM` for BERT, a `Seq2SeqLM` for BART) and fills it tensor by tensor;
`load_causal_lm` insists on a causal LM. `save_pretrained(model, directory)` writes a tfllm model
of one of those architectures back as a checkpoint.
"""

from tfllm.huggingface.checkpoint import load_causal_lm, load_model, read_config
from tfllm.huggingface.export import family_of, save_pretrained
from tfllm.huggingface.families import FAMILIES

__all__ = ["FAMILIES", "family_of", "load_causal_lm", "load_model", "read_config", "save_pretrained"]
