"""Backbones and task models. Importing this package registers them for `keras.models.load_model`."""

from tfllm.models.causal_lm import CausalLM
from tfllm.models.classifier import Classifier
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.models.masked_lm import MaskedLM

__all__ = ["CausalLM", "Classifier", "GPTBackbone", "MaskedLM"]
