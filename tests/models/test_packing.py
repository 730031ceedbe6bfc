"""A document packed into a row with others gives the hidden states it gives alone."""

import numpy as np
import pytest

from tests.layer_testing import random_ids
from tfllm.models.causal_lm import CausalLM
from tfllm.models.gpt_backbone import GPTBackbone

VOCAB, SEQ = 40, 16
LENGTH_A, LENGTH_B = 5, 7


def make_backbone(position, causal):
    return GPTBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=SEQ,
        position=position,
        causal=causal,
    )


def documents():
    doc_a = random_ids((1, LENGTH_A), VOCAB, seed=1, low=4)
    doc_b = random_ids((1, LENGTH_B), VOCAB, seed=2, low=4)
    return doc_a, doc_b


def packed_row(doc_a, doc_b):
    """doc A + doc B + padding, with segment ids [1] * 5 + [2] * 7 + [0] * 4."""
    padding = SEQ - LENGTH_A - LENGTH_B
    return {
        "token_ids": np.concatenate([doc_a, doc_b, np.zeros((1, padding), "int32")], axis=1),
        "padding_mask": np.array([[1] * (LENGTH_A + LENGTH_B) + [0] * padding], "int32"),
        "segment_ids": np.array([[1] * LENGTH_A + [2] * LENGTH_B + [0] * padding], "int32"),
    }


def alone(doc):
    return {"token_ids": doc, "padding_mask": np.ones_like(doc)}


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("position", ["learned", "rope"])
def test_packed_documents_match_documents_alone(position, causal):
    backbone = make_backbone(position, causal)
    doc_a, doc_b = documents()
    row = packed_row(doc_a, doc_b)
    packed = backbone(row).numpy()
    doc_b_alone = backbone(alone(doc_b)).numpy()
    np.testing.assert_allclose(packed[:, :LENGTH_A], backbone(alone(doc_a)).numpy(), atol=1e-5)
    np.testing.assert_allclose(packed[:, LENGTH_A : LENGTH_A + LENGTH_B], doc_b_alone, atol=1e-5)
    # Without segment ids doc B sees doc A (and, with learned positions, starts at 5): the
    # segment ids are what makes the two agree.
    unpacked = backbone({"token_ids": row["token_ids"], "padding_mask": row["padding_mask"]})
    assert np.abs(unpacked.numpy()[:, LENGTH_A : LENGTH_A + LENGTH_B] - doc_b_alone).max() > 1e-3


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_causal_lm_logits_of_packed_documents_match_documents_alone(position):
    model = CausalLM(make_backbone(position, causal=True))
    doc_a, doc_b = documents()
    packed = model(packed_row(doc_a, doc_b)).numpy()
    assert packed.dtype == np.float32 and packed.shape == (1, SEQ, VOCAB)
    np.testing.assert_allclose(packed[:, :LENGTH_A], model(doc_a).numpy(), atol=1e-5)
    np.testing.assert_allclose(
        packed[:, LENGTH_A : LENGTH_A + LENGTH_B], model(doc_b).numpy(), atol=1e-5
    )
