"""Transformer building blocks: embeddings, attention, decoder block."""

from tfllm.layers.causal_self_attention import CausalSelfAttention
from tfllm.layers.position_embedding import PositionEmbedding
from tfllm.layers.rotary_embedding import RotaryEmbedding
from tfllm.layers.token_embedding import TokenEmbedding
from tfllm.layers.transformer_block import TransformerBlock

__all__ = [
    "CausalSelfAttention",
    "PositionEmbedding",
    "RotaryEmbedding",
    "TokenEmbedding",
    "TransformerBlock",
]
