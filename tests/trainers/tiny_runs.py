"""Tiny training runs shared by the trainer tests: a synthetic corpus and the overrides of a run
that takes seconds."""

import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = ("the a model learns to predict next token from text data every step weight gradient batch "
         "replica worker chief shard").split()
PEAK_FLOPS = 1e9


def tiny(corpus, **changes):
    """Overrides for a tiny run; `changes` maps section__key to a value."""
    settings = {
        "data.path": corpus, "data.blank_line_documents": "true", "data.tokenizer": "char",
        "data.vocab_size": 96, "data.val_fraction": 0.2,
        "model.num_layers": 2, "model.num_heads": 2, "model.hidden_dim": 16, "model.intermediate_dim": 32,
        "model.seq_len": 16, "train.batch_size": 8, "train.steps": 10, "train.eval_every": 5,
        "train.eval_batches": 2, "train.log_every": 5, "train.warmup_steps": 2, "train.clip_norm": 0.05,
        "train.samples": 1, "train.sample_tokens": 4, "train.peak_flops": PEAK_FLOPS,
        "train.precision": "float32",
    }
    settings.update({key.replace("__", "."): value for key, value in changes.items()})
    return [f"{key}={value}" for key, value in settings.items()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    documents = [" ".join(rng.choice(WORDS, rng.integers(8, 30))).capitalize() + "." for _ in range(300)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(documents) + "\n")
    return str(path)
