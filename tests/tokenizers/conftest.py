"""Tokenizers trained once per session on a small corpus."""

import pytest
from tests.tokenizers.tokenizer_testing import TRAIN_TEXTS
from tests.tokenizers.tokenizer_testing import VOCAB_SIZES

from tfllm.tokenizers import train_tokenizer


@pytest.fixture(scope="session")
def trained():
    """kind -> tokenizer trained with `train_tokenizer` on TRAIN_TEXTS."""
    return {kind: train_tokenizer(kind, TRAIN_TEXTS, size) for kind, size in VOCAB_SIZES.items()}
