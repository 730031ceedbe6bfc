"""Hugging Face checkpoints (a `config.json` and safetensors weights) as tfllm models.

`load_causal_lm(directory)` builds the `CausalLM` of a checkpoint of a supported family
(`FAMILIES`, keyed by `model_type`) and fills it tensor by tensor; `save_pretrained(model,
directory)` writes a GPT-2- or Llama-shaped tfllm model back as a checkpoint.
"""

from tfllm.huggingface.checkpoint import load_causal_lm, read_config
from tfllm.huggingface.export import family_of, save_pretrained
from tfllm.huggingface.families import FAMILIES

__all__ = ["FAMILIES", "family_of", "load_causal_lm", "read_config", "save_pretrained"]
