"""Tiny training runs shared by the tests: the overrides of the session's trained causal LM run
(the `causal_lm_run` fixture of tests/conftest.py), and a synthetic corpus with the overrides of
runs that take seconds, for tests that assert their own step counts and settings."""

import glob
import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from tfllm import cli
from tfllm.run import Run

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
    "train.warmup_steps=1", "train.learning_rate=1e-5", "train.min_learning_rate=1e-6", "train.samples=0",
    "train.precision=float32",
]


def tiny(corpus, **changes):
    """Overrides for a tiny run; `changes` maps section__key to a value."""
    settings = {
        "data.path": corpus, "data.blank_line_documents": "true", "data.tokenizer": "char",
        "data.vocab_size": 96, "data.val_fraction": 0.2,
        "model.num_layers": 2, "model.num_heads": 2, "model.hidden_dim": 16, "model.intermediate_dim": 32,
        "model.seq_len": 16, "train.batch_size": 8, "train.steps": 10, "train.eval_every": 5,
        "train.eval_batches": 2, "train.log_every": 5, "train.warmup_steps": 2, "train.clip_norm": 0.05,
        "train.samples": 0, "train.peak_flops": PEAK_FLOPS,
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


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def logged_steps(run_dir, tag="train/loss"):
    """The steps of every `tag` event in the run's TensorBoard files, in order, repeats included."""
    steps = []
    for path in sorted(glob.glob(os.path.join(run_dir, "logs", "**", "*.tfevents.*"), recursive=True)):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def checkpoint_tensors(run_dir):
    path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints", "latest"))
    reader = tf.train.load_checkpoint(path)
    names = [name for name in reader.get_variable_to_shape_map() if name.startswith(("model/", "optimizer/"))]
    return path, {name: reader.get_tensor(name) for name in names}


def assert_runs_end_alike(resumed, reference, steps, log_every, context=""):
    """The resumed run ends where the uninterrupted `reference` ends: the same last checkpoint
    (weights and optimizer state), the same metrics records with the same losses before and
    after the resume point, and each logged step once in TensorBoard. `context` goes into a
    failure's message (the kill and resume steps)."""
    reference_path, expected = checkpoint_tensors(reference)
    resumed_path, actual = checkpoint_tensors(resumed)
    assert os.path.basename(reference_path) == os.path.basename(resumed_path) == f"ckpt-{steps}"
    assert expected.keys() == actual.keys() and len(expected) > 10
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-6, rtol=0, err_msg=f"{name} ({context})")
    logged = list(range(log_every, steps + 1, log_every))
    assert sorted(logged_steps(resumed)) == logged_steps(reference) == logged
    before, after = read_metrics(reference), read_metrics(resumed)
    assert [r["step"] for r in after] == [r["step"] for r in before] == logged
    for a, b in zip(after, before):
        for key in ("loss", "val_loss"):
            assert (key in a) == (key in b)
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a, b, context)


def wait_for_step(run_dir, step, processes, timeout=240):
    """Wait until the run has a checkpoint and has logged `step` or a later one; returns False
    if a process ended or time ran out first."""
    metrics = os.path.join(run_dir, "metrics.jsonl")
    latest = os.path.join(run_dir, "checkpoints", "latest")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(process.poll() is None for process in processes):
        if tf.train.latest_checkpoint(latest) and os.path.exists(metrics):
            with open(metrics) as f:
                lines = f.read().split("\n")[:-1]  # the last line may still be being written
            if any(json.loads(line).get("step", 0) >= step for line in lines):
                return True
        time.sleep(0.02)
    return False


# The run of the `seq2seq_run` fixture: an encoder-decoder that learns to reverse a sequence of
# one-letter words ("a c f" -> "f c a") from `reversal_pairs`, with a char tokenizer (each word
# one token, a space between), in seconds.
REVERSAL_WORDS = "abcdefgh"
SEQ2SEQ_CONTEXT = 12
SEQ2SEQ_LABEL_SMOOTHING = 0.1
SEQ2SEQ_RUN = [
    "model.task=seq2seq", "data.tokenizer=char", "data.vocab_size=32", "data.val_fraction=0.1",
    "model.num_layers=2", "model.num_heads=4", "model.hidden_dim=64", "model.intermediate_dim=128",
    f"model.seq_len={SEQ2SEQ_CONTEXT}", f"model.source_len={SEQ2SEQ_CONTEXT}", "train.batch_size=32",
    "train.steps=200", "train.eval_every=100", "train.eval_batches=2", "train.log_every=50", "train.warmup_steps=20",
    "train.learning_rate=3e-3", "train.min_learning_rate=3e-4", "train.samples=0", "train.precision=float32",
    f"train.label_smoothing={SEQ2SEQ_LABEL_SMOOTHING}",
]


def reversal_pairs(count, seed):
    """`count` (source, target) pairs: 2 to 5 one-letter words, and the same words reversed."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        words = list(rng.choice(list(REVERSAL_WORDS), size=rng.integers(2, 6)))
        pairs.append((" ".join(words), " ".join(reversed(words))))
    return pairs


def write_pairs(path, pairs, fields=("source", "target")):
    """`pairs` as JSON Lines with `fields`; returns `path`."""
    with open(path, "w", encoding="utf-8") as f:
        for first, second in pairs:
            f.write(json.dumps({fields[0]: first, fields[1]: second}) + "\n")
    return str(path)


def trained_model(run_dir):
    """The task model of a run, with its best (else latest) checkpoint's weights."""
    model, _ = Run.open(run_dir).load_model()
    return model


def train_from(pretrained, run_dir, data, *overrides):
    """One optimizer step at a learning rate too small to move a weight by 1e-6, from `pretrained`,
    with a config that sets only the task (the pretrained run fixes the shape and tokenizer)."""
    config = os.path.join(os.path.dirname(run_dir), "seq2seq.yaml")
    with open(config, "w") as f:
        f.write("model:\n  task: seq2seq\n")
    assert cli.main(["train", "--config", config, "--run-dir", run_dir, f"data.path={data}",
                     f"train.init_from={pretrained}", "train.steps=1", "train.eval_every=1", "train.eval_batches=1",
                     "train.batch_size=8", "train.warmup_steps=0", "train.learning_rate=1e-9",
                     "train.min_learning_rate=0", "train.samples=0", *overrides]) == 0
    return trained_model(run_dir)
