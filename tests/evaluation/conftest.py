"""A tiny random CausalLM and a character tokenizer for the evaluation tests."""

import keras
import numpy as np
import pytest

from tfllm.models.causal_lm import CausalLM
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.tokenizers import train_tokenizer

TEXT = "the cat sat on the mat, café ünïcode 0123456789"


@pytest.fixture(scope="session")
def char_tokenizer():
    return train_tokenizer("char", [TEXT], vocab_size=40)


@pytest.fixture(scope="session")
def tiny_model(char_tokenizer):
    """Weights drawn with a fixed seed and scaled up, so that losses differ clearly by position."""
    keras.utils.set_random_seed(0)
    model = CausalLM(
        GPTBackbone(
            vocabulary_size=char_tokenizer.vocabulary_size, num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=16,
        )
    )
    rng = np.random.default_rng(0)
    for weight in model.weights:
        if len(weight.shape) == 2:
            scale = 1.0 if "embeddings" in weight.path else 3.0 * weight.shape[0] ** -0.5
            weight.assign(rng.normal(size=weight.shape).astype("float32") * scale)
    return model
