"""Transformer building blocks: embeddings, self- and cross-attention, the blocks of decoders and
encoder-decoders."""

from tfllm.layers.causal_self_attention import CausalSelfAttention
from tfllm.layers.cross_attention import CrossAttention
from tfllm.layers.decoder_block import DecoderBlock
from tfllm.layers.position_embedding import PositionEmbedding
from tfllm.layers.rotary_embedding import RotaryEmbedding
from tfllm.layers.token_embedding import TokenEmbedding
from tfllm.layers.transformer_block import TransformerBlock

__all__ = [
    "CausalSelfAttention",
    "CrossAttention",
    "DecoderBlock",
    "PositionEmbedding",
    "RotaryEmbedding",
    "TokenEmbedding",
    "TransformerBlock",
]
