"""Tiny training runs shared by the tests: the overrides of the session's trained causal LM run
(the `causal_lm_run` fixture of tests/conftest.py), and a synthetic corpus with the overrides of
runs that take seconds, for tests that assert their own step counts and settings."""

import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = ("the a model learns to predict next token from text data every step weight gradient batch "
         "replica worker chief shard").split()
PEAK_FLOPS = 1e9

# The run of the `causal_lm_run` fixture: a char model with a 32-token context on the built-in
# corpus, trained a few steps at a tiny learning rate. Its greedy continuations stay varied (a
# model trained longer on this corpus only writes spaces), and the run takes seconds. Blank lines
# split the files it evaluates into documents, so an empty file holds none.
CAUSAL_LM_CONTEXT = 32
CAUSAL_LM_STEPS = 4
CAUSAL_LM_RUN = [
    "data.tokenizer=char", "data.vocab_size=64", "data.blank_line_documents=true",
    "model.num_layers=2", "model.num_heads=2", "model.hidden_dim=16", "model.intermediate_dim=32",
    f"model.seq_len={CAUSAL_LM_CONTEXT}", "train.batch_size=8", f"train.steps={CAUSAL_LM_STEPS}",
    f"train.eval_every={CAUSAL_LM_STEPS}", "train.eval_batches=1", "train.log_every=2",
    "train.warmup_steps=1", "train.learning_rate=1e-5", "train.min_learning_rate=1e-6", "train.samples=1",
    "train.sample_tokens=4", "train.precision=float32",
]


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
