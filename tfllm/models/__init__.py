"""Backbones and task models. Importing this package registers them for `keras.models.load_model`."""

from tfllm.models.causal_lm import CausalLM
from tfllm.models.gpt_backbone import GPTBackbone

__all__ = ["CausalLM", "GPTBackbone"]
