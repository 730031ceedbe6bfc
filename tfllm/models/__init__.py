"""Backbones and task models. Importing this package registers them for `keras.models.load_model`."""

from tfllm.models.causal_lm import CausalLM
from tfllm.models.classifier import Classifier
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.models.masked_lm import MaskedLM
from tfllm.models.seq2seq_backbone import Seq2SeqBackbone
from tfllm.models.seq2seq_lm import Seq2SeqLM

__all__ = ["CausalLM", "Classifier", "GPTBackbone", "MaskedLM", "Seq2SeqBackbone", "Seq2SeqLM"]
